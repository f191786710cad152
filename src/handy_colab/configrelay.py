"""The config's relay section, read with the seed's fallbacks: the relay host and port from
``tunnel_options``, the key found by content, the relay user from the key's file name."""

from __future__ import annotations

from pathlib import Path

from .configfields import Fields
from .configmodel import CONFIG_FILE, SOCKET_PATH_RE, RelayConfig
from .errors import ConfigError, KeyFileError
from .keys import FolderKeys, PrivateKey, load_private_key, parse_public_key_line


def parse_relay(
    folder: Path, relay_f: Fields, seed: Fields, scan: FolderKeys, mode: str, run_name: str
) -> RelayConfig:
    # Keys: by content, as the seed did; the superset may name them explicitly.
    key_name = relay_f.str_("key")
    if key_name is not None:
        relay_key = named_private_key(folder, key_name, relay_f)
    else:
        if not scan.private:
            if scan.encrypted_errors:
                raise scan.encrypted_errors[0]
            raise ConfigError(
                f"{folder}: no private key found for logging into the relay. Fix: "
                f"put the relay's private key file (e.g. <user>.first.pem) in "
                f"the folder, or name it in {CONFIG_FILE} field 'relay.key'"
            )
        if len(scan.private) > 1:
            names = ", ".join(k.path.name for k in scan.private)
            raise relay_f.error(
                "key",
                f"is not set and the folder holds several private keys ({names})",
                f'name the relay key, e.g. "key": "{scan.private[0].path.name}"',
            )
        relay_key = scan.private[0]

    host = relay_f.str_("host") or seed.str_("service_url")
    if host is None:
        raise relay_f.error(
            "host",
            "is missing",
            '"relay": {"host": "relay.example.org"} '
            '(or the seed\'s "tunnel_options": {"service_url": ...})',
        )
    # 0: the relay picks a free port (public mode; tunnels/relayport.py), so several
    # runtimes can share one relay account without agreeing on ports. The seed's
    # service_port stays 1-65535 (its frp reading takes it as frps's port).
    remote_port = relay_f.port("remote_port", allow_zero=True)
    if remote_port is None:
        remote_port = seed.port("service_port")
    # Private mode forwards to a Unix socket: no port on the relay is needed.
    if remote_port is None and mode == "private":
        remote_port = 0
    if remote_port is None:
        raise relay_f.error(
            "remote_port",
            "is missing",
            "set the port the relay forwards, e.g. "
            '"relay": {"remote_port": 2222} (or the seed\'s service_port)',
        )
    user = relay_f.str_("user") or relay_key.path.name.split(".", 1)[0]
    host_key = relay_f.str_("host_key")
    if host_key is not None:
        parsed = parse_public_key_line(host_key, "config")
        if parsed is None:
            raise relay_f.error(
                "host_key",
                "is not an SSH public key",
                'paste the relay\'s key as "ssh-ed25519 AAAA..." (from `ssh-keyscan HOST`)',
            )
        host_key = parsed.blob
    bind = relay_f.str_("bind_address")

    return RelayConfig(
        host=host,
        port=relay_f.port("port", 22) or 22,
        user=user,
        remote_port=remote_port,
        key=relay_key,
        host_key=host_key,
        public_host=relay_f.str_("public_host") or host,
        bind_address=bind,
        jump_user=relay_f.str_("jump_user") or user,
        socket_path=socket_path(relay_f, user, run_name),
    )


def socket_path(relay_f: Fields, user: str, name: str) -> str:
    path = relay_f.str_("socket_path") or f"/tmp/handy-colab-{user}-{name}.sock"
    if not SOCKET_PATH_RE.match(path):
        raise relay_f.error(
            "socket_path",
            f"'{path}' is not an absolute path of letters, digits and '._/+-'",
            'use e.g. "/tmp/handy-colab-me-colab.sock"',
        )
    return path


def named_private_key(folder: Path, key_name: str, relay_f: Fields) -> PrivateKey:
    path = (folder / key_name).expanduser()
    if not path.is_file():
        raise relay_f.error(
            "key",
            f"names {path}, which does not exist",
            "give the file name of the relay's private key in the folder",
        )
    try:
        key = load_private_key(path)
    except KeyFileError:
        raise
    if key is None:
        raise relay_f.error(
            "key",
            f"names {path}, which is not an SSH private key",
            "point it at the private key file (not the .pub)",
        )
    return key
