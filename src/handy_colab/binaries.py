"""External programs a route runs (cloudflared; frpc next): found, or downloaded and verified.

One mechanism for every such binary, like a careful package manager:

- the release and the sha256 of each asset are pinned in this package (a `BinarySpec` in the
  route's module), never fetched beside the binary;
- a copy on PATH is used only when the user names it (``binary: "PATH"`` or the program's
  name, in the config or the spec's environment variable): an unverified program is never
  picked up by accident;
- otherwise the asset is downloaded once into a per-user cache that only this uid can write
  (binary_cache.py), hashed from the bytes written, and sealed read-only in place only when
  the digest matches: a mismatch leaves nothing cached and nothing executed. The file that
  runs is hashed again when it is resolved and before each start (``Resolved.check``);
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
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from . import binary_cache
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
    bin_env: str = ""  # environment variable standing in for the config's `binary`


@dataclass(frozen=True)
class Resolved:
    path: Path
    version: str
    source: str  # "explicit" | "PATH" | "cache" | "download"
    sha256: str = ""  # of the file that runs, when it came from the cache (else "")

    def check(self) -> None:
        """Before each start: the cached program is still the bytes that were verified, in a
        directory only we can write (cheap: 19 ms for a 27 MB cloudflared, 12 ms
        for frpc's 16 MB on the 2-core test machine; tests/e2e/test_binaries.py
        bounds it). Programs the user named are run as given."""
        if not self.sha256:
            return
        binary_cache.check_dir(self.path.parent)
        if binary_cache.trusted_digest(self.path) != self.sha256:
            raise BinaryError(
                f"{self.path} changed after it was verified; not run. Fix: delete "
                f"{self.path.parent} and run again (a fresh copy is downloaded and verified)"
            )


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
        # A value from the config wins over the environment's.
        self.explicit = explicit or (os.environ.get(spec.bin_env) if spec.bin_env else None)
        self.base_url = (base_url or os.environ.get(spec.url_env) or spec.base_url).rstrip("/")
        self.cache = cache or cache_root()
        self.plat = platform_key(system, machine)

    # -- where it comes from ------------------------------------------------------------------
    def resolve(self, progress: Progress | None = None) -> Resolved:
        """The binary to run; downloads (and verifies) it when nothing suitable is here."""
        if self.explicit in ("PATH", self.spec.name):
            return self._from_path()
        if self.explicit:
            return self._explicit()
        asset = self._asset()
        target = self._cached_path(asset)
        binary_cache.private_dir(target.parent, self.cache)
        fetched = target.parent / asset.filename if asset.member else target
        source = "cache"
        if not self._digest_ok(fetched, asset):
            self._download(asset, fetched, progress)
            source = "download"
        digest = asset.sha256
        if asset.member:
            digest = self._extract(fetched, asset.member, target)
        resolved = Resolved(target, self.spec.version, source, digest)
        resolved.check()
        return resolved

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

    def _from_path(self) -> Resolved:
        found = shutil.which(self.spec.name)
        if found is None:
            raise BinaryError(
                f"'{self.spec.config_hint}.binary' is \"{self.explicit}\" but no "
                f"{self.spec.name} is on PATH. Fix: install it on PATH, give its full path, or "
                f"leave '{self.spec.config_hint}.binary' out to use the pinned download"
            )
        version = reported_version(found) or "unknown"
        got = parse_version(version)
        if got is None or got < self._pinned():
            log.warning(
                "%s on PATH reports version %s, older than the pinned %s",
                found,
                version,
                self.spec.version,
            )
        # Asked for by name: run as found, and say that it is not the verified download.
        log.info(
            "using %s %s from PATH (%s), as '%s.binary' asks; not checked against the pinned "
            "digest",
            self.spec.name,
            version,
            found,
            self.spec.config_hint,
        )
        return Resolved(Path(found), version, "PATH")

    def _asset(self) -> Asset:
        asset = self.spec.assets.get(self.plat)
        if asset is None:
            have = ", ".join(sorted(self.spec.assets))
            raise BinaryError(
                f"no pinned {self.spec.name} {self.spec.version} build for {self.plat} "
                f"(handy-colab ships digests for {have}). Fix: install {self.spec.name} "
                f"{self.spec.version} or newer and set '{self.spec.config_hint}.binary' to its "
                f'path (or to "PATH")'
            )
        return asset

    def url(self, asset: Asset) -> str:
        return f"{self.base_url}/{self.spec.tag_prefix}{self.spec.version}/{asset.filename}"

    def _cached_path(self, asset: Asset) -> Path:
        name = Path(asset.member).name if asset.member else self.spec.name
        return self.cache / "bin" / f"{self.spec.name}-{self.spec.version}-{self.plat}" / name

    def _digest_ok(self, path: Path, asset: Asset) -> bool:
        got = binary_cache.trusted_digest(path)
        if got is None:
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
        with _locked(target.parent / ".lock"):
            # Another process may have finished the same download while we waited.
            if self._digest_ok(target, asset):
                return
            url = self.url(asset)
            log.info("downloading %s", url)
            with binary_cache.private_file(target.parent, ".download-") as (fd, tmp):
                with os.fdopen(fd, "wb", closefd=False) as out:
                    # The digest is of the chunks handed to the file, i.e. the bytes on disk.
                    got = self._fetch(url, out, progress)
                    out.flush()
                    os.fsync(fd)
                if got != asset.sha256:
                    raise BinaryError(
                        f"{url}: sha256 {got} does not match the digest pinned in handy-colab "
                        f"for {self.spec.name} {self.spec.version} ({asset.sha256}); not "
                        f"executed, not cached. Fix: the file was altered or is another "
                        f"release: check the mirror, or use the official download"
                    )
                binary_cache.seal(fd, tmp, target, executable=asset.member is None)

    def _extract(self, archive: Path, member: str, target: Path) -> str:
        """Write the program ``member`` of the (verified) ``archive`` to ``target``, unless it
        is already there byte for byte; return the sha256 of the program."""
        try:
            data = _read_member(archive, member)
        except (OSError, KeyError, ValueError, tarfile.TarError, zipfile.BadZipFile) as exc:
            raise BinaryError(
                f"{archive}: cannot take {member} out of the release archive ({exc}). Fix: "
                f"delete {archive.parent} and run again"
            ) from None
        want = hashlib.sha256(data).hexdigest()
        try:
            if binary_cache.trusted_digest(target) == want:
                return want
        except BinaryError as exc:
            log.warning("%s; writing it again from the verified archive", exc)
        with binary_cache.private_file(target.parent, ".extract-") as (fd, tmp):
            if binary_cache.write_all(fd, [data]) != want:
                raise BinaryError(f"{tmp}: short write. Fix: check the disk and run again")
            binary_cache.seal(fd, tmp, target, executable=True)
        return want

    def _fetch(self, url: str, out: IO[bytes], progress: Progress | None) -> str:
        """Stream ``url`` into ``out``; return the sha256 of what came."""
        h = hashlib.sha256()
        fix = (
            f"Fix: check the runtime's network, set '{self.spec.config_hint}.download_url' (or "
            f"{self.spec.url_env}) to a mirror, or install {self.spec.name} {self.spec.version} "
            f"or newer and set '{self.spec.config_hint}.binary' to its path"
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
