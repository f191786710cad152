"""External programs a route runs (cloudflared; frpc next): found, or downloaded and verified.

One mechanism for every such binary, like a careful package manager:

- the release and the sha256 of each asset are pinned in this package (a `BinarySpec` in the
  route's module), never fetched beside the binary;
- a copy already on PATH is used only when it reports at least the pinned version;
- otherwise the asset is downloaded once into a per-user cache, hashed while it streams, and
  moved into place only when the digest matches: a mismatch leaves nothing cached and nothing
  executed. A cached copy is hashed again each time it is resolved, before it runs;
- a base URL override serves mirrors and air-gapped sites (same layout as the release:
  ``BASE/VERSION/ASSET``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import platform
import re
import shutil
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .errors import BinaryError

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_VERSION_RE = re.compile(r"\b(\d+(?:\.\d+){1,3})\b")

# Called with (bytes so far, total bytes or None) while a download runs.
Progress = Callable[[int, "int | None"], None]


@dataclass(frozen=True)
class Asset:
    filename: str  # the release asset's name
    sha256: str  # of the asset as published (a raw binary: the binary itself)
    # In an archive (.tar.gz, .zip): the program's path inside it. The archive is what is
    # pinned and cached; the program is taken out of the verified archive each time.
    member: str | None = None


@dataclass(frozen=True)
class BinarySpec:
    name: str  # program name, e.g. "cloudflared"
    version: str  # the pinned release
    base_url: str  # the release's download root; the asset is BASE/VERSION/FILENAME
    assets: Mapping[str, Asset]  # platform key ("linux-amd64") -> asset
    url_env: str  # environment variable that overrides base_url (mirrors)
    config_hint: str  # the config section naming `binary` and `download_url`, for errors
    tag_prefix: str = ""  # the release's tag is this + version ("v0.71.0")


@dataclass(frozen=True)
class Resolved:
    path: Path
    version: str
    source: str  # "explicit" | "PATH" | "cache" | "download"


def platform_key(system: str | None = None, machine: str | None = None) -> str:
    """``linux-amd64``, ``linux-arm64``, ``darwin-arm64``... in the release's naming."""
    system = (system or platform.system()).lower()
    machine = (machine or platform.machine()).lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        machine, machine
    )
    return f"{system}-{arch}"


def parse_version(text: str) -> tuple[int, ...] | None:
    m = _VERSION_RE.search(text)
    return tuple(int(p) for p in m.group(1).split(".")) if m else None


def cache_root() -> Path:
    env = os.environ.get("HANDY_COLAB_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "handy-colab"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def reported_version(path: Path | str) -> str | None:
    """What ``PROGRAM --version`` says its version is (None when it cannot tell)."""
    try:
        out = subprocess.run(
            [str(path), "--version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    found = parse_version(out.stdout + out.stderr)
    return ".".join(map(str, found)) if found else None


class Installer:
    """Finds or fetches one pinned binary."""

    def __init__(
        self,
        spec: BinarySpec,
        *,
        explicit: str | None = None,
        base_url: str | None = None,
        cache: Path | None = None,
        system: str | None = None,
        machine: str | None = None,
    ) -> None:
        self.spec = spec
        self.explicit = explicit
        self.base_url = (base_url or os.environ.get(spec.url_env) or spec.base_url).rstrip("/")
        self.cache = cache or cache_root()
        self.plat = platform_key(system, machine)

    # -- where it comes from ------------------------------------------------------------------
    def resolve(self, progress: Progress | None = None) -> Resolved:
        """The binary to run; downloads (and verifies) it when nothing suitable is here."""
        if self.explicit:
            return self._explicit()
        found = self._from_path()
        if found is not None:
            return found
        asset = self._asset()
        target = self._cached_path(asset)
        fetched = target.parent / asset.filename if asset.member else target
        source = "cache"
        if not (fetched.exists() and self._digest_ok(fetched, asset)):
            self._download(asset, fetched, progress)
            source = "download"
        if asset.member:
            self._extract(fetched, asset.member, target)
        return Resolved(target, self.spec.version, source)

    def _explicit(self) -> Resolved:
        path = Path(self.explicit or "").expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise BinaryError(
                f"{path}: not an executable file. Fix: point '{self.spec.config_hint}.binary' "
                f"at {self.spec.name} {self.spec.version} or newer, or leave it out to use the "
                f"pinned download"
            )
        version = reported_version(path) or "unknown"
        # The user named this file: it runs as given; an old one is only worth a warning.
        got = parse_version(version)
        if got is None or got < self._pinned():
            log.warning(
                "%s reports version %s, older than the pinned %s",
                path,
                version,
                self.spec.version,
            )
        return Resolved(path, version, "explicit")

    def _pinned(self) -> tuple[int, ...]:
        pinned = parse_version(self.spec.version)
        assert pinned is not None
        return pinned

    def _from_path(self) -> Resolved | None:
        found = shutil.which(self.spec.name)
        if found is None:
            return None
        version = reported_version(found)
        got = parse_version(version or "")
        if got is None or got < self._pinned():
            log.info(
                "%s on PATH reports %s, older than the pinned %s: not used",
                found,
                version or "no version",
                self.spec.version,
            )
            return None
        return Resolved(Path(found), version or "", "PATH")

    def _asset(self) -> Asset:
        asset = self.spec.assets.get(self.plat)
        if asset is None:
            have = ", ".join(sorted(self.spec.assets))
            raise BinaryError(
                f"no pinned {self.spec.name} {self.spec.version} build for {self.plat} "
                f"(handy-colab ships digests for {have}). Fix: install {self.spec.name} "
                f"{self.spec.version} or newer on PATH, or set '{self.spec.config_hint}.binary' "
                f"to its path"
            )
        return asset

    def url(self, asset: Asset) -> str:
        return f"{self.base_url}/{self.spec.tag_prefix}{self.spec.version}/{asset.filename}"

    def _cached_path(self, asset: Asset) -> Path:
        name = Path(asset.member).name if asset.member else self.spec.name
        return self.cache / "bin" / f"{self.spec.name}-{self.spec.version}-{self.plat}" / name

    def _digest_ok(self, path: Path, asset: Asset) -> bool:
        try:
            got = sha256_file(path)
        except OSError as exc:
            log.warning("cannot read cached %s (%s); fetching it again", path, exc.strerror)
            return False
        if got == asset.sha256:
            return True
        # A cached file that no longer matches is not run; it is replaced by a verified one.
        log.warning("cached %s does not match its pinned digest; fetching it again", path)
        with contextlib.suppress(OSError):
            path.unlink()
        return False

    # -- download -----------------------------------------------------------------------------
    def _download(self, asset: Asset, target: Path, progress: Progress | None) -> None:
        try:
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise BinaryError(
                f"{target.parent}: cannot create the download cache ({exc.strerror}). Fix: set "
                f"HANDY_COLAB_CACHE_DIR to a writable folder"
            ) from None
        with _locked(target.parent / ".lock"):
            # Another process may have finished the same download while we waited.
            if target.exists() and self._digest_ok(target, asset):
                return
            url = self.url(asset)
            log.info("downloading %s", url)
            fd, tmp = tempfile.mkstemp(prefix=".download-", dir=target.parent)
            try:
                os.fchmod(fd, 0o600)  # not executable until verified
                with os.fdopen(fd, "wb") as out:
                    got = self._fetch(url, out, progress)
                if got != asset.sha256:
                    raise BinaryError(
                        f"{url}: sha256 {got} does not match the digest pinned in handy-colab "
                        f"for {self.spec.name} {self.spec.version} ({asset.sha256}); not "
                        f"executed, not cached. Fix: the file was altered or is another "
                        f"release: check the mirror, or use the official download"
                    )
                os.chmod(tmp, 0o644 if asset.member else 0o755)
                os.replace(tmp, target)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)

    def _extract(self, archive: Path, member: str, target: Path) -> None:
        """Write the program ``member`` of the (verified) ``archive`` to ``target``, unless it
        is already there byte for byte."""
        try:
            data = _read_member(archive, member)
        except (OSError, KeyError, ValueError, tarfile.TarError, zipfile.BadZipFile) as exc:
            raise BinaryError(
                f"{archive}: cannot take {member} out of the release archive ({exc}). Fix: "
                f"delete {archive.parent} and run again"
            ) from None
        with contextlib.suppress(OSError):
            if sha256_file(target) == hashlib.sha256(data).hexdigest():
                return
        fd, tmp = tempfile.mkstemp(prefix=".extract-", dir=target.parent)
        try:
            os.fchmod(fd, 0o755)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _fetch(self, url: str, out: IO[bytes], progress: Progress | None) -> str:
        """Stream ``url`` into ``out``; return the sha256 of what came."""
        h = hashlib.sha256()
        fix = (
            f"Fix: check the runtime's network, set '{self.spec.config_hint}.download_url' (or "
            f"{self.spec.url_env}) to a mirror, or put {self.spec.name} {self.spec.version} or "
            f"newer on PATH"
        )
        try:
            # urllib honours the usual https_proxy/no_proxy variables.
            with urllib.request.urlopen(url, timeout=30) as resp:
                size = resp.headers.get("Content-Length")
                total = int(size) if size and size.isdigit() else None
                done = 0
                while True:
                    chunk = resp.read(_CHUNK)
                    if not chunk:
                        break
                    h.update(chunk)
                    out.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
        except urllib.error.HTTPError as exc:
            raise BinaryError(
                f"cannot download {self.spec.name} {self.spec.version} from {url} "
                f"(HTTP {exc.code} {exc.reason}). {fix}"
            ) from None
        except urllib.error.URLError as exc:
            reason = getattr(exc.reason, "strerror", None) or exc.reason
            raise BinaryError(
                f"cannot download {self.spec.name} {self.spec.version} from {url} ({reason}). {fix}"
            ) from None
        except (OSError, ValueError) as exc:
            raise BinaryError(
                f"cannot download {self.spec.name} {self.spec.version} from {url} ({exc}). {fix}"
            ) from None
        return h.hexdigest()


_MAX_MEMBER = 256 << 20


def _read_member(archive: Path, member: str) -> bytes:
    """One regular file out of a .tar.gz or .zip, read into memory (bounded): nothing else of
    the archive touches the disk, so no path in it can point anywhere."""
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            info = zf.getinfo(member)
            if info.is_dir() or info.file_size > _MAX_MEMBER:
                raise ValueError(f"{member} is not a program file")
            return zf.read(info)
    with tarfile.open(archive, "r:gz") as tf:
        entry = tf.getmember(member)
        if not entry.isfile() or entry.size > _MAX_MEMBER:
            raise ValueError(f"{member} is not a regular file")
        fh = tf.extractfile(entry)
        assert fh is not None
        return fh.read()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
