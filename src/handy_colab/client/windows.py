"""What Windows' OpenSSH (8.1 and later) accepts in the config `connect` writes.

Win32-OpenSSH runs a ProxyCommand without a shell (CreateProcessW): the command must start
with the quoted absolute path of a real program, with no ``|``, ``&&`` or ``%VAR%``, and
forward slashes (Git-for-Windows' ssh runs it through /bin/sh, which eats backslashes).
``Include`` paths are best relative (7.7 took ``C:\\...`` as relative to ~/.ssh). Keys must
be readable by their owner, SYSTEM and Administrators only. No local Unix sockets and no
ControlMaster (neither exists there). Sources: ../shared/notes/ide-clients.md, section 3.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path, PurePath

from ..errors import ClientConfigError
from ..proc import run_subprocess

PROGRAM = "handy-colab"
# Principals that may hold a key on Windows without ssh refusing it.
_ALLOWED_PRINCIPALS = ("NT AUTHORITY\\SYSTEM", "BUILTIN\\Administrators")


def is_windows() -> bool:
    return sys.platform == "win32"


def fwd_slashes(path: str | PurePath) -> str:
    return str(path).replace("\\", "/")


def quoted(path: str | PurePath) -> str:
    """A path as Windows' ssh reads an Include: forward slashes, quoted (Include expands no
    ``%`` token; ProxyCommand words go through sshquote.proxy_word instead)."""
    from ..sshquote import check_printable

    text = check_printable(fwd_slashes(path), "the path")
    if '"' in text:
        raise ClientConfigError(f"{text!r:.80}: a path with a double quote. Fix: rename it")
    return f'"{text}"'


def installed_program() -> str:
    """The absolute path of the installed ``handy-colab`` program (handy-colab.exe in a
    Scripts folder on Windows, which is often not on PATH)."""
    here = Path(sys.executable).parent
    candidates = [
        here / f"{PROGRAM}.exe",
        here / "Scripts" / f"{PROGRAM}.exe",
        here / PROGRAM,
    ]
    found = shutil.which(PROGRAM)
    for cand in [Path(found)] if found else []:
        candidates.insert(0, cand)
    for cand in candidates:
        if cand.is_file():
            return fwd_slashes(cand.absolute())
    raise ClientConfigError(
        f"cannot find the installed {PROGRAM} program beside {sys.executable}. Fix: install "
        f"handy-colab with pip for this Python (it puts {PROGRAM}.exe in its Scripts folder)"
    )


def launcher(kind: str, program: str | None = None) -> str:
    """The ProxyCommand's program and subcommand: ``"C:/.../handy-colab.exe" proxy [--ws]``."""
    flag = {"relay": "", "ws": " --ws", "ws-access": " --ws --cloudflared-access", "frp": " --frp"}
    from ..sshquote import proxy_word

    program = fwd_slashes(program or installed_program())
    return f"{proxy_word(program, 'the handy-colab program', windows=True)} proxy{flag[kind]}"


def include_line(managed: Path, ssh_dir: Path) -> str:
    """``Include config.d/handy-colab``: relative to ~/.ssh when it lies there."""
    try:
        rel = managed.relative_to(ssh_dir)
    except ValueError:
        return f"Include {quoted(managed)}"
    text = fwd_slashes(rel)
    return f"Include {quoted(text) if ' ' in text else text}"


def icacls_fix(key: str) -> str:
    """The commands that make a key private to its owner, as Windows' ssh demands."""
    win = str(key).replace("/", "\\")
    return (
        f'icacls "{win}" /inheritance:r && icacls "{win}" /grant:r "%USERNAME%:F" && '
        f'icacls "{win}" /remove "Authenticated Users" "BUILTIN\\Users" "Everyone"'
    )


def key_permission_problem(key: str) -> str | None:
    """On Windows: who else may read ``key`` (from icacls), or None when it is private.
    Elsewhere None: the POSIX mode is checked by `connect` itself."""
    if not is_windows():
        return None
    res = run_subprocess(["icacls", key], timeout=15)
    if res.returncode != 0:
        return None
    user = os.environ.get("USERNAME", "").lower()
    others = []
    for line in res.stdout.splitlines():
        entry = line.replace(key, "", 1).strip()
        principal = entry.split(":", 1)[0].strip()
        if not principal or ":" not in entry or "Successfully processed" in line:
            continue
        if principal in _ALLOWED_PRINCIPALS or principal.lower().endswith("\\" + user):
            continue
        others.append(principal)
    return ", ".join(others) if others else None
