"""The relay plan: from relay-setup's options to what one runtime's account must allow.

``make_plan()`` checks the inputs (one-line errors with a fix) and decides: the account,
the keys and their authorized_keys options, the tunnel's port or socket, and the sshd
settings. It touches nothing: rendering.py words the plan and applying.py carries it
out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..choices import RELAY_SETUP_SOCKET_RE, runtime_name_problem
from ..config import SOCKET_PATH_RE
from ..errors import ConfigError, KeyFileError
from ..keys import PublicKey, load_public_keys, parse_public_key_line
from .rendering import MARK, account_commands, authorized_keys_lines, dropin_text, notes
from .sshd_settings import (
    DEFAULT_CHROOT_DIR,
    DEFAULT_KEYS_DIR,
    Setting,
    private_settings,
    public_settings,
)

Mode = Literal["public", "private"]

DEFAULT_ACCOUNT = "handy-colab"
DEFAULT_NAME = "colab"
_ACCOUNT_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_MAX_KEY_FILE = 64 * 1024


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
    keys_dir: Path = DEFAULT_KEYS_DIR  # root-owned: one authorized_keys file per account
    chroot_dir: Path = DEFAULT_CHROOT_DIR  # private mode: one root per account

    @property
    def authorized_keys_file(self) -> Path:
        return self.keys_dir / self.account

    @property
    def chroot(self) -> Path | None:
        """Private mode: the account's own root (its /tmp holds the socket)."""
        return self.chroot_dir / self.account if self.mode == "private" else None

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
        """The sshd_config drop-in's text (rendering.dropin_text)."""
        return dropin_text(self)


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
    keys_dir: Path = DEFAULT_KEYS_DIR,
    chroot_dir: Path = DEFAULT_CHROOT_DIR,
) -> RelayPlan:
    """What the relay needs for one runtime; raises ConfigError/KeyFileError on bad input."""
    for flag, folder in (("--keys-dir", keys_dir), ("--chroot-dir", chroot_dir)):
        if not SOCKET_PATH_RE.match(str(folder)) or str(folder).startswith("/tmp/"):
            raise ConfigError(
                f"{flag} '{_short(str(folder))}' must be an absolute path of letters, digits and "
                f"'._/+-' outside /tmp (sshd wants every part of it owned by root). Fix: use "
                f"the default"
            )
    if not _ACCOUNT_RE.match(account) or account == "root":
        raise ConfigError(
            f"--account '{account}' is not a usable account name. Fix: use lower-case letters, "
            f"digits, '-' or '_' (at most 32), e.g. {DEFAULT_ACCOUNT}"
        )
    problem = runtime_name_problem(name)
    if problem is not None:
        raise ConfigError(
            f"--name '{name}' is not a valid runtime name: it {problem}. Fix: use the "
            f"runtime's 'name' field (default {DEFAULT_NAME})"
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
        settings = public_settings(remote_port, keys_dir)
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
        if not RELAY_SETUP_SOCKET_RE.match(sock):
            raise ConfigError(
                f"--socket-path '{_short(sock)}' must be a file name in /tmp (letters, digits "
                f"and '._+-'): the account's sockets live in its own /tmp, the one folder it "
                f"may write. Fix: use e.g. /tmp/handy-colab-{account}-{name}.sock"
            )
        settings = private_settings(sock, keys_dir, chroot_dir)
        options = f'restrict,port-forwarding,permitopen="[{sock}]:*"'

    return RelayPlan(
        account=account,
        name=name,
        mode=mode,  # type: ignore[arg-type]
        runtime_key=runtime_key,
        laptop_keys=tuple(laptops),
        remote_port=remote_port if mode == "public" else None,
        socket_path=sock,
        settings=settings,
        authorized_keys=authorized_keys_lines(options, (runtime_key, *laptops), name),
        account_commands=account_commands(
            account, keys_dir, chroot_dir if mode == "private" else None
        ),
        notes=notes(mode, account, name, remote_port, sock, bool(laptops)),
        keys_dir=keys_dir,
        chroot_dir=chroot_dir,
    )
