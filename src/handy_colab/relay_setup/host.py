"""The relay machine as ``apply()`` finds it: its accounts, its sshd, and what sshd reads.

Each question applying.py asks before it changes anything is answered here: is the
account ours, does the main config Include the drop-in's folder, what does ``sshd -T``
apply to the account, how is this sshd reloaded. The one change made here is ``useradd``,
when applying.py asks for it. Every path takes a ``root`` prefix so tests can use a
temporary tree.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import RelaySetupError
from ..fsutil import read_text_or_empty
from ..proc import run_subprocess
from ..server.openssh import find_sshd as find_openssh_sshd
from .rendering import GECOS
from .sshd_settings import DEFAULT_SSHD_CONFIG

if TYPE_CHECKING:
    from .planning import RelayPlan

# Shells that run nothing: an existing account with any other shell is not ours to lock down.
_NO_SHELLS = {"/usr/sbin/nologin", "/sbin/nologin", "/bin/false", "/usr/bin/false"}


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    gecos: str
    home: str
    shell: str


def under(root: Path, path: Path) -> Path:
    """The absolute system ``path`` inside the tree ``root``."""
    return root / path.relative_to("/") if root != Path("/") else path


def run(argv: Sequence[str], what: str, fix: str) -> str:
    """stdout of ``argv``; a one-line RelaySetupError (``what``, the tool's last word, ``fix``)."""
    try:
        res = run_subprocess(argv, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RelaySetupError(f"{what}: {argv[0]}: {exc}. Fix: {fix}") from None
    if res.returncode != 0:
        lines = [ln.strip() for ln in (res.stderr + res.stdout).splitlines() if ln.strip()]
        raise RelaySetupError(f"{what}: {lines[-1] if lines else 'failed'}. Fix: {fix}")
    return res.stdout


# -- accounts ------------------------------------------------------------------------------
def lookup_account(name: str, root: Path = Path("/")) -> Account | None:
    if root == Path("/"):
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            return None
        return Account(pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_gecos, pw.pw_dir, pw.pw_shell)
    for line in read_text_or_empty(root / "etc" / "passwd").splitlines():
        f = line.split(":")
        if len(f) == 7 and f[0] == name:
            return Account(f[0], int(f[2]), int(f[3]), f[4], f[5], f[6])
    return None


def _password_field(name: str, root: Path) -> str | None:
    try:
        text = (root / "etc" / "shadow").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        f = line.split(":")
        if len(f) > 1 and f[0] == name:
            return f[1]
    return None


def create_account(plan: RelayPlan, root: Path = Path("/")) -> Account:
    argv = shlex.split(plan.account_commands[0])
    if root != Path("/"):
        argv[1:1] = ["--prefix", str(root)]
    run(argv, f"could not create the account {plan.account}", "check the useradd message")
    acct = lookup_account(plan.account, root)
    if acct is None:
        raise RelaySetupError(
            f"useradd reported success but {plan.account} is not in the password database. "
            f"Fix: create it by hand: {plan.account_commands[0]}"
        )
    return acct


def check_account(acct: Account, root: Path = Path("/")) -> Account:
    """``acct`` if it is a dedicated relay-setup account; refuse any other account."""
    if acct.uid == 0 or GECOS not in acct.gecos or acct.shell not in _NO_SHELLS:
        raise RelaySetupError(
            f"account {acct.name} already exists and is not a relay-setup account (uid "
            f"{acct.uid}, shell {acct.shell or '-'}, comment '{acct.gecos}'); its key would get "
            f"socket and port forwarding as that user. Fix: pick an unused --account"
        )
    password = _password_field(acct.name, root)
    if password is not None and password.startswith("!"):
        raise RelaySetupError(
            f"account {acct.name} is locked ('!' in /etc/shadow); sshd refuses locked accounts "
            f"when UsePAM is off. Fix: usermod -p '*' {acct.name} (no password, not locked)"
        )
    return acct


# -- sshd ----------------------------------------------------------------------------------
def find_sshd() -> str:
    path = find_openssh_sshd()
    if path is None:
        raise RelaySetupError(
            "sshd is not installed here, so this is not the relay. Fix: run relay-setup --apply "
            "on the relay (apt-get install openssh-server there)"
        )
    return path


def _config_words(line: str) -> list[str]:
    line = line.strip()
    if not line or line.startswith("#"):
        return []
    head, sep, rest = line.partition("=")
    if sep and not head.strip().count(" ") and "\t" not in head.strip():
        line = f"{head.strip()} {rest}"
    try:
        return shlex.split(line, comments=True)
    except ValueError:
        return line.split()


def _matches(pattern: str, path: Path) -> bool:
    pat, target = Path(os.path.normpath(pattern)).parts, Path(os.path.normpath(path)).parts
    return len(pat) == len(target) and all(
        fnmatchcase(t, p) for p, t in zip(pat, target, strict=True)
    )


def included(main: Path, dropin: Path, root: Path = Path("/")) -> bool:
    """Whether ``main`` Includes ``dropin`` unconditionally (before any Match line).

    Relative patterns are in /etc/ssh, as sshd reads them; under another ``root`` an
    absolute pattern may name the real path or one inside ``root``.
    """
    etc_ssh = under(root, Path("/etc/ssh"))
    try:
        text = main.read_text()
    except OSError as exc:
        raise RelaySetupError(
            f"{main}: cannot read the main sshd config ({exc.strerror}). Fix: pass the relay's "
            f"config with --sshd-config"
        ) from None
    for line in text.splitlines():
        words = _config_words(line)
        if not words:
            continue
        keyword = words[0].lower()
        if keyword == "match":
            return False  # an Include below is conditional
        if keyword == "include":
            for pattern in words[1:]:
                if not pattern.startswith("/"):
                    candidates = [etc_ssh / pattern]
                else:
                    candidates = [Path(pattern), under(root, Path(pattern))]
                if any(_matches(str(c), dropin) for c in candidates):
                    return True
    return False


def effective(sshd: str, main: Path, account: str) -> dict[str, str]:
    """sshd's own view of the settings for a connection of ``account`` (``sshd -T``)."""
    out = run(
        [sshd, "-T", "-f", str(main), "-C", f"user={account},host=localhost,addr=127.0.0.1"],
        f"sshd -T -f {main} failed",
        f"check {main} with sshd -t",
    )
    values: dict[str, str] = {}
    for line in out.splitlines():
        keyword, _, value = line.partition(" ")
        values.setdefault(keyword, value)
    return values


def reload_command(sshd: str, main: Path) -> str:
    # systemd runs the system's sshd only when booted with it (not in most containers).
    if main == DEFAULT_SSHD_CONFIG and Path("/run/systemd/system").is_dir():
        return "systemctl reload ssh"
    pidfile = "/run/sshd.pid"
    with contextlib.suppress(RelaySetupError):
        pidfile = effective(sshd, main, "root").get("pidfile", pidfile)
    return f"kill -HUP $(cat {pidfile})"
