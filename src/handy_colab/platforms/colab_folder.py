"""The files of a config folder built from Colab's secrets, and what a base folder lends it.

colab_secrets.py decides what goes in; this module knows the folder's file names, which
files of a base folder (a Drive folder, say) hold keys, what is copied from it, and what
an earlier build left behind. Keys are told apart by content, as config.py finds them.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Literal

from ..config import CONFIG_FILE, RELAY_KNOWN_HOSTS
from ..errors import KeyFileError
from ..fsutil import atomic_write
from ..keys import _MAX_KEY_FILE, HOST_KEY_DIR, load_private_key, load_public_keys
from ..tunnels.cloudflared_config import DEFAULT_TOKEN_FILE

log = logging.getLogger(__name__)

RELAY_KEY_FILE = "relay_key"
PUBLIC_KEYS_FILE = "authorized_keys.pub"
TOKEN_FILE = DEFAULT_TOKEN_FILE

# Tool-owned state, not keys: copied from the base folder (with its host_keys/) so the relay's
# and the runtime's host keys stay pinned across runtimes; a fresh local folder would learn
# the relay's key anew on first use and present a new host key to the laptop.
PINS = (RELAY_KNOWN_HOSTS,)


def base_keys(base: Path, *, private: bool) -> list[Path]:
    """The base folder's regular files holding private (or public) keys, by content."""
    want = "private" if private else "public"
    return [
        entry
        for entry in sorted(base.iterdir())
        if entry.name != CONFIG_FILE
        and entry.name not in PINS
        and not entry.name.startswith(".")
        and _key_kind(entry) == want
    ]


def _key_kind(path: Path) -> Literal["private", "public"] | None:
    """What kind of key ``path`` holds, judged as config.py's folder scan judges it."""
    try:
        # As in keys.scan_folder: a big file is no key, and reading a checkpoint from Drive
        # to find that out would take minutes.
        if not path.is_file() or path.stat().st_size > _MAX_KEY_FILE:
            return None
    except OSError:
        return None
    try:
        if load_private_key(path) is not None:
            return "private"
    except KeyFileError:
        # Encrypted: still the relay key's file; load_config names the problem and its fix.
        return "private"
    return "public" if load_public_keys(path) else None


def copy_files(paths: list[Path], dest: Path) -> set[str]:
    """Copy ``paths`` into ``dest`` (mode 0600); return the names written."""
    for path in paths:
        atomic_write(dest / path.name, path.read_bytes(), 0o600)
    return {p.name for p in paths}


def copy_host_keys(base: Path, dest: Path) -> None:
    src = base / HOST_KEY_DIR
    if not src.is_dir():
        return
    target = dest / HOST_KEY_DIR
    target.mkdir(mode=0o700, exist_ok=True)
    os.chmod(target, 0o700)
    for entry in src.iterdir():
        if entry.is_file():
            atomic_write(target / entry.name, entry.read_bytes(), 0o600)


def remove_stale_keys(dest: Path, keep: set[str]) -> None:
    """Remove key files an earlier call left in ``dest``.

    config.py finds keys by content, so a stale relay key beside the new one would make the
    folder ambiguous ("several private keys") or authorize a key the user has dropped.
    """
    for entry in dest.iterdir():
        if entry.name in keep or entry.name in PINS:
            continue
        if entry.name == TOKEN_FILE or _key_kind(entry) is not None:
            log.info("removing stale key file %s", entry)
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
