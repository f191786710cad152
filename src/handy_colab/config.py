"""The config folder: the seed's ``user_config.json`` plus a validated superset.

The seed format (handy-google-colab) keeps working unchanged::

    {"tunnel_options": {"service_url": "user-12345.portmap.host",
                        "service_port": 12345, "local_port": 12345},
     "python_packages": [...], "os_packages": [...]}

with the keys found in the folder by content: the private key logs into the relay as the
user named by its file name up to the first dot (``<user>.<config>.pem``), on port 22, and
the public key(s) may log into the runtime. See docs/config.md for the superset.
"""

from __future__ import annotations

import getpass
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .configfields import Fields, as_port, parse_config_text, typename
from .errors import ConfigError, KeyFileError
from .keys import (
    HOST_KEY_DIR,
    FolderKeys,
    PrivateKey,
    PublicKey,
    load_private_key,
    load_public_keys,
    parse_public_key_line,
    scan_folder,
)
from .tunnels.cloudflared_config import CloudflaredConfig, parse_cloudflared
from .tunnels.frp_config import FrpConfig, frp_from_seed, parse_frp

CONFIG_FILE = "user_config.json"
# The seed's README told users to upload the config under this name (its code read the other).
SEED_README_CONFIG_FILE = "mapping_config.json"
CONNECTIONS_DIR = "connections"
RELAY_KNOWN_HOSTS = "relay_known_hosts"
DEFAULT_NAME = "colab"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
# A relay socket path: it lands in ssh_config (ProxyCommand), sshd_config (PermitOpen [..]) and
# a quoted authorized_keys option, so only characters none of them would split or interpret.
SOCKET_PATH_RE = re.compile(r"^/[A-Za-z0-9._/+-]{1,200}$")
# Files the tool itself keeps in the folder; never mistaken for user keys.
_OWN_FILES = {
    CONFIG_FILE,
    SEED_README_CONFIG_FILE,
    RELAY_KNOWN_HOSTS,
    CONNECTIONS_DIR,
    HOST_KEY_DIR,
}

Mode = Literal["public", "private"]
# Which implementation runs a part: "auto" picks OpenSSH where it is usable, else embedded.
Backend = Literal["auto", "openssh", "embedded"]
BACKENDS = ("auto", "openssh", "embedded")
# How the laptop reaches the runtime: an SSH relay (`ssh -R`), or Cloudflare's edge.
Route = Literal["relay", "cloudflared", "frp"]
ROUTES = ("relay", "cloudflared", "frp")
# What `up --tunnel` takes: the relay route's two clients, or the cloudflared route.
TUNNEL_CHOICES = ("auto", "openssh", "embedded", "cloudflared", "frp")

_TOP_FIELDS = {
    "tunnel_options",
    "python_packages",
    "os_packages",
    "name",
    "mode",
    "relay",
    "server",
    "forwards",
    "route",
    "cloudflared",
    "frp",
}
_SEED_TUNNEL_FIELDS = {"service_url", "service_port", "local_port"}
_RELAY_FIELDS = {
    "host",
    "port",
    "user",
    "key",
    "host_key",
    "remote_port",
    "public_host",
    "bind_address",
    "jump_user",
    "socket_path",
    "client",
}
_SERVER_FIELDS = {"port", "authorized_keys", "kind", "workdir"}


@dataclass(frozen=True)
class RelayConfig:
    host: str
    port: int
    user: str
    remote_port: int
    key: PrivateKey
    host_key: str | None  # pinned "type base64"; None = record on first use
    public_host: str  # where the laptop connects in public mode
    bind_address: str | None
    jump_user: str  # account the laptop uses to reach the socket in private mode
    socket_path: str  # private mode: the Unix socket on the relay


@dataclass(frozen=True)
class RuntimeConfig:
    folder: Path
    name: str
    mode: Mode
    relay: RelayConfig | None  # None: the config names no relay
    server_port: int  # 0 = pick a free port on 127.0.0.1
    authorized_keys: tuple[PublicKey, ...]
    forwards: tuple[int, ...]
    python_packages: tuple[str, ...] = ()
    os_packages: tuple[str, ...] = ()
    login_user: str = field(default_factory=getpass.getuser)
    server_kind: Backend = "auto"
    tunnel_kind: Backend = "auto"  # the reverse-tunnel client (config field relay.client)
    workdir: str | None = None  # where sessions start; None = the notebook's directory
    route: Route = "relay"
    cloudflared: CloudflaredConfig = field(default_factory=CloudflaredConfig)
    frp: FrpConfig | None = None  # the config's frp section
    frp_seed: FrpConfig | None = None  # the seed's tunnel_options read as frp (FRPTunnel)
    notices: tuple[str, ...] = ()  # one-line remarks for `up` to show (not errors)

    @property
    def frp_settings(self) -> FrpConfig:
        """The frp route's settings; a clear error when the config has none."""
        found = self.frp or self.frp_seed
        if found is None:
            raise ConfigError(
                f'{self.folder / CONFIG_FILE}: has no "frp" section, so the frp route '
                f"cannot run. Fix: add one (see docs/frp.md)"
            )
        return found

    @property
    def ssh_relay(self) -> RelayConfig:
        """The relay, for the relay route's code; a clear error when the config has none."""
        if self.relay is None:
            raise ConfigError(
                f"{self.folder / CONFIG_FILE}: names no relay, so the relay route (ssh -R) "
                f'cannot run. Fix: add a "relay" section (see docs/config.md), or use the '
                f"cloudflared route (up --tunnel cloudflared)"
            )
        return self.relay

    @property
    def relay_known_hosts(self) -> Path:
        return self.folder / RELAY_KNOWN_HOSTS

    @property
    def connections_dir(self) -> Path:
        return self.folder / CONNECTIONS_DIR


def route_of_tunnel(tunnel: str | None) -> Route | None:
    """The route an ``up --tunnel`` choice implies (None: the config decides)."""
    routes: dict[str, Route] = {
        "frp": "frp",
        "cloudflared": "cloudflared",
        "openssh": "relay",
        "embedded": "relay",
    }
    return routes.get(tunnel or "")


def load_config(
    folder: str | Path, name: str | None = None, route: Route | None = None
) -> RuntimeConfig:
    """Read and validate the config folder. Raises ConfigError with a one-line message.

    ``route`` overrides the config's route (``up --tunnel``): the seed's tunnel_options are
    then read as that route needs them (FRPTunnel: as frps's address, no relay key needed).
    """
    forced_route: str | None = route
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise ConfigError(
            f"{folder}: config folder not found. Fix: pass the folder that "
            f"holds {CONFIG_FILE} and your keys (e.g. a mounted Drive folder)"
        )
    cfg_path, notices = _config_path(folder)
    try:
        raw = cfg_path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{cfg_path}: file not found. Fix: create it; see docs/config.md for a minimal example"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"{cfg_path}: cannot read it ({exc.strerror}). Fix: check the file's permissions"
        ) from None
    data = parse_config_text(raw, str(cfg_path))
    top = Fields(cfg_path, "", data, _TOP_FIELDS)
    seed = top.sub("tunnel_options", _SEED_TUNNEL_FIELDS)
    relay_f = top.sub("relay", _RELAY_FIELDS)
    server_f = top.sub("server", _SERVER_FIELDS)

    run_name = name or top.str_("name", DEFAULT_NAME) or DEFAULT_NAME
    if not NAME_RE.match(run_name):
        raise top.error(
            "name",
            f"'{run_name}' is not a valid runtime name",
            "use letters, digits, '.', '_' or '-' (it becomes an ssh Host alias)",
        )

    mode = top.str_("mode", "public")
    if mode not in ("public", "private"):
        raise top.error(
            "mode",
            f"'{mode}' is not a known access mode",
            'use "public" (the relay exposes the port) or "private" (ProxyJump)',
        )

    # The route: frp with an frp section; a relay when the config names one (the seed's
    # tunnel_options or a relay section); else a cloudflared quick tunnel (no account).
    relay_named = bool(relay_f.data) or bool(seed.data)
    frp_named = top.data.get("frp") is not None
    default = "frp" if frp_named else "relay" if relay_named else "cloudflared"
    chosen: str = forced_route or top.str_("route") or default
    if chosen not in ROUTES:
        raise top.error(
            "route",
            f"'{chosen}' is not a known route",
            'use "relay" (ssh -R to a relay), "cloudflared" (Cloudflare Tunnel) or "frp"',
        )
    if chosen != "relay" and not relay_named and top.has("mode"):
        raise top.error(
            "mode",
            "applies to the relay route only",
            "leave it out for a cloudflared tunnel (or add a relay section)",
        )
    scan = scan_folder(folder, skip=_OWN_FILES)
    frp = parse_frp(folder, top, run_name)
    # The seed's FRPTunnel read tunnel_options as an frps address: kept for `--tunnel frp`.
    frp_seed = frp_from_seed(seed, run_name) if frp is None else None
    relay = (
        _parse_relay(folder, relay_f, seed, scan, mode, run_name)
        if (relay_named or chosen == "relay") and not (chosen == "frp" and frp_seed)
        else None
    )
    # The seed authorized the relay key's public half when no .pub was given; without a
    # relay, the one private key in the folder (if any) plays that part.
    fallback = relay.key if relay else (scan.private[0] if len(scan.private) == 1 else None)
    authorized = _authorized_keys(folder, server_f, scan.public, fallback)

    forwards: list[int] = []
    local_port = seed.port("local_port")
    # In the seed's frp use, local_port was frps's remote port, not a port to forward.
    if local_port is not None and not (chosen == "frp" and frp_seed):
        forwards.append(local_port)
    raw_fwd = top.data.get("forwards")
    if raw_fwd is None:
        raw_fwd = []
    if not isinstance(raw_fwd, list):
        raise top.error(
            "forwards",
            f"must be a list of port numbers, not {typename(raw_fwd)}",
            'write it as "forwards": [6006, 8888]',
        )
    for i, value in enumerate(raw_fwd):
        port = as_port(value)
        if port is None:
            raise top.error(
                f"forwards[{i}]",
                f"must be a port number 1-65535, not {value!r}",
                'write it as "forwards": [6006, 8888]',
            )
        if port not in forwards:
            forwards.append(port)

    server_kind = _backend(server_f, "kind", "the SSH server")
    workdir = server_f.str_("workdir")
    if workdir is not None and not (workdir.startswith("/") or workdir.startswith("~")):
        raise server_f.error(
            "workdir",
            f"'{workdir}' is not an absolute path",
            'write it as "/content" or "~/work" (leave it out for the notebook\'s directory)',
        )
    tunnel_kind = _backend(relay_f, "client", "the reverse-tunnel client")

    return RuntimeConfig(
        folder=folder,
        name=run_name,
        mode=mode,  # type: ignore[arg-type]
        relay=relay,
        server_port=server_f.port("port", 0, allow_zero=True) or 0,
        authorized_keys=tuple(authorized),
        forwards=tuple(forwards),
        python_packages=tuple(top.str_list("python_packages")),
        os_packages=tuple(top.str_list("os_packages")),
        server_kind=server_kind,
        tunnel_kind=tunnel_kind,
        workdir=workdir,
        route=chosen,  # type: ignore[arg-type]
        cloudflared=parse_cloudflared(folder, top),
        frp=frp,
        frp_seed=frp_seed,
        notices=tuple(notices),
    )


def _parse_relay(
    folder: Path, relay_f: Fields, seed: Fields, scan: FolderKeys, mode: str, run_name: str
) -> RelayConfig:
    # Keys: by content, as the seed did; the superset may name them explicitly.
    key_name = relay_f.str_("key")
    if key_name is not None:
        relay_key = _named_private_key(folder, key_name, relay_f)
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
        socket_path=_socket_path(relay_f, user, run_name),
    )


def _config_path(folder: Path) -> tuple[Path, list[str]]:
    """user_config.json, or the seed README's mapping_config.json (with a note when both)."""
    main, alt = folder / CONFIG_FILE, folder / SEED_README_CONFIG_FILE
    if main.is_file() and alt.is_file():
        return main, [
            f"{folder} holds {CONFIG_FILE} and {SEED_README_CONFIG_FILE}: using {CONFIG_FILE}"
        ]
    if not main.exists() and alt.is_file():
        return alt, []
    return main, []


def _backend(fields: Fields, key: str, what: str) -> Backend:
    value = fields.str_(key, "auto")
    if value not in BACKENDS:
        raise fields.error(
            key,
            f"'{value}' is not a known implementation of {what}",
            'use "auto" (OpenSSH where usable, else embedded), "openssh" or "embedded"',
        )
    return value  # type: ignore[return-value]


def _socket_path(relay_f: Fields, user: str, name: str) -> str:
    path = relay_f.str_("socket_path") or f"/tmp/handy-colab-{user}-{name}.sock"
    if not SOCKET_PATH_RE.match(path):
        raise relay_f.error(
            "socket_path",
            f"'{path}' is not an absolute path of letters, digits and '._/+-'",
            'use e.g. "/tmp/handy-colab-me-colab.sock"',
        )
    return path


def _named_private_key(folder: Path, key_name: str, relay_f: Fields) -> PrivateKey:
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


def _authorized_keys(
    folder: Path, server_f: Fields, found: list[PublicKey], relay_key: PrivateKey | None
) -> list[PublicKey]:
    entries = server_f.str_list("authorized_keys")
    keys: list[PublicKey] = []
    if entries:
        for i, entry in enumerate(entries):
            literal = parse_public_key_line(entry, "config")
            if literal is not None:
                keys.append(literal)
                continue
            path = folder / entry
            loaded = load_public_keys(path) if path.is_file() else []
            if not loaded:
                raise server_f.error(
                    f"authorized_keys[{i}]",
                    f"'{entry}' is neither a public key "
                    "line nor a file in the folder holding public keys",
                    'use "ssh-ed25519 AAAA... me@laptop" or a .pub file name',
                )
            keys.extend(loaded)
    else:
        keys = list(found)
    if not keys and relay_key is None:
        raise ConfigError(
            f"{folder}: no public key to let into the runtime. Fix: put your laptop's public "
            f"key (e.g. ~/.ssh/id_ed25519.pub) in the folder, or list it in {CONFIG_FILE} "
            f"field 'server.authorized_keys'"
        )
    if not keys:
        assert relay_key is not None
        # The seed derived the public key from the portmap key; do the same when none is given,
        # so a folder with just the .pem still lets its owner log in.
        keys = [PublicKey(line=relay_key.public_line, source=relay_key.path.name)]
    seen: set[str] = set()
    unique = []
    for key in keys:
        if key.blob not in seen:
            seen.add(key.blob)
            unique.append(key)
    return unique
