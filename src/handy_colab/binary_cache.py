"""The per-user cache of downloaded programs: only this uid can have put a file there.

A verified digest is worth something only if nobody else can replace the file between the
check and the exec. So every directory on the way from the cache root down is created 0700
and checked with lstat (no symlink, owned by us, no group/other write) before a file in it is
trusted; files are written under a fresh O_EXCL name, hashed from the bytes written, made
read-only and renamed into place; a cached file is opened with O_NOFOLLOW and its owner and
mode are checked on the open descriptor before its bytes are hashed again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import BinaryError

_CHUNK = 1 << 20
_FIX = "set HANDY_COLAB_CACHE_DIR to a folder only you can write"


def private_dir(path: Path, root: Path) -> Path:
    """Create ``path`` (under ``root``) 0700 as needed and check it and every directory
    between it and ``root``, ``root`` included; return ``path``."""
    chain = [path, *[p for p in path.parents if p.is_relative_to(root)]]
    for d in reversed(chain):
        try:
            d.mkdir(mode=0o700, parents=d == root, exist_ok=True)
        except OSError as exc:
            raise BinaryError(
                f"{d}: cannot create the download cache ({exc.strerror}). Fix: {_FIX}"
            ) from None
        check_dir(d)
    return path


def check_dir(d: Path) -> None:
    try:
        st = os.lstat(d)
    except OSError as exc:
        msg = f"{d}: cannot check the download cache ({exc.strerror}). Fix: {_FIX}"
        raise BinaryError(msg) from None
    if stat.S_ISLNK(st.st_mode):
        problem, fix = "is a symlink", f"remove the link ({d}) or {_FIX}"
    elif not stat.S_ISDIR(st.st_mode):
        problem, fix = "is not a directory", f"remove it or {_FIX}"
    elif st.st_uid != os.geteuid():
        problem = f"is owned by uid {st.st_uid}, not {os.geteuid()}"
        fix = f"remove it (rm -rf {d}) and run again, or {_FIX}"
    elif st.st_mode & 0o022:
        problem = f"is writable by others (mode {stat.S_IMODE(st.st_mode):o})"
        fix = f"chmod 700 {d}"
    else:
        return
    raise BinaryError(
        f"{d}: the download cache {problem}, so a program in it could have been replaced; "
        f"nothing in it is run. Fix: {fix}"
    )


def trusted_digest(path: Path) -> str | None:
    """sha256 of ``path`` if it is a regular file of ours that only we can write (the
    checks are made on the descriptor whose bytes are hashed); None if it is missing."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BinaryError(
            f"{path}: cannot open the cached file ({exc.strerror}). Fix: delete it and run again"
        ) from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
            raise BinaryError(
                f"{path}: the cached file is not a regular file owned by uid {os.geteuid()} "
                f"and writable only by it; not run. Fix: delete it and run again"
            )
        h = hashlib.sha256()
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
        return h.hexdigest()


@contextlib.contextmanager
def private_file(directory: Path, prefix: str) -> Iterator[tuple[int, str]]:
    """A fresh file (O_EXCL, 0600) in the checked ``directory``: (fd, path); removed on the
    way out unless the caller renamed it into place."""
    fd, tmp = tempfile.mkstemp(prefix=prefix, dir=directory)
    try:
        yield fd, tmp
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_all(fd: int, chunks: Iterable[bytes]) -> str:
    """Write ``chunks`` to ``fd``; return the sha256 of exactly the bytes written."""
    h = hashlib.sha256()
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            n = os.write(fd, view)
            h.update(view[:n])
            view = view[n:]
    os.fsync(fd)
    return h.hexdigest()


def seal(fd: int, tmp: str, target: Path, executable: bool) -> None:
    """Make the verified ``tmp`` read-only (and executable) and rename it to ``target``."""
    os.fchmod(fd, 0o500 if executable else 0o400)
    os.replace(tmp, target)
