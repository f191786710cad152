"""Key files: find them by content, check them, make and keep the runtime's host keys."""

from __future__ import annotations

import base64
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import KeyFileError
from .fsutil import atomic_write
from .keyformat import (
    OPENSSH_BEGIN,
    RSA_BEGIN,
    Encrypted,
    check_public_line,
    openssh_public_line,
    rsa_pem_public_line,
)

log = logging.getLogger(__name__)

# Larger files are certainly not keys; reading a 2 GB checkpoint from Drive would hang `up`.
_MAX_KEY_FILE = 64 * 1024
HOST_KEY_DIR = "host_keys"
HOST_KEY_NAME = "ssh_host_ed25519_key"


@dataclass(frozen=True)
class PrivateKey:
    path: Path
    data: bytes
    public_line: str  # "ssh-ed25519 AAAA..." with no comment


@dataclass(frozen=True)
class PublicKey:
    line: str  # "type base64 [comment]"
    source: str  # file name or "config"

    @property
    def blob(self) -> str:
        return " ".join(self.line.split()[:2])


def _public_line_of(priv: object) -> str:
    from cryptography.hazmat.primitives import serialization

    pub = priv.public_key()  # type: ignore[attr-defined]
    raw: bytes = pub.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return raw.decode()


def load_private_key(path: Path) -> PrivateKey | None:
    """Return the key if ``path`` holds an unencrypted private key; None if it is not a key.

    Raises KeyFileError for a key that needs a passphrase: ssh would prompt for it, and the
    tunnel must never prompt.
    """
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if b"PRIVATE KEY-----" not in data:
        return None
    line = _public_line_fast(path, data)
    if line is not None:
        return PrivateKey(path=path, data=data, public_line=line)
    # cryptography is imported here, not at module level: `connect` and the other laptop
    # commands never load a private key, and the import is a good part of their start-up.
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    loaders = (
        (b"BEGIN OPENSSH PRIVATE KEY", serialization.load_ssh_private_key),
        (b"PRIVATE KEY-----", serialization.load_pem_private_key),
    )
    for marker, loader in loaders:
        if marker not in data:
            continue
        try:
            priv = _load_unchecked(loader, data)
        except TypeError as exc:
            # cryptography says "Password was not given but private key is encrypted".
            if "encrypted" in str(exc).lower() or "password" in str(exc).lower():
                raise _passphrase_error(path) from None
            return None
        except (ValueError, UnsupportedAlgorithm):
            continue
        return PrivateKey(path=path, data=data, public_line=_public_line_of(priv))
    return None


def _public_line_fast(path: Path, data: bytes) -> str | None:
    """The two common formats without importing cryptography (keyformat.py says why)."""
    try:
        if OPENSSH_BEGIN in data:
            return openssh_public_line(data)
        if RSA_BEGIN in data:
            return rsa_pem_public_line(data)
    except Encrypted:
        raise _passphrase_error(path) from None
    return None


def _passphrase_error(path: Path) -> KeyFileError:
    return KeyFileError(
        f"{path}: private key is protected by a passphrase; the tunnel cannot "
        f"prompt for it. Fix: make an unencrypted copy with "
        f"`ssh-keygen -p -N '' -f {path.name}` (on a copy) and use that"
    )


def _load_unchecked(loader: Any, data: bytes) -> Any:
    """Load a key without cryptography's RSA consistency check.

    That check (about 0.1-0.2 s for one RSA key, and `up` and the supervisor each load the
    folder's keys) guards signatures made with the loaded object; we never sign with it: the
    key is only classified and its public half derived, while ssh and asyncssh load and check
    the file themselves before they use it.
    """
    try:
        return loader(data, password=None, unsafe_skip_rsa_key_validation=True)
    except TypeError as exc:
        if "unsafe_skip_rsa_key_validation" not in str(exc):
            raise
    # An older cryptography without the option for this loader (SSH-format keys before 45).
    return loader(data, password=None)


def parse_public_key_line(line: str, source: str) -> PublicKey | None:
    """Parse one authorized_keys-style line (no options supported); None if it is not a key."""
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    parts = line.split()
    if len(parts) < 2:
        return None
    known = check_public_line(parts[0], parts[1])
    if known is not None:
        return PublicKey(line=" ".join(parts[:3]), source=source) if known else None
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    try:
        serialization.load_ssh_public_key(f"{parts[0]} {parts[1]}".encode())
    except (ValueError, UnsupportedAlgorithm):
        return None
    return PublicKey(line=" ".join(parts[:3]), source=source)


def private_in_pub_error(path: Path) -> KeyFileError:
    """A ``*.pub`` file that holds a private key: a copy gone wrong, refused rather than
    read by its content (it would let the key in as a relay key, or skip it silently)."""
    key = path.with_suffix("")
    return KeyFileError(
        f"{path}: this is a private key, in a file named .pub. Fix: put the PUBLIC key "
        f"there, e.g. `ssh-keygen -y -f {key} > {path}` (with the private key at {key.name})"
    )


def load_public_keys(path: Path) -> list[PublicKey]:
    """All public keys in ``path`` (a .pub file or an authorized_keys file); [] if none.

    Raises KeyFileError for a ``*.pub`` that holds a private key."""
    try:
        if path.stat().st_size > _MAX_KEY_FILE:
            return []
        text = path.read_text(errors="replace")
    except OSError:
        return []
    if "PRIVATE KEY" in text:
        if path.suffix == ".pub":
            raise private_in_pub_error(path)
        return []
    keys = []
    for line in text.splitlines():
        key = parse_public_key_line(line, path.name)
        if key is not None:
            keys.append(key)
    return keys


@dataclass
class FolderKeys:
    private: list[PrivateKey]
    public: list[PublicKey]
    encrypted_errors: list[KeyFileError]


def scan_folder(folder: Path, skip: set[str]) -> FolderKeys:
    """Classify the regular files directly in ``folder`` by their content."""
    found = FolderKeys(private=[], public=[], encrypted_errors=[])
    for entry in sorted(folder.iterdir()):
        if entry.name in skip or entry.name.startswith(".") or not entry.is_file():
            continue
        try:
            if entry.stat().st_size > _MAX_KEY_FILE:
                continue
        except OSError:
            continue
        if entry.suffix == ".pub" and holds_private_key(entry):
            raise private_in_pub_error(entry)
        try:
            priv = load_private_key(entry)
        except KeyFileError as exc:
            found.encrypted_errors.append(exc)
            continue
        if priv is not None:
            found.private.append(priv)
            continue
        found.public.extend(load_public_keys(entry))
    return found


def holds_private_key(path: Path) -> bool:
    """Whether ``path`` holds a PEM private key's marker (a ``*.pub`` must not)."""
    try:
        with open(path, "rb") as fh:
            return b"PRIVATE KEY" in fh.read(_MAX_KEY_FILE)
    except OSError:
        return False


def fingerprint(public_line: str) -> str:
    """OpenSSH-style SHA256 fingerprint of a public key line."""
    import hashlib  # here: OpenSSL's start-up is not needed on the way to ready

    blob = base64.b64decode(public_line.split()[1])
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def _generate_ed25519() -> tuple[bytes, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    priv = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    return priv, _public_line_of(key)


def ensure_host_key(folder: Path) -> PrivateKey:
    """Return the runtime's host key kept in ``folder/host_keys``, making it on first use.

    Keeping it in the config folder (the user's Drive) is what lets a fresh runtime present
    the same host key, so the laptop's pinned known_hosts entry keeps matching.
    """
    key_dir = folder / HOST_KEY_DIR
    path = key_dir / HOST_KEY_NAME
    if path.exists():
        try:
            key = load_private_key(path)
        except KeyFileError:
            key = None
        if key is None:
            raise KeyFileError(
                f"{path}: not a usable unencrypted host key. Fix: move it away and run "
                f"`handy-colab up` again to make a new one (the laptop must then reconnect)"
            )
        return key
    priv, pub = _generate_ed25519()
    try:
        atomic_write(path, priv, mode=0o600)
        atomic_write(path.with_name(HOST_KEY_NAME + ".pub"), pub + " handy-colab-host\n")
    except OSError as exc:
        raise KeyFileError(
            f"{key_dir}: cannot save the runtime's host key ({exc.strerror}). Fix: make the "
            f"config folder writable, or copy it to a writable place and point `up` there"
        ) from None
    log.info("made a new host key %s in %s", fingerprint(pub), key_dir)
    return PrivateKey(path=path, data=priv, public_line=pub)


def private_copy(key: PrivateKey, dest: Path) -> Path:
    """Copy a private key to ``dest`` with mode 0600.

    A key on Drive or in a checkout is often group/world readable and ssh/sshd refuse such
    files; fixing our own copy instead of the user's file leaves theirs untouched.
    """
    atomic_write(dest, key.data, mode=0o600)
    os.chmod(dest, 0o600)
    return dest
