"""A locked-down relay: the account, keys and sshd settings a VPS running OpenSSH needs.

``make_plan()`` turns options into a plan (account commands, authorized_keys lines, an
sshd_config drop-in with one ``Match User`` block); ``apply()`` carries it out as root on
the relay and validates it with the relay's own ``sshd``. It never reloads sshd.

Every option was checked against OpenSSH 9.2 with real connections
(tests/e2e/test_relay_setup.py, docs/relay.md). What the design rests on:

- A ``Match`` block in an Include'd file ends with that file: the main config's later
  lines stay global (a ``Match`` written inline in the main file would swallow them).
- All options used here are allowed inside ``Match``, ``StreamLocalBindUnlink`` included,
  and take effect there: a stale socket is replaced, an idle frozen client is dropped.
- ``restrict`` turns off forwarding of both kinds; ``port-forwarding`` turns both back on.
- ``permitlisten="PORT"`` (no host) matches ``-R PORT:...``, which ssh sends as
  listen host "localhost"; ``"0.0.0.0:PORT"`` would not.
- ``permitlisten``/``permitopen`` cannot say "none" in authorized_keys: such a line makes
  sshd ignore the key. "none" exists only in sshd_config.
- Unix-socket forwards are refused unless ``AllowTcpForwarding`` allows the direction too
  (-R needs remote, -L needs local), so private mode needs ``AllowTcpForwarding yes`` and
  closes TCP with ``PermitListen none`` and ``PermitOpen [SOCKET]:*``: sshd compares the
  host part of a PermitOpen/permitopen entry with the requested socket path, so that entry
  allows -L to that one socket and to nothing else. Nothing limits which path -R may bind.
- ``ClientAliveInterval 5``/``ClientAliveCountMax 2``: sshd 9.2 sends a keepalive every
  second interval and gives up after CountMax + 1 misses, so a frozen client is dropped
  ~30 s after it went quiet (10/3 measured 78-80 s).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shlex
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Literal

from .config import NAME_RE, SOCKET_PATH_RE
from .errors import ConfigError, KeyFileError, RelaySetupError
from .fsutil import atomic_write, backup, read_text_or_empty
from .keys import PublicKey, load_public_keys, parse_public_key_line
from .proc import run_subprocess
from .server.openssh import find_sshd as find_openssh_sshd

Mode = Literal["public", "private"]

DEFAULT_ACCOUNT = "handy-colab"
DEFAULT_NAME = "colab"
DEFAULT_SSHD_CONFIG = Path("/etc/ssh/sshd_config")
DEFAULT_SSHD_CONFIG_DIR = Path("/etc/ssh/sshd_config.d")
NOLOGIN = "/usr/sbin/nologin"
GECOS = "handy-colab relay tunnels"
MARK = "handy-colab:"
# Shells that run nothing: an existing account with any other shell is not ours to lock down.
_NO_SHELLS = {"/usr/sbin/nologin", "/sbin/nologin", "/bin/false", "/usr/bin/false"}
_ACCOUNT_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_MAX_KEY_FILE = 64 * 1024


@dataclass(frozen=True)
class Setting:
    """One line of the Match block, with the reason printed above it."""

    keyword: str
    value: str
    why: str

    @property
    def effective(self) -> str:
        """The line ``sshd -T`` prints when the setting is in force."""
        value = self.value
        if self.keyword == "PermitListen" and (value.isdigit() or value == "*"):
            value = f"*:{value}"  # a bare port (or *) means any listen host
        return f"{self.keyword.lower()} {value}"


@dataclass(frozen=True)
class RelayPlan:
    account: str
    name: str
    mode: Mode
    runtime_key: PublicKey
    laptop_keys: tuple[PublicKey, ...]
    remote_port: int | None  # public mode; 0: the relay allocates one per runtime
    socket_path: str | None  # private mode
    settings: tuple[Setting, ...]
    authorized_keys: tuple[str, ...]
    account_commands: tuple[str, ...]
    notes: tuple[str, ...]

    @property
    def marker(self) -> str:
        """Trailing comment of every authorized_keys line this plan owns."""
        return f"{MARK}{self.name}"

    @property
    def dropin_name(self) -> str:
        return f"handy-colab-{self.account}.conf"

    @property
    def home(self) -> str:
        """Home of a new account (an existing one keeps its own)."""
        return f"/home/{self.account}"

    @property
    def where(self) -> str:
        if self.mode == "private":
            return f"Unix socket {self.socket_path} on the relay"
        if self.remote_port == 0:
            return "a port the relay allocates for each runtime"
        return f"port {self.remote_port} exposed by the relay"

    def dropin(self) -> str:
        where = f"port {self.remote_port}" if self.mode == "public" else self.socket_path
        if self.remote_port == 0:
            where = "relay-allocated ports"
        out = [
            f"# Written by `handy-colab relay-setup` for runtime '{self.name}' ({self.mode} "
            f"mode, {where}).",
            f"# Account {self.account} may hold that tunnel and nothing else. Checked with "
            f"OpenSSH 9.2.",
            f"Match User {self.account}",
        ]
        for s in self.settings:
            out += [f"    # {s.why}", f"    {s.keyword} {s.value}"]
        return "\n".join(out) + "\n"


@dataclass
class ApplyResult:
    account_created: bool
    authorized_keys: Path
    kept_lines: int  # lines of others in authorized_keys, left as they were
    dropin: Path
    backups: list[Path] = field(default_factory=list)
    reload_command: str = ""


# -- the plan ------------------------------------------------------------------------------
def read_key(value: str, what: str) -> list[PublicKey]:
    """Public keys from a key line or a .pub/authorized_keys file; one-line errors."""
    key = parse_public_key_line(value, "argument")
    if key is not None:
        return [key]
    path = Path(value).expanduser()
    if not path.is_file():
        raise KeyFileError(
            f"{what} '{_short(value)}' is neither an SSH public key line nor a file. Fix: pass "
            f'the .pub file, or the key line in quotes ("ssh-ed25519 AAAA... comment")'
        )
    try:
        if path.stat().st_size > _MAX_KEY_FILE:
            raise KeyFileError(f"{path}: too large for a key file. Fix: pass the .pub file")
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise KeyFileError(
            f"{path}: cannot read it ({exc.strerror}). Fix: check the file's permissions"
        ) from None
    if "PRIVATE KEY" in text:
        raise KeyFileError(
            f"{path}: is a private key; the relay needs only the public half. Fix: pass "
            f"{path.name}.pub, or make it with `ssh-keygen -y -f {path} > {path}.pub`"
        )
    keys = load_public_keys(path)
    if not keys:
        raise KeyFileError(
            f"{path}: holds no SSH public key. Fix: pass the .pub file of the key "
            f"(a line like 'ssh-ed25519 AAAA... comment')"
        )
    return keys


def _short(value: str) -> str:
    flat = " ".join(value.split())
    return flat if len(flat) <= 40 else flat[:37] + "..."


def make_plan(
    key: str,
    *,
    account: str = DEFAULT_ACCOUNT,
    mode: str = "public",
    remote_port: int | None = None,
    socket_path: str | None = None,
    name: str = DEFAULT_NAME,
    laptop_keys: Sequence[str] = (),
) -> RelayPlan:
    """What the relay needs for one runtime; raises ConfigError/KeyFileError on bad input."""
    if not _ACCOUNT_RE.match(account) or account == "root":
        raise ConfigError(
            f"--account '{account}' is not a usable account name. Fix: use lower-case letters, "
            f"digits, '-' or '_' (at most 32), e.g. {DEFAULT_ACCOUNT}"
        )
    if not NAME_RE.match(name):
        raise ConfigError(
            f"--name '{name}' is not a valid runtime name. Fix: use letters, digits, '.', '_' "
            f"or '-' (the runtime's 'name' field, default {DEFAULT_NAME})"
        )
    if mode not in ("public", "private"):
        raise ConfigError(f"--mode '{mode}' is not a mode. Fix: use public or private")
    runtime_keys = read_key(key, "--key")
    if len(runtime_keys) > 1:
        raise KeyFileError(
            f"{key}: holds {len(runtime_keys)} keys, --key takes the runtime's one relay key. "
            f"Fix: pass a file with just that key (its .pub)"
        )
    runtime_key = runtime_keys[0]
    laptops: list[PublicKey] = []
    seen = {runtime_key.blob}
    for value in laptop_keys:
        for k in read_key(value, "--laptop-key"):
            if k.blob not in seen:
                seen.add(k.blob)
                laptops.append(k)

    if mode == "public":
        if socket_path is not None or laptops:
            raise ConfigError(
                "--socket-path and --laptop-key are for private mode: in public mode the laptop "
                "connects to relay:PORT and needs no account. Fix: drop them, or add "
                "--mode private"
            )
        if remote_port is None:
            raise ConfigError(
                "public mode needs --remote-port. Fix: pass the port the runtime forwards "
                "(its relay.remote_port, or the seed's service_port), e.g. --remote-port 2222"
            )
        if remote_port != 0 and not 1024 <= remote_port <= 65535:
            raise ConfigError(
                f"--remote-port {remote_port} cannot be used: only root may listen below 1024. "
                f"Fix: choose a port from 1024 to 65535, or 0 (the relay picks one)"
            )
        settings = _public_settings(remote_port)
        # "*": permitlisten cannot say "port 0"; OpenSSH's sshd only ever lets a normal
        # account listen on ports from 1024 up.
        listen = "*" if remote_port == 0 else str(remote_port)
        options = f'restrict,port-forwarding,permitlisten="{listen}"'
        sock = None
    else:
        if remote_port is not None:
            raise ConfigError(
                "--remote-port is for public mode: private mode forwards to a Unix socket. "
                "Fix: drop it (or set --socket-path), or use --mode public"
            )
        sock = socket_path or f"/tmp/handy-colab-{account}-{name}.sock"
        if not SOCKET_PATH_RE.match(sock):
            raise ConfigError(
                f"--socket-path '{_short(sock)}' must be an absolute path of letters, digits and "
                f"'._/+-'. Fix: use e.g. /tmp/handy-colab-{account}-{name}.sock"
            )
        settings = _private_settings(sock)
        options = f'restrict,port-forwarding,permitopen="[{sock}]:*"'

    marker = f"{MARK}{name}"
    lines = tuple(" ".join([options, k.line, marker]) for k in (runtime_key, *laptops))
    commands = (
        shlex.join(
            [
                "useradd",
                "--system",
                "--user-group",
                "--create-home",
                "--home-dir",
                f"/home/{account}",
                "--shell",
                NOLOGIN,
                "--password",
                "*",
                "--comment",
                GECOS,
                account,
            ]
        ),
        shlex.join(["install", "-d", "-m", "0700", "-o", account, "-g", account])
        + f" /home/{account}/.ssh",
    )
    return RelayPlan(
        account=account,
        name=name,
        mode=mode,  # type: ignore[arg-type]
        runtime_key=runtime_key,
        laptop_keys=tuple(laptops),
        remote_port=remote_port if mode == "public" else None,
        socket_path=sock,
        settings=settings,
        authorized_keys=lines,
        account_commands=commands,
        notes=_notes(mode, account, name, remote_port, sock, bool(laptops)),
    )


_HEAD = (
    Setting(
        "AuthorizedKeysFile",
        ".ssh/authorized_keys",
        "keys come only from the file relay-setup writes",
    ),
    Setting(
        "AuthenticationMethods", "publickey", "keys only: no password, no keyboard-interactive"
    ),
)
_LOCKDOWN = (
    Setting(
        "MaxSessions",
        "0",
        "no session at all (shell, command, sftp, PTY, agent, X11); forwarding still works",
    ),
    Setting("ForceCommand", NOLOGIN, "should a session open anyway, it runs nothing"),
    Setting("PermitTTY", "no", "no PTY"),
    Setting("X11Forwarding", "no", "no X11 forwarding"),
    Setting("AllowAgentForwarding", "no", "no agent forwarding"),
    Setting("PermitTunnel", "no", "no tun/tap devices"),
    Setting("PermitUserRC", "no", "no ~/.ssh/rc"),
    Setting(
        "ClientAliveInterval", "5", "drop a dead tunnel (and free its port or socket) after ~30 s:"
    ),
    Setting(
        "ClientAliveCountMax",
        "2",
        "sshd 9.2 asks every 2 x 5 s, gives up after 3 misses (measured 28 s)",
    ),
)


def _public_settings(port: int) -> tuple[Setting, ...]:
    listen = (
        Setting(
            "PermitListen",
            "*",
            "-R may listen on any free port from 1024 up (remote_port 0: the relay picks it)",
        )
        if port == 0
        else Setting("PermitListen", str(port), "-R may listen on this port only (any address)")
    )
    return (
        *_HEAD,
        Setting("AllowTcpForwarding", "remote", "-R only: no -L, -D or -W through the relay"),
        listen,
        Setting("GatewayPorts", "yes", "the port listens on all addresses, for the laptop"),
        Setting("PermitOpen", "none", "no connection out of the relay"),
        Setting(
            "AllowStreamLocalForwarding", "no", "no Unix-socket forwarding (public mode is TCP)"
        ),
        *_LOCKDOWN,
    )


def _private_settings(sock: str) -> tuple[Setting, ...]:
    return (
        *_HEAD,
        Setting(
            "AllowTcpForwarding",
            "yes",
            "sshd 9.2 refuses socket forwards without it; the next two lines shut TCP",
        ),
        Setting(
            "PermitListen", "none", "no TCP listener (-R PORT) at all; -R SOCKET is not affected"
        ),
        Setting(
            "PermitOpen",
            f"[{sock}]:*",
            "-L to the runtime's socket only: no TCP out, no other socket",
        ),
        Setting(
            "AllowStreamLocalForwarding",
            "yes",
            "runtime: -R to the socket; its check and laptops: -L to it",
        ),
        Setting(
            "StreamLocalBindUnlink",
            "yes",
            "a new tunnel replaces a dead tunnel's socket at once (works in Match)",
        ),
        Setting(
            "StreamLocalBindMask", "0177", "the socket is usable by this account only (mode 0600)"
        ),
        *_LOCKDOWN,
    )


def _notes(
    mode: str, account: str, name: str, port: int | None, sock: str | None, laptops: bool
) -> tuple[str, ...]:
    notes = [
        f"One runtime per account: relay-setup for another --name with --account {account} "
        f"replaces this drop-in (its authorized_keys lines stay, marked {MARK}NAME).",
    ]
    if mode == "public" and port == 0:
        notes = [
            "Several runtimes may share this account and key: each gets its own port from "
            "the relay, asks for the same one again when it reconnects, and publishes it in "
            "its descriptor (connections/NAME.json).",
            "Open the relay's ephemeral ports in its firewall (Linux: "
            "net.ipv4.ip_local_port_range, 32768-60999 by default): the relay picks from them.",
            f'Runtime config: "relay": {{"user": "{account}", "remote_port": 0}}.',
            f"The key may listen on any free port from 1024 up as {account}, not just one: "
            f"the price of relay-allocated ports.",
        ]
    elif mode == "public":
        notes += [
            f"Open TCP port {port} in the relay's firewall: the laptop connects to relay:{port}.",
            f'Runtime config: "relay": {{"user": "{account}", "remote_port": {port}}}.',
        ]
    else:
        notes += [
            "Private mode needs nothing global: StreamLocalBindUnlink is honoured inside the "
            "Match block (OpenSSH 9.2, measured).",
            f"{Path(sock or '/tmp').parent} must be writable by {account} (/tmp is); the socket "
            f"is created by the tunnel, as {account}, mode 0600.",
            f'Runtime config: "mode": "private", "relay": {{"user": "{account}"'
            + (
                ""
                if sock == f"/tmp/handy-colab-{account}-{name}.sock"
                else f', "socket_path": "{sock}"'
            )
            + "}.",
        ]
        if laptops:
            notes.append(
                f"Laptop keys log in as {account} too and can reach only the socket; OpenSSH "
                f"cannot stop a key from binding other sockets as {account} (-R path)."
            )
    return tuple(notes)


def render(plan: RelayPlan, sshd_config_dir: Path = DEFAULT_SSHD_CONFIG_DIR) -> str:
    """The plan as text for people: what to run and write on the relay, and why."""
    out = [
        f"Relay plan: account '{plan.account}' for runtime '{plan.name}', {plan.mode} mode "
        f"({plan.where}).",
        "",
        "1. The account (no shell, password field '*': no password, yet not locked for sshd):",
        *(f"   {c}" for c in plan.account_commands),
        "",
        f"2. Lines for ~{plan.account}/.ssh/authorized_keys (owner {plan.account}, mode 0600);",
        f"   they end in '{plan.marker}', which --apply replaces on a re-run:",
        *(f"   {line}" for line in plan.authorized_keys),
        "",
        f"3. {sshd_config_dir / plan.dropin_name} (the main sshd_config must Include "
        f"{sshd_config_dir}/*.conf, as Debian 12's does):",
        *(f"   {line}" if line else "" for line in plan.dropin().splitlines()),
        "",
        "4. Check, then reload sshd (open sessions stay up):",
        "   sshd -t && systemctl reload ssh      (or: kill -HUP $(cat /run/sshd.pid))",
        "",
        "Notes:",
        *(f"- {n}" for n in plan.notes),
    ]
    return "\n".join(out) + "\n"


# -- authorized_keys -----------------------------------------------------------------------
def _is_ours(line: str, marker: str) -> bool:
    parts = line.split()
    return bool(parts) and not line.lstrip().startswith("#") and parts[-1] == marker


def merge_authorized_keys(
    existing: str, lines: Iterable[str], marker: str, path: Path | str = "authorized_keys"
) -> tuple[str, int]:
    """New file text: the lines of others kept as they are, this plan's lines replaced.

    Returns (text, number of kept lines). Refuses when a kept line holds one of this plan's
    keys: sshd uses the first line that matches a key, so that line would win.
    """
    new = list(lines)
    # A key's base64 starts with its 4-byte type length, "AAAA": the key tokens of a line.
    blobs = {tok for line in new for tok in line.split() if tok.startswith("AAAA")}
    kept: list[str] = []
    for n, line in enumerate(existing.splitlines(), 1):
        if _is_ours(line, marker):
            continue
        if not line.lstrip().startswith("#") and blobs.intersection(line.split()):
            raise RelaySetupError(
                f"{path} line {n} already lists the key without these restrictions, and sshd "
                f"would use that line. Fix: delete line {n} (or re-run relay-setup with the "
                f"--name that wrote it), then run relay-setup --apply again"
            )
        kept.append(line)
    while kept and not kept[-1].strip():
        kept.pop()
    return "\n".join([*kept, *new]) + "\n", sum(1 for ln in kept if ln.strip())


# -- applying ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    gecos: str
    home: str
    shell: str


def _under(root: Path, path: Path) -> Path:
    return root / path.relative_to("/") if root != Path("/") else path


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
    _run(argv, f"could not create the account {plan.account}", "check the useradd message")
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


def find_sshd() -> str:
    path = find_openssh_sshd()
    if path is None:
        raise RelaySetupError(
            "sshd is not installed here, so this is not the relay. Fix: run relay-setup --apply "
            "on the relay (apt-get install openssh-server there)"
        )
    return path


def _run(argv: Sequence[str], what: str, fix: str) -> str:
    try:
        res = run_subprocess(argv, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RelaySetupError(f"{what}: {argv[0]}: {exc}. Fix: {fix}") from None
    if res.returncode != 0:
        lines = [ln.strip() for ln in (res.stderr + res.stdout).splitlines() if ln.strip()]
        raise RelaySetupError(f"{what}: {lines[-1] if lines else 'failed'}. Fix: {fix}")
    return res.stdout


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
    etc_ssh = _under(root, Path("/etc/ssh"))
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
                    candidates = [Path(pattern), _under(root, Path(pattern))]
                if any(_matches(str(c), dropin) for c in candidates):
                    return True
    return False


def effective(sshd: str, main: Path, account: str) -> dict[str, str]:
    """sshd's own view of the settings for a connection of ``account`` (``sshd -T``)."""
    out = _run(
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


def apply(
    plan: RelayPlan,
    root: str | Path = "/",
    sshd_config_dir: str | Path | None = None,
    authorized_keys_path: str | Path | None = None,
    sshd_config: str | Path | None = None,
) -> ApplyResult:
    """Carry out ``plan`` on this machine (the relay) as root; sshd is not reloaded.

    ``root`` prefixes every system path (for a mounted image or a test tree).
    Order: the config must already pass ``sshd -t`` and Include the drop-in's folder, and an
    existing account must be a relay-setup one; then the drop-in is written (the old one
    backed up) and must pass ``sshd -t`` with every setting in force for the account as
    ``sshd -T`` reports it (else the old drop-in is put back); only then is the account
    made and its authorized_keys written.
    """
    if os.geteuid() != 0:
        raise RelaySetupError(
            "relay-setup --apply creates an account and writes sshd's config, so it must run "
            "as root on the relay. Fix: run it with sudo there, or carry out the printed plan "
            "by hand"
        )
    root = Path(root)
    confdir = Path(sshd_config_dir) if sshd_config_dir else _under(root, DEFAULT_SSHD_CONFIG_DIR)
    main = Path(sshd_config) if sshd_config else _under(root, DEFAULT_SSHD_CONFIG)
    dropin = confdir / plan.dropin_name
    sshd = find_sshd()
    test = [sshd, "-t", "-f", str(main)]
    try:
        _run(test, f"{main} fails `sshd -t` already", "repair the relay's sshd config first")
    except RelaySetupError as exc:
        if "privilege separation directory" not in str(exc):
            raise
        m = re.search(r"directory: (/[^\s.]+)", str(exc))
        where = m.group(1) if m else "/run/sshd"
        raise RelaySetupError(
            f"sshd -t cannot run: its privilege separation directory {where} is missing (the "
            f"ssh service makes it when it starts). Fix: mkdir -p {where}"
        ) from None
    if not included(main, dropin, root):
        raise RelaySetupError(
            f"{main} does not Include {confdir}, so sshd would ignore the drop-in. Fix: add the "
            f"line 'Include {confdir}/*.conf' at the top of {main} (before any Match block), "
            f"then run relay-setup --apply again"
        )
    # Refuse early what would fail later, so nothing is left half done.
    acct = lookup_account(plan.account, root)
    if acct is not None:
        acct = check_account(acct, root)
        _authorized_keys_text(plan, acct, root, authorized_keys_path)

    result = ApplyResult(False, Path(), 0, dropin)
    old = dropin.read_text() if dropin.exists() else None
    changed = old != plan.dropin()
    if changed:
        saved = backup(dropin)
        if saved is not None:
            result.backups.append(saved)
        atomic_write(dropin, plan.dropin(), mode=0o644)
    try:
        if changed:
            _run(
                test,
                f"sshd -t rejects {main} with the new drop-in (the previous one is kept)",
                "this OpenSSH lacks an option the plan uses: upgrade openssh-server, or apply "
                "the printed plan by hand without it",
            )
        _check_effective(plan, sshd, main)
    except RelaySetupError:
        if changed and old is None:
            dropin.unlink()
        elif changed and old is not None:
            atomic_write(dropin, old, mode=0o644)
        raise

    if acct is None:
        acct = check_account(create_account(plan, root), root)
        result.account_created = True
    ak, text, result.kept_lines = _authorized_keys_text(plan, acct, root, authorized_keys_path)
    home_ssh = _under(root, Path(acct.home)) / ".ssh"
    if ak.parent == home_ssh:  # sshd's StrictModes: owned by the account, not writable by others
        home_ssh.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chown(home_ssh, acct.uid, acct.gid)
        home_ssh.chmod(0o700)
    atomic_write(ak, text, mode=0o600)
    os.chown(ak, acct.uid, acct.gid)
    result.authorized_keys = ak
    result.reload_command = reload_command(sshd, main)
    return result


def _authorized_keys_text(
    plan: RelayPlan, acct: Account, root: Path, override: str | Path | None
) -> tuple[Path, str, int]:
    ak = Path(override) if override else _under(root, Path(acct.home)) / ".ssh" / "authorized_keys"
    text, kept = merge_authorized_keys(
        read_text_or_empty(ak), plan.authorized_keys, plan.marker, ak
    )
    return ak, text, kept


def _check_effective(plan: RelayPlan, sshd: str, main: Path) -> None:
    values = effective(sshd, main, plan.account)
    for s in plan.settings:
        got = f"{s.keyword.lower()} {values.get(s.keyword.lower(), '?')}"
        if got != s.effective:
            raise RelaySetupError(
                f"sshd applies '{got}' to {plan.account}, not '{s.effective}': an earlier "
                f"Match block or drop-in wins (the previous drop-in is kept). Fix: make that "
                f"block skip {plan.account}, then run relay-setup --apply again"
            )
