"""A wheel of the very handy-colab that runs, built from its own files.

``init`` puts it into the config folder, so the notebook installs exactly the laptop's
version from the folder it already has, with no release on an index and no build tools:
the package directory (``.py`` files and any data beside them) is zipped as it is, with a
``.dist-info`` made from the running distribution's metadata. This works the same for an
editable checkout and for an installed wheel. Pure Python: ``py3-none-any``.

The bytes are deterministic (sorted entries, fixed timestamps), so an unchanged package
gives an identical file and a re-run ``init`` changes nothing.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import importlib.metadata as md
import io
import logging
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from .errors import HandyColabError
from .fsutil import atomic_write

log = logging.getLogger(__name__)

DIST_NAME = "handy-colab"
PACKAGE = "handy_colab"
TAG = "py3-none-any"
_DOCS = "docs"  # the user guide's folder in the package, as setup.py builds it
WHEEL_GLOB = f"{PACKAGE}-*.whl"
# 1980-01-01, the earliest time a zip entry can hold: the same bytes on every build.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
# The version in a wheel's file name: handy_colab-VERSION-TAG.whl (VERSION has no '-').
_WHEEL_NAME_RE = re.compile(rf"^{PACKAGE}-([^-]+)-[^-]+-[^-]+-[^-]+\.whl$")


@dataclass(frozen=True)
class SelfWheel:
    name: str  # handy_colab-VERSION-py3-none-any.whl
    version: str
    data: bytes


def wheel_name(version: str) -> str:
    return f"{PACKAGE}-{version.replace('-', '_')}-{TAG}.whl"


def wheel_version(path: Path | str) -> str | None:
    """The version a handy_colab wheel's file name gives (None: not such a name)."""
    m = _WHEEL_NAME_RE.match(Path(path).name)
    return m.group(1) if m else None


def folder_wheels(folder: Path) -> list[Path]:
    """The handy_colab wheels directly in ``folder``, by name."""
    try:
        return sorted(p for p in folder.glob(WHEEL_GLOB) if wheel_version(p) is not None)
    except OSError:
        return []


def _record_hash(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _package_files(root: Path) -> list[tuple[str, Path]]:
    """(name in the wheel, file) for every file of the package; bytecode, editor leftovers
    and hidden files stay out (a checkout may hold them, an installed wheel holds none)."""
    out: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and not d.startswith("."))
        for fn in sorted(filenames):
            if fn.startswith(".") or fn.endswith(("~", ".pyc", ".pyo", ".swp")):
                continue
            path = Path(dirpath) / fn
            if not path.is_file():
                continue
            out.append((f"{PACKAGE}/{path.relative_to(root).as_posix()}", path))
    return sorted(out)


def _distribution() -> md.Distribution:
    try:
        dist = md.distribution(DIST_NAME)
    except md.PackageNotFoundError:
        raise HandyColabError(
            f"cannot build a wheel of this handy-colab: it runs without installed metadata "
            f"(from a source tree on PYTHONPATH?). Fix: install it, e.g. `pip install -e "
            f"<checkout>` or `pip install {wheel_name(__version__)}`"
        ) from None
    if dist.version != __version__:
        # Another copy's metadata (an older install beside a checkout on PYTHONPATH): a wheel
        # would carry this code under that copy's version and dependencies.
        raise HandyColabError(
            f"cannot build a wheel of this handy-colab {__version__}: the installed "
            f"metadata is of version {dist.version}. Fix: reinstall handy-colab (pip install "
            f"-e <checkout>, or the wheel) so the two agree"
        )
    return dist


def _metadata(dist: md.Distribution) -> str:
    meta = dist.metadata
    lines = ["Metadata-Version: 2.1", f"Name: {meta['Name']}", f"Version: {dist.version}"]
    for key in ("Summary", "Requires-Python"):
        if key in meta:
            lines.append(f"{key}: {meta[key]}")
    lines += [f"Requires-Dist: {r}" for r in meta.get_all("Requires-Dist") or []]
    lines += [f"Provides-Extra: {e}" for e in meta.get_all("Provides-Extra") or []]
    return "\n".join(lines) + "\n"


def _entry_points(dist: md.Distribution) -> str:
    groups: dict[str, list[str]] = {}
    for ep in dist.entry_points:
        groups.setdefault(ep.group, []).append(f"{ep.name} = {ep.value}")
    if "console_scripts" not in groups:
        raise HandyColabError(
            "cannot build a wheel of this handy-colab: its metadata names no console script "
            "(handy-colab = handy_colab.cli:entry). Fix: reinstall it"
        )
    sections = [f"[{g}]\n" + "".join(f"{e}\n" for e in sorted(eps)) for g, eps in groups.items()]
    return "\n".join(sorted(sections))


def build() -> SelfWheel:
    """The running handy-colab as a wheel, in memory."""
    import handy_colab

    dist = _distribution()
    version = dist.version
    info = f"{PACKAGE}-{version.replace('-', '_')}.dist-info"
    root = Path(handy_colab.__file__).resolve().parent
    entries: list[tuple[str, bytes]] = []
    files = _package_files(root)
    if not (root / _DOCS).is_dir():
        # An editable install reads the checkout's docs/ (userdocs.py); a wheel must carry
        # them as handy_colab/docs/, as setup.py's build does, or `help` has no pages.
        from .userdocs import docs_dir

        pages = docs_dir()
        files += (
            [(f"{PACKAGE}/{_DOCS}/{p.name}", p) for p in sorted(pages.glob("*.md"))]
            if pages
            else []
        )
    try:
        entries += [(name, path.read_bytes()) for name, path in sorted(files)]
    except OSError as exc:
        raise HandyColabError(
            f"{exc.filename}: cannot read this handy-colab's own files to build its wheel "
            f"({exc.strerror}). Fix: reinstall handy-colab"
        ) from None
    wheel = f"Wheel-Version: 1.0\nGenerator: handy-colab {version}\nRoot-Is-Purelib: true\n"
    entries += [
        (f"{info}/METADATA", _metadata(dist).encode()),
        (f"{info}/WHEEL", (wheel + f"Tag: {TAG}\n").encode()),
        (f"{info}/entry_points.txt", _entry_points(dist).encode()),
        (f"{info}/top_level.txt", f"{PACKAGE}\n".encode()),
    ]
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for name, data in entries:
        writer.writerow([name, _record_hash(data), len(data)])
    writer.writerow([f"{info}/RECORD", "", ""])
    entries.append((f"{info}/RECORD", record.getvalue().encode()))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries:
            zi = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            zi.compress_type = zipfile.ZIP_DEFLATED
            zi.external_attr = (0o100644 & 0xFFFF) << 16
            zf.writestr(zi, data)
    return SelfWheel(wheel_name(version), version, buf.getvalue())


def write(folder: Path, wheel: SelfWheel) -> bool:
    """Put the wheel into ``folder`` atomically, unless the folder holds these very bytes;
    True when it wrote. Unlike key files the wheel is the tool's own, so a same-named wheel
    of other code (an edited checkout) is replaced. Other wheels stay until the caller
    calls remove_others: init does once the folder is known to load, since a removed
    wheel cannot be put back."""
    path = folder / wheel.name
    with contextlib.suppress(OSError):
        if path.is_file() and not path.is_symlink() and path.read_bytes() == wheel.data:
            return False
    atomic_write(path, wheel.data, 0o644)
    return True


def remove_others(folder: Path, keep: Path) -> list[Path]:
    """Remove every handy_colab wheel in ``folder`` but ``keep``: the notebook installs
    "the" wheel of the folder, and two would make that ambiguous."""
    removed = []
    for old in folder_wheels(folder):
        if old.name == keep.name:
            continue
        with contextlib.suppress(FileNotFoundError):
            old.unlink()
        log.info("removed %s: the folder keeps only the wheel of this handy-colab", old)
        removed.append(old)
    return removed


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(re.split(r"[.+-]", version)[:2])


def differs(a: str, b: str) -> bool:
    """Whether two versions differ in major.minor (what may change the descriptor or the
    config; patch releases keep both)."""
    return _major_minor(a) != _major_minor(b)


def folder_mismatch(folder: Path, running: str = __version__) -> str | None:
    """A one-line warning when ``folder`` holds handy_colab wheels none of which is the
    version that runs (None: it holds this version's wheel, or none)."""
    versions = sorted({v for p in folder_wheels(folder) if (v := wheel_version(p))})
    if not versions or running in versions:
        return None
    names = ", ".join(wheel_name(v) for v in versions)
    return (
        f"{folder} holds {names}, but handy-colab {running} runs here: the laptop's init put "
        f"a different version there. Fix: %pip install {folder / wheel_name(versions[-1])} "
        f"(pip install in a shell), then restart the kernel and run `up` again"
    )
