"""What the relay's sshd is told: where its config lives and the lines of the Match block.

The plan (planning.py) picks one of the two setting lists here by mode; the drop-in
(rendering.py) prints them with their reasons, and applying.py checks each one against
``sshd -T``. They live apart because every line rests on a measured OpenSSH 9.2 fact, and
these are the facts (tests/e2e/test_relay_setup.py, docs/relay.md):

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
  allows -L to that one socket and to nothing else. Nothing limits which path -R may bind:
  ``ChrootDirectory`` does. It applies to a forwarding-only account (MaxSessions 0, no
  shell): -R binds and -L targets resolve inside the chroot, and a bind anywhere but a
  directory the account owns there fails. ``AuthorizedKeysFile`` in a root-owned folder
  outside /tmp (StrictModes refuses /tmp) keeps the keys out of the account's reach.
- ``ClientAliveInterval 5``/``ClientAliveCountMax 2``: sshd 9.2 sends a keepalive every
  second interval and gives up after CountMax + 1 misses, so a frozen client is dropped
  ~30 s after it went quiet (10/3 measured 78-80 s).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_SSHD_CONFIG = Path("/etc/ssh/sshd_config")
DEFAULT_SSHD_CONFIG_DIR = Path("/etc/ssh/sshd_config.d")
# Root-owned, outside every account's reach: a relay key cannot rewrite (or, by binding a
# socket over it, destroy) the keys that let it in.
DEFAULT_KEYS_DIR = Path("/etc/ssh/handy-colab/authorized_keys")
# Private mode: each account's own root; its only writable directory is its /tmp.
DEFAULT_CHROOT_DIR = Path("/var/lib/handy-colab/relay")
# The account's shell and the ForceCommand: both must run nothing.
NOLOGIN = "/usr/sbin/nologin"


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


def _head(keys_dir: Path) -> tuple[Setting, ...]:
    return (
        Setting(
            "AuthorizedKeysFile",
            f"{keys_dir}/%u",
            "keys come only from the root-owned file relay-setup writes: the account "
            "cannot change them",
        ),
        Setting(
            "AuthenticationMethods",
            "publickey",
            "keys only: no password, no keyboard-interactive",
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


def public_settings(port: int, keys_dir: Path = DEFAULT_KEYS_DIR) -> tuple[Setting, ...]:
    """Public mode: one ``-R`` TCP listener (any free port from 1024 up for port 0)."""
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
        *_head(keys_dir),
        Setting("AllowTcpForwarding", "remote", "-R only: no -L, -D or -W through the relay"),
        listen,
        Setting("GatewayPorts", "yes", "the port listens on all addresses, for the laptop"),
        Setting("PermitOpen", "none", "no connection out of the relay"),
        Setting(
            "AllowStreamLocalForwarding", "no", "no Unix-socket forwarding (public mode is TCP)"
        ),
        *_LOCKDOWN,
    )


def private_settings(
    sock: str, keys_dir: Path = DEFAULT_KEYS_DIR, chroot_dir: Path = DEFAULT_CHROOT_DIR
) -> tuple[Setting, ...]:
    """Private mode: ``-R`` to the socket ``sock`` and ``-L`` to it, no TCP at all, in the
    account's own root."""
    return (
        *_head(keys_dir),
        Setting(
            "ChrootDirectory",
            f"{chroot_dir}/%u",
            "-R and -L socket paths resolve in the account's own root, where only /tmp is "
            "writable: no bind over any other file, nor another runtime's socket",
        ),
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
