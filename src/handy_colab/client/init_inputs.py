"""`init`'s inputs: checks that name the flag and say the fix, and the laptop's own key
(found in ~/.ssh as ssh would pick it, or made, never over an existing file)."""

from __future__ import annotations

import getpass
import logging
import os
import re
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..choices import RELAY_SETUP_SOCKET_RE, runtime_name_problem
from ..config import SOCKET_PATH_RE
from ..errors import ConfigError, KeyFileError
from ..fsutil import atomic_write
from ..keys import (
    PrivateKey,
    _generate_ed25519,
    holds_private_key,
    load_private_key,
    parse_public_key_line,
    private_in_pub_error,
)

log = logging.getLogger(__name__)
DEFAULT_KEYS = ("id_ed25519", "id_ecdsa", "id_rsa")  # the order ssh itself prefers them


@dataclass(frozen=True)
class LaptopKey:
    private: Path
    public_line: str  # "" while it is still to be made
    made: bool = False  # write_init makes it (none was found)


def bad(what: str, problem: str, fix: str) -> ConfigError:
    return ConfigError(f"{what}: {problem}. Fix: {fix}")


def check_port(value: str | int, flag: str, allow_zero: bool = False) -> int:
    text = str(value).strip()
    low = 0 if allow_zero else 1
    if not re.fullmatch(r"[0-9]{1,5}", text) or not low <= int(text) <= 65535:
        raise bad(f"{flag} {text!r}", f"not a port number {low}-65535", f"pass e.g. {flag} 2222")
    return int(text)


def check_host(value: str, flag: str) -> str:
    text = value.strip()
    if not re.fullmatch(r"[A-Za-z0-9._:-]{1,253}", text) or text.startswith("-"):
        raise bad(
            f"{flag} {text!r}", "not a host name or IP address", f"pass e.g. {flag} vps.example.org"
        )
    return text


def split_host_port(
    value: str, flag: str, port_flag: str, port_given: str | None
) -> tuple[str, int | None]:
    """``HOST[:PORT]`` (``[IPv6]:PORT`` too) as (host, port or None), each checked.

    ``HOST:PORT`` is an address ssh (or frpc) connects to, so PORT is ``port_flag``'s port:
    taken when that flag is not given (or says the same), refused when it says another, so
    nothing is accepted here that fails later.
    """
    text = value.strip()
    host, port_text = text, None
    bracketed = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(.*))?", text)
    if bracketed:
        host, port_text = bracketed.group(1), bracketed.group(2)
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    # More colons without brackets: an IPv6 address, no port.
    host = check_host(host, flag)
    if port_text is None:
        return host, None
    port = check_port(port_text, flag)
    if port_given is not None and check_port(port_given, port_flag) != port:
        raise bad(
            f"{flag} {text!r}",
            f"names port {port}, and {port_flag} says {port_given}",
            f"give the port once: {flag} {host} {port_flag} PORT",
        )
    return host, port


def check_choice(value: str, flag: str, choices: tuple[str, ...]) -> str:
    text = value.strip().lower()
    if text not in choices:
        raise bad(f"{flag} {value!r}", "not a known choice", f"use one of: {', '.join(choices)}")
    return text


def check_name(value: str) -> str:
    problem = runtime_name_problem(value)
    if problem is not None:
        raise bad(f"--name {value!r}", f"not a valid runtime name: it {problem}", "use e.g. colab")
    return value


def check_user(value: str, flag: str) -> str:
    text = value.strip()
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}", text):
        raise bad(f"{flag} {text!r}", "not an account name", f"pass e.g. {flag} handy-colab")
    return text


def check_socket_path(value: str) -> str:
    if not SOCKET_PATH_RE.match(value):
        raise bad(
            f"--socket-path {value!r}",
            "not an absolute path of letters, digits and '._/+-'",
            "pass e.g. --socket-path /tmp/handy-colab-me-colab.sock",
        )
    if not RELAY_SETUP_SOCKET_RE.match(value):
        log.warning(
            "--socket-path %s: a relay set up by `handy-colab relay-setup` accepts only a file "
            "in /tmp (its account's one writable folder), e.g. /tmp/handy-colab-me-colab.sock",
            value,
        )
    return value


def check_file(value: str | Path, flag: str) -> Path:
    path = Path(value).expanduser()
    try:
        with path.open("rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise bad(
            f"{flag} {path}", f"cannot read it ({exc.strerror})", "pass an existing, readable file"
        ) from None
    return path.absolute()


def check_private_key(value: str | Path, flag: str) -> PrivateKey:
    """A key file the runtime will use unattended: unencrypted, and a private key."""
    path = check_file(value, flag)
    key = load_private_key(path)  # KeyFileError for a passphrase: the runtime cannot type it
    if key is None:
        raise KeyFileError(
            f"{flag} {path}: not an SSH private key. Fix: pass the private key file (not the .pub)"
        )
    return key


def check_host_key(value: str, flag: str) -> str:
    """A pinned host key: a key line, a `ssh-keyscan` line, or a file holding either."""
    text = value.strip()
    path = Path(text).expanduser()
    if "\n" not in text and path.is_file():
        text = path.read_text(errors="replace")
    for line in text.splitlines():
        parts = line.split()
        for start in (0, 1):  # ssh-keyscan and known_hosts lines start with the host
            key = parse_public_key_line(" ".join(parts[start:]), "init")
            if key is not None:
                return key.blob
    raise bad(
        f"{flag} {value[:60]!r}",
        "holds no SSH public key",
        "paste the relay's key as 'ssh-ed25519 AAAA...' (from `ssh-keyscan HOST`) or give a file",
    )


def check_frp_token(path: Path) -> bytes:
    value = path.read_bytes().decode(errors="replace").strip()
    if not value or any(c in value for c in '\r\n\0"\\'):
        raise bad(
            f"--frp-token {path}", "not one line without quotes", "pass frps-setup's frp_token file"
        )
    return (value + "\n").encode()


def check_frp_ca(path: Path) -> bytes:
    from cryptography import x509

    data = path.read_bytes()
    try:
        x509.load_pem_x509_certificate(data)
    except ValueError:
        raise bad(
            f"--frp-ca {path}",
            "not a PEM certificate",
            "pass frps-setup's runtime/frps_ca.pem (or frps's own self-signed certificate)",
        ) from None
    return data


def portmap_user(pem: Path) -> str:
    return pem.name.split(".", 1)[0]


def find_laptop_key(explicit: Path | None, home: Path) -> LaptopKey:
    """--key, else ~/.ssh/id_ed25519, id_ecdsa, id_rsa; else a new ed25519 key to make."""
    if explicit is not None:
        priv = explicit.expanduser()
        if priv.suffix == ".pub":
            if holds_private_key(priv):
                raise private_in_pub_error(priv)
            priv = priv.with_suffix("")
        return _existing_key(priv.absolute(), "--key")
    ssh_dir = home / ".ssh"
    for name in DEFAULT_KEYS:
        if (ssh_dir / name).exists():
            return _existing_key(ssh_dir / name, "laptop key")
    target = ssh_dir / DEFAULT_KEYS[0]
    if target.with_name(target.name + ".pub").exists():
        raise KeyFileError(
            f"{target}.pub: exists without its private key, and init never overwrites a key. "
            f"Fix: move it away, or pass --key with your private key"
        )
    return LaptopKey(target, "", made=True)


def _existing_key(priv: Path, what: str) -> LaptopKey:
    pub = priv.with_name(priv.name + ".pub")
    if not priv.is_file():
        raise KeyFileError(
            f"{what} {priv}: no such private key file. Fix: pass --key with your private key "
            f"(ssh logs in with it; only its .pub is copied)"
        )
    derived: str | None = None
    try:
        loaded = load_private_key(priv)
        derived = loaded.public_line if loaded is not None else None
        readable = loaded is not None
    except KeyFileError:
        readable = True  # a passphrase: fine on the laptop, where ssh can ask for it
    if not readable and not os.access(priv, os.R_OK):
        raise KeyFileError(f"{what} {priv}: cannot read it. Fix: check the file's permissions")
    if not readable:
        raise KeyFileError(f"{what} {priv}: not an SSH private key. Fix: pass the private key file")
    line: str | None = None
    if pub.is_file():
        text = pub.read_text(errors="replace").strip()
        if "PRIVATE KEY" in text:
            raise private_in_pub_error(pub)
        parsed = parse_public_key_line(text.splitlines()[0] if text else "", pub.name)
        if parsed is None:
            raise KeyFileError(
                f"{pub}: not an SSH public key. Fix: remake it with "
                f"`ssh-keygen -y -f {priv} > {pub}`"
            )
        if derived is not None and parsed.blob != " ".join(derived.split()[:2]):
            raise KeyFileError(
                f"{pub}: is not the public half of {priv.name}. Fix: remake it with "
                f"`ssh-keygen -y -f {priv} > {pub}`"
            )
        line = parsed.line
    elif derived is not None:
        line = derived
    if line is None:
        raise KeyFileError(
            f"{priv}: protected by a passphrase and has no {pub.name} beside it. Fix: "
            f"make it with `ssh-keygen -y -f {priv} > {pub}`, or pass --key"
        )
    return LaptopKey(priv, line)


def make_laptop_key(target: Path) -> LaptopKey:
    """A new ed25519 key at ``target`` (0600, .pub beside it), never over an existing file.

    Made in a private temporary folder beside it and linked into place: a link fails when
    the name exists, so a key that appeared meanwhile is never replaced.
    """
    ssh_dir = target.parent
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".handy-colab-init-", dir=ssh_dir))
    try:
        priv, pub = tmp / target.name, tmp / (target.name + ".pub")
        comment = f"{_user()}@{socket.gethostname()}"  # what ssh-keygen itself writes
        keygen = shutil.which("ssh-keygen")
        if keygen:
            subprocess.run(
                [keygen, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(priv)],
                check=True,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=30,
            )
        else:
            data, line = _generate_ed25519()
            atomic_write(priv, data, 0o600)
            atomic_write(pub, f"{line} {comment}\n", 0o644)
        os.chmod(priv, 0o600)
        try:
            os.link(priv, target)
            os.link(pub, target.with_name(pub.name))
        except FileExistsError:
            raise KeyFileError(
                f"{target}: appeared while init was making it; init never overwrites a key. "
                f"Fix: run init again (it will use that key)"
            ) from None
    except (OSError, subprocess.SubprocessError) as exc:
        raise KeyFileError(
            f"{target}: cannot make a new SSH key ({exc}). Fix: make one yourself with "
            f"`ssh-keygen -t ed25519`, or pass --key"
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    made = _existing_key(target, "new key")
    return LaptopKey(made.private, made.public_line, made=True)


def _user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no passwd entry and no $USER (some containers)
        return "me"
