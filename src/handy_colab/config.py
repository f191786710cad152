"""The config folder: the seed's ``user_config.json`` plus a validated superset.

The seed format (handy-google-colab) keeps working unchanged::

    {"tunnel_options": {"service_url": "user-12345.portmap.host",
                        "service_port": 12345, "local_port": 12345},
     "python_packages": [...], "os_packages": [...]}

with the keys found in the folder by content: the private key logs into the relay as the
user named by its file name up to the first dot (``<user>.<config>.pem``), on port 22, and
the public key(s) may log into the runtime. See docs/config.md for the superset; without
the file, a folder holding a public key means the defaults (a cloudflared quick tunnel).

This module reads and validates the folder (``load_config``); the dataclasses it returns and
the shared names are in configmodel.py, the relay section in configrelay.py, typed JSON
access in configfields.py. Every name stays importable from here.
"""

from __future__ import annotations

from pathlib import Path

from .choices import (
    BACKENDS,
    ROUTES,
    TUNNEL_CHOICES,
    TUNNEL_REQUESTS,
    Backend,
    Route,
    runtime_name_problem,
    suggest_runtime_name,
)
from .configfields import Fields, as_port, parse_config_text, typename
from .configmodel import (
    CONFIG_FILE,
    CONNECTIONS_DIR,
    DEFAULT_NAME,
    NAME_RE,
    OWN_FILES,
    RELAY_KNOWN_HOSTS,
    SEED_README_CONFIG_FILE,
    SOCKET_PATH_RE,
    Mode,
    RelayConfig,
    RuntimeConfig,
    route_of_tunnel,
)
from .configrelay import parse_relay
from .errors import ConfigError
from .keys import (
    FolderKeys,
    PrivateKey,
    PublicKey,
    load_public_keys,
    parse_public_key_line,
    scan_folder,
)
from .tunnels.cloudflared_config import parse_cloudflared
from .tunnels.frp_config import frp_from_seed, parse_frp

__all__ = [
    "BACKENDS",
    "CONFIG_FILE",
    "CONNECTIONS_DIR",
    "DEFAULT_NAME",
    "NAME_RE",
    "RELAY_KNOWN_HOSTS",
    "ROUTES",
    "SEED_README_CONFIG_FILE",
    "SOCKET_PATH_RE",
    "TUNNEL_CHOICES",
    "TUNNEL_REQUESTS",
    "Backend",
    "Mode",
    "RelayConfig",
    "Route",
    "RuntimeConfig",
    "load_config",
    "route_of_tunnel",
]

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
_SERVER_FIELDS = {"port", "authorized_keys", "kind", "workdir", "gateway_ports"}


def load_config(
    folder: str | Path, name: str | None = None, route: Route | None = None
) -> RuntimeConfig:
    """Read and validate the config folder. Raises ConfigError with a one-line message.

    ``route`` overrides the config's route (``up --route``): the seed's tunnel_options are
    then read as that route needs them (FRPTunnel: as frps's address, no relay key needed).
    """
    forced_route: str | None = route
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise ConfigError(
            f"{folder}: config folder not found. Fix: pass the folder that holds your "
            f"laptop's public key (and {CONFIG_FILE}, if any), e.g. a mounted Drive folder"
        )
    cfg_path, notices = _config_path(folder)
    scan: FolderKeys | None = None  # the folder's keys, read once
    try:
        data = parse_config_text(cfg_path.read_bytes(), str(cfg_path))
    except FileNotFoundError:
        scan = scan_folder(folder, skip=OWN_FILES)
        data = _defaults_without_file(folder, scan)
    except OSError as exc:
        raise ConfigError(
            f"{cfg_path}: cannot read it ({exc.strerror}). Fix: check the file's permissions"
        ) from None
    top = Fields(cfg_path, "", data, _TOP_FIELDS)
    seed = top.sub("tunnel_options", _SEED_TUNNEL_FIELDS)
    relay_f = top.sub("relay", _RELAY_FIELDS)
    server_f = top.sub("server", _SERVER_FIELDS)

    run_name = name or top.str_("name", DEFAULT_NAME) or DEFAULT_NAME
    problem = runtime_name_problem(run_name)
    if problem is not None:
        raise top.error(
            "name",
            f"'{run_name}' is not a valid runtime name: it {problem}",
            f"rename it, e.g. '{suggest_runtime_name(run_name)}' (it becomes an ssh Host "
            f"alias, so it may not look like a host name)",
        )

    mode = top.str_("mode", "public")
    if mode not in ("public", "private"):
        raise top.error(
            "mode",
            f"'{mode}' is not a known access mode",
            'use "public" (the relay exposes the port) or "private" (a socket on the relay)',
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
    if scan is None:
        scan = scan_folder(folder, skip=OWN_FILES)
    frp = parse_frp(folder, top, run_name)
    # The seed's FRPTunnel read tunnel_options as an frps address: kept for `--route frp`.
    frp_seed = frp_from_seed(seed, run_name) if frp is None else None
    relay = (
        parse_relay(folder, relay_f, seed, scan, mode, run_name)
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
    gateway_ports = server_f.str_("gateway_ports", "no")
    if gateway_ports not in ("no", "clientspecified"):
        raise server_f.error(
            "gateway_ports",
            f"'{gateway_ports}' is not a GatewayPorts mode",
            'use "no" (remote forwards listen on loopback) or "clientspecified"',
        )

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
        gateway_ports=gateway_ports or "no",
        route=chosen,  # type: ignore[arg-type]
        cloudflared=parse_cloudflared(folder, top),
        frp=frp,
        frp_seed=frp_seed,
        notices=tuple(notices),
    )


def _defaults_without_file(folder: Path, scan: FolderKeys) -> dict[str, object]:
    """No user_config.json: the defaults (a cloudflared quick tunnel), which need nothing but
    a public key to let in. The newcomer's folder is just their laptop's .pub, so that is
    the whole recipe; a folder without one would only fail later, less clearly."""
    if scan.public:
        return {}
    raise ConfigError(
        f"{folder}: holds no {CONFIG_FILE} and no public key. Fix: put your laptop's public "
        f"key (e.g. ~/.ssh/id_ed25519.pub) in the folder for a cloudflared quick tunnel, or "
        f"write a {CONFIG_FILE} for another route (handy-colab help config)"
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
