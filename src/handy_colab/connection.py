"""The runtime's half of the descriptor: build it from the config and the route that runs,
and write it into the config folder (``DIR/connections/NAME.json``).

The model and its validation live in descriptor.py, what the laptop makes of it (ssh config,
the printed block, IDE settings) in client/; neither imports this module.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__
from .configmodel import RuntimeConfig
from .descriptor import FORMAT, PASTE_PREFIX, RELAY_FORMAT, Descriptor
from .fsutil import atomic_write
from .keys import parse_public_key_line
from .tunnels.common import known_hosts_pattern

log = logging.getLogger(__name__)

# Descriptor and its format numbers stay importable from here (runtime.py, supervisor.py, tests).
__all__ = [
    "FORMAT",
    "PASTE_PREFIX",
    "RELAY_FORMAT",
    "CloudflaredEndpoint",
    "Descriptor",
    "FrpEndpoint",
    "RouteEndpoint",
    "build_descriptor",
    "relay_host_keys",
    "write_descriptor",
]


def relay_host_keys(cfg: RuntimeConfig) -> list[str]:
    """The relay's pinned key: from the config, or as recorded on first use."""
    relay = cfg.ssh_relay
    if relay.host_key:
        return [relay.host_key]
    pattern = known_hosts_pattern(relay.host, relay.port)
    keys = []
    try:
        lines = cfg.relay_known_hosts.read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        parts = line.split()
        if len(parts) >= 3 and pattern in parts[0].split(","):
            keys.append(f"{parts[1]} {parts[2]}")
    return keys


@dataclass(frozen=True)
class CloudflaredEndpoint:
    """Where the cloudflared route put the runtime (what the laptop's ProxyCommand opens)."""

    hostname: str
    named: bool


@dataclass(frozen=True)
class FrpEndpoint:
    """Where the frp route put the runtime: frps, the proxy, and how frps is verified."""

    server: str
    port: int
    mode: str  # public | private | p2p
    proxy: str
    remote_port: int
    server_name: str
    verified: bool
    stun: str


RouteEndpoint = CloudflaredEndpoint | FrpEndpoint


def build_descriptor(
    cfg: RuntimeConfig,
    host_key_line: str,
    python: str = "",
    workdir: str = "",
    endpoint: RouteEndpoint | None = None,
) -> Descriptor:
    """The descriptor of the route that runs: the relay's, or the endpoint's route."""
    pub = parse_public_key_line(host_key_line, "host key")
    assert pub is not None
    common = Descriptor(
        name=cfg.name,
        mode=cfg.mode,
        user=cfg.login_user,
        host_keys=[pub.blob],
        python=python or sys.executable,
        home=os.path.expanduser("~"),
        workdir=workdir,
        forwards=list(cfg.forwards),
        identity_hint=_identity_hint(cfg),
        version=__version__,
    )
    if isinstance(endpoint, CloudflaredEndpoint):
        common.route = "cloudflared"
        common.mode = "named" if endpoint.named else "quick"
        common.hostname = endpoint.hostname
        common.format = FORMAT
        return common
    if isinstance(endpoint, FrpEndpoint):
        common.route = "frp"
        common.mode = endpoint.mode
        common.format = FORMAT
        common.frp = {
            "server": endpoint.server,
            "port": endpoint.port,
            "proxy": endpoint.proxy,
            "server_name": endpoint.server_name,
            "verified": endpoint.verified,
            "stun": endpoint.stun,
        }
        if endpoint.mode == "public":
            common.public_host = endpoint.server
            common.remote_port = endpoint.remote_port
            # The seed's frp use: local_port was frps's remote port, not a forward.
            common.forwards = [p for p in common.forwards if p != endpoint.remote_port]
        return common
    relay = cfg.ssh_relay
    common.relay_host = relay.host
    common.relay_port = relay.port
    common.relay_user = relay.jump_user
    common.relay_host_keys = relay_host_keys(cfg)
    common.public_host = relay.public_host
    common.remote_port = relay.remote_port
    common.socket_path = relay.socket_path if cfg.mode == "private" else ""
    return common


# The laptop joins the hint to its copy of the folder: a bare, ordinary file name only, so it
# can name no other directory, option or config syntax, whatever the key file is called.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


def _identity_hint(cfg: RuntimeConfig) -> str:
    """The folder's key file that may log into the runtime (the seed's .pem), if any, as a
    plain file name ("" when its name is not one)."""
    if cfg.relay is None:
        return ""
    relay_blob = " ".join(cfg.relay.key.public_line.split()[:2])
    if not any(k.blob == relay_blob for k in cfg.authorized_keys):
        return ""
    name = cfg.relay.key.path.name
    if _PLAIN_NAME.fullmatch(name) is None or name in (".", ".."):
        log.warning(
            "%s: not a plain file name; the laptop is not told to use it (rename the key "
            "file to letters, digits, '.', '_' or '-' to have it named)",
            cfg.relay.key.path,
        )
        return ""
    return name


def write_descriptor(cfg: RuntimeConfig, desc: Descriptor) -> Path:
    path = cfg.connections_dir / f"{desc.name}.json"
    atomic_write(path, desc.to_json())
    return path


def publish_descriptor(
    cfg: RuntimeConfig,
    tunnel_cfg: RuntimeConfig,
    host_key_line: str,
    python: str,
    workdir: str,
    endpoint: RouteEndpoint | None,
    remarks: list[str],
) -> dict[str, Any]:
    """Build and write the descriptor; return the state fields that say where it is.

    A read-only folder must not stop a working tunnel: the descriptor then travels in the
    state (`up` prints the block anyway) with a warning saying so.
    """
    desc = build_descriptor(tunnel_cfg, host_key_line, python, workdir, endpoint=endpoint)
    try:
        path = write_descriptor(cfg, desc)
    except OSError as exc:
        log.warning("cannot write the connection descriptor: %s", exc)
        return {
            "descriptor": None,
            "descriptor_json": desc.to_json(),
            "warnings": [
                *remarks,
                f"{cfg.connections_dir}: cannot write the connection "
                f"descriptor ({exc.strerror}); copy the block below instead",
            ],
        }
    return {"descriptor": str(path), "warnings": remarks}
