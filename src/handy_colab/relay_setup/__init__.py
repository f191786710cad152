"""A locked-down relay: the account, keys and sshd settings a VPS running OpenSSH needs.

``make_plan()`` turns relay-setup's options into a plan (account commands, authorized_keys
lines, an sshd_config drop-in with one ``Match User`` block); ``render()`` prints it for
people; ``apply()`` carries it out as root on the relay and validates it with the relay's
own ``sshd``. Nothing here reloads sshd.

The parts, each about one thing:

- sshd_settings.py  the Match block's settings and the OpenSSH 9.2 facts they rest on
- planning.py       inputs checked, decisions made (``make_plan``, ``RelayPlan``)
- rendering.py      the plan's text: commands, authorized_keys lines, drop-in, notes
- host.py           the relay as found: accounts, the Include, ``sshd -T``, reloading
- applying.py       the changes, in order, with the drop-in put back on failure
"""

from __future__ import annotations

from .applying import ApplyResult, apply
from .host import (
    Account,
    check_account,
    create_account,
    effective,
    find_sshd,
    included,
    lookup_account,
    reload_command,
)
from .planning import DEFAULT_ACCOUNT, DEFAULT_NAME, Mode, RelayPlan, make_plan, read_key
from .rendering import GECOS, MARK, merge_authorized_keys, render
from .sshd_settings import (
    DEFAULT_CHROOT_DIR,
    DEFAULT_KEYS_DIR,
    DEFAULT_SSHD_CONFIG,
    DEFAULT_SSHD_CONFIG_DIR,
    NOLOGIN,
    Setting,
)

__all__ = [
    "DEFAULT_ACCOUNT",
    "DEFAULT_CHROOT_DIR",
    "DEFAULT_KEYS_DIR",
    "DEFAULT_NAME",
    "DEFAULT_SSHD_CONFIG",
    "DEFAULT_SSHD_CONFIG_DIR",
    "GECOS",
    "MARK",
    "NOLOGIN",
    "Account",
    "ApplyResult",
    "Mode",
    "RelayPlan",
    "Setting",
    "apply",
    "check_account",
    "create_account",
    "effective",
    "find_sshd",
    "included",
    "lookup_account",
    "make_plan",
    "merge_authorized_keys",
    "read_key",
    "reload_command",
    "render",
]
