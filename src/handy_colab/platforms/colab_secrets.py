"""A config folder made from Colab's secrets, so nothing private has to sit on Drive.

``folder_from_colab_secrets`` reads the HANDY_COLAB_* secrets, checks each value (one-line
errors that name the secret, never its value), adapts the config to the file names the
folder uses, and writes the folder; colab_folder.py holds those file names and what is
taken from a base folder.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from ..config import CONFIG_FILE
from ..configfields import parse_config_text
from ..errors import ConfigError, KeyFileError, PlatformError
from ..fsutil import atomic_write
from ..keys import load_private_key, parse_public_key_line
from .colab import google_colab_or_error
from .colab_folder import (
    PINS,
    PUBLIC_KEYS_FILE,
    RELAY_KEY_FILE,
    TOKEN_FILE,
    base_keys,
    copy_files,
    copy_host_keys,
    remove_stale_keys,
)

log = logging.getLogger(__name__)

SECRET_CONFIG = "HANDY_COLAB_CONFIG"  # the text of user_config.json
SECRET_RELAY_KEY = "HANDY_COLAB_RELAY_KEY"  # the relay's private key (PEM/OpenSSH text)
SECRET_PUBLIC_KEYS = "HANDY_COLAB_PUBLIC_KEYS"  # the laptop's public key line(s)
SECRET_CLOUDFLARED_TOKEN = "HANDY_COLAB_CLOUDFLARED_TOKEN"  # a named tunnel's token

_SECRETS_FIX = "add it in Colab's Secrets panel (key icon) and enable notebook access"


def folder_from_colab_secrets(dest: Path, *, base: Path | None = None) -> Path:
    """Build a config folder in ``dest`` from Colab's secrets; return ``dest``.

    ``user_config.json`` comes from the HANDY_COLAB_CONFIG secret, else from ``base``; the
    relay key and the public keys come from their secrets, else from ``base``'s key files.
    ``dest`` is made private (0700, files 0600). Secret values never reach a message or log.
    Must run in the notebook's kernel process: Colab answers secret requests only there.
    """
    userdata = google_colab_or_error(
        "userdata",
        f"read the Colab secrets {SECRET_CONFIG}, {SECRET_RELAY_KEY} and {SECRET_PUBLIC_KEYS}",
    )
    config_text = _get_secret(userdata, SECRET_CONFIG)
    relay_text = _get_secret(userdata, SECRET_RELAY_KEY)
    public_text = _get_secret(userdata, SECRET_PUBLIC_KEYS)
    token_text = _get_secret(userdata, SECRET_CLOUDFLARED_TOKEN)
    base_dir = base if base is not None and base.is_dir() else None
    base_note = f" and {base} is not a folder" if base is not None and base_dir is None else ""
    have_public = public_text is not None or bool(
        base_dir is not None and base_keys(base_dir, private=False)
    )

    # The config: parsed now so a mistake names the secret (or base file), not our copy.
    config_raw: bytes
    if config_text is not None:
        config_raw = config_text.encode()
        config_where = f"secret {SECRET_CONFIG}"
    elif base_dir is not None and (base_dir / CONFIG_FILE).is_file():
        config_raw = (base_dir / CONFIG_FILE).read_bytes()
        config_where = str(base_dir / CONFIG_FILE)
    elif have_public and relay_text is None:
        # Just the laptop's key (no relay key either): a cloudflared quick tunnel, no account.
        config_raw = b"{}\n"
        config_where = f"defaults (no {SECRET_CONFIG}: a cloudflared quick tunnel)"
    else:
        where = f" and {base_dir / CONFIG_FILE} does not exist" if base_dir else base_note
        raise PlatformError(
            f"Colab secret {SECRET_CONFIG} is not set (or empty){where}. Fix: {_SECRETS_FIX} "
            f"(its value: the content of {CONFIG_FILE})"
        )
    config_data = _parse_config(config_raw, config_where)

    relay_key: bytes | None = None
    names_relay = bool(config_data.get("tunnel_options") or config_data.get("relay"))
    if relay_text is not None:
        relay_key = _normalize_private_key(relay_text)
        if b"PRIVATE KEY-----" not in relay_key:
            raise _not_a_private_key()
    elif names_relay and (base_dir is None or not base_keys(base_dir, private=True)):
        where = f" and {base_dir} holds no private key" if base_dir else base_note
        raise PlatformError(
            f"Colab secret {SECRET_RELAY_KEY} is not set (or empty){where}. Fix: {_SECRETS_FIX} "
            f"(its value: the relay's private key file, BEGIN to END line)"
        )

    public_lines: list[str] | None = None
    if public_text is not None:
        public_lines = _public_key_lines(public_text)

    config_data, changed = _adapt_config(
        config_data,
        config_where,
        relay_from_secret=relay_key is not None and names_relay,
        public_from_secret=public_lines is not None,
    )
    if token_text is not None:
        section = config_data.get("cloudflared")
        if not isinstance(section, dict) or not section.get("hostname"):
            raise PlatformError(
                f"Colab secret {SECRET_CLOUDFLARED_TOKEN} is set, but the config "
                f"({config_where}) names no cloudflared.hostname. Fix: add "
                f'"cloudflared": {{"hostname": "<your tunnel\'s hostname>"}} to the config, or '
                f"delete the secret for a quick tunnel"
            )
        if section.get("token_file") not in (None, TOKEN_FILE):
            section["token_file"] = TOKEN_FILE
            changed = True

    dest.mkdir(mode=0o700, parents=True, exist_ok=True)
    # mkdir's mode is filtered by the umask and ignored for an existing folder.
    os.chmod(dest, 0o700)
    written: set[str] = set()
    if relay_key is not None:
        _write_relay_key(dest / RELAY_KEY_FILE, relay_key)
        written.add(RELAY_KEY_FILE)
    elif base_dir is not None:
        written |= copy_files(base_keys(base_dir, private=True), dest)
    if public_lines is not None:
        atomic_write(dest / PUBLIC_KEYS_FILE, "".join(f"{line}\n" for line in public_lines), 0o600)
        written.add(PUBLIC_KEYS_FILE)
    elif base_dir is not None:
        written |= copy_files(base_keys(base_dir, private=False), dest)
    if token_text is not None:
        atomic_write(dest / TOKEN_FILE, token_text.strip() + "\n", 0o600)
        written.add(TOKEN_FILE)
    if base_dir is not None:
        pins = [base_dir / n for n in PINS if (base_dir / n).is_file()]
        if token_text is None and (base_dir / TOKEN_FILE).is_file():
            pins.append(base_dir / TOKEN_FILE)
        written |= copy_files(pins, dest)
        copy_host_keys(base_dir, dest)

    if changed:
        atomic_write(dest / CONFIG_FILE, json.dumps(config_data, indent=4) + "\n", 0o600)
    else:
        # Unchanged: the user's bytes exactly, so nothing of theirs is reformatted or lost.
        atomic_write(dest / CONFIG_FILE, config_raw, 0o600)
    written.add(CONFIG_FILE)
    remove_stale_keys(dest, keep=written)
    log.info(
        "config folder %s made from Colab secrets: config from %s, relay key from %s, "
        "public keys from %s",
        dest,
        config_where,
        f"secret {SECRET_RELAY_KEY}" if relay_key is not None else base_dir,
        f"secret {SECRET_PUBLIC_KEYS}" if public_lines is not None else (base_dir or "config"),
    )
    return dest


def _get_secret(userdata: Any, name: str) -> str | None:
    """The secret's value; None when it does not exist (or is blank)."""
    # Looked up on the module, not imported by name: another google.colab version may lack
    # one of them, and then only the generic branch below catches its errors.
    not_found = getattr(userdata, "SecretNotFoundError", None)
    no_access = getattr(userdata, "NotebookAccessError", None)
    timeout = getattr(userdata, "TimeoutException", None)
    try:
        value = userdata.get(name)
    except Exception as exc:
        # Only the exception's type is reported: its text could in principle echo the value.
        if isinstance(no_access, type) and isinstance(exc, no_access):
            raise PlatformError(
                f"Colab secret {name}: this notebook has no access to it. Fix: open Colab's "
                f"Secrets panel (key icon) and enable notebook access for {name}"
            ) from None
        if isinstance(timeout, type) and isinstance(exc, timeout):
            raise PlatformError(
                f"Colab secret {name}: timed out waiting for access to be granted. Fix: run "
                f"again and allow access when Colab asks, or {_SECRETS_FIX}"
            ) from None
        if isinstance(not_found, type) and isinstance(exc, not_found):
            return None
        raise PlatformError(
            f"Colab secret {name}: could not be read ({type(exc).__name__}). Fix: {_SECRETS_FIX}"
        ) from None
    if not isinstance(value, str) or not value.strip():
        return None
    return value


def _parse_config(raw: bytes, where: str) -> dict[str, Any]:
    data = parse_config_text(raw, where)
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be a JSON object. Fix: use {{...}}")
    return data


def _normalize_private_key(text: str) -> bytes:
    """The key as a file would hold it.

    A key pasted into a one-line field may arrive with its line breaks turned into spaces;
    OpenSSH and cryptography need the lines back, and a final newline.
    """
    text = text.replace("\r\n", "\n").strip()
    match = re.fullmatch(
        r"(-----BEGIN [A-Z0-9 ]+-----)\s+(.+?)\s+(-----END [A-Z0-9 ]+-----)", text, re.DOTALL
    )
    if match and "\n" not in match.group(2).strip():
        text = "\n".join([match.group(1), *match.group(2).split(), match.group(3)])
    return (text + "\n").encode()


def _not_a_private_key(detail: str = "does not look like a private key") -> PlatformError:
    return PlatformError(
        f"Colab secret {SECRET_RELAY_KEY}: {detail}. Fix: paste the relay's private key "
        f"file (from -----BEGIN to the -----END line, not the .pub) as its value"
    )


def _write_relay_key(path: Path, data: bytes) -> None:
    atomic_write(path, data, 0o600)
    try:
        key = load_private_key(path)
    except KeyFileError:
        path.unlink()
        raise _not_a_private_key(
            "is protected by a passphrase, and the tunnel cannot prompt for it"
        ) from None
    if key is None:
        path.unlink()
        raise _not_a_private_key()


def _public_key_lines(text: str) -> list[str]:
    if "PRIVATE KEY" in text:
        raise PlatformError(
            f"Colab secret {SECRET_PUBLIC_KEYS}: holds a private key. Fix: delete that secret "
            f"now and add the public key line(s) instead (the .pub file's content)"
        )
    lines: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key = parse_public_key_line(stripped, SECRET_PUBLIC_KEYS)
        if key is None:
            raise PlatformError(
                f"Colab secret {SECRET_PUBLIC_KEYS}: line {number} is not an SSH public key "
                f"(options are not supported). Fix: put one 'ssh-ed25519 AAAA... comment' "
                f"line per key, as in your .pub file"
            )
        lines.append(key.line)
    if not lines:
        raise PlatformError(
            f"Colab secret {SECRET_PUBLIC_KEYS}: holds no SSH public key. Fix: paste the "
            f"content of your laptop's .pub file (e.g. ~/.ssh/id_ed25519.pub)"
        )
    return lines


def _adapt_config(
    data: dict[str, Any], where: str, *, relay_from_secret: bool, public_from_secret: bool
) -> tuple[dict[str, Any], bool]:
    """The config with file names that point at keys now stored under our names.

    Only what would otherwise break is changed: the config works on the user's original
    folder, and every change here has to keep meaning the same thing.
    """
    changed = False
    relay = data.get("relay")
    relay = relay if isinstance(relay, dict) else None
    if relay_from_secret:
        named = relay.get("key") if relay else None
        has_user = bool(relay and isinstance(relay.get("user"), str) and relay["user"].strip())
        if isinstance(named, str) and named != RELAY_KEY_FILE:
            assert relay is not None
            relay["key"] = RELAY_KEY_FILE
            if not has_user:
                # The relay user defaults to the key file's name up to the first dot; keep it.
                relay["user"] = Path(named).name.split(".", 1)[0]
            changed = True
        elif named is None and not has_user:
            raise PlatformError(
                f"Colab secret {SECRET_RELAY_KEY}: the relay user is unknown (without "
                f"'relay.user' it is taken from the key file's name, <user>.<config>.pem, "
                f'and a secret has none). Fix: add "relay": {{"user": "<user>"}} to '
                f"the config ({where})"
            )
    server = data.get("server")
    entries = server.get("authorized_keys") if isinstance(server, dict) else None
    if public_from_secret and isinstance(entries, list):
        # File names stood for the user's .pub files; the secret's keys replace those.
        new: list[Any] = []
        for entry in entries:
            is_file = isinstance(entry, str) and parse_public_key_line(entry, "config") is None
            value = PUBLIC_KEYS_FILE if is_file else entry
            if value not in new:
                new.append(value)
        if new != entries:
            assert isinstance(server, dict)
            server["authorized_keys"] = new
            changed = True
    return data, changed
