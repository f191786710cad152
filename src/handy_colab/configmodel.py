"""The validated config: names, limits and the dataclasses config.py's loader returns."""

from __future__ import annotations

import getpass
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

# The CLI and the laptop's side use these without the model: they live in choices.
from .choices import CONFIG_FILE as CONFIG_FILE
from .choices import NAME_RE as NAME_RE
from .choices import SEED_README_CONFIG_FILE as SEED_README_CONFIG_FILE
from .choices import SOCKET_PATH_RE as SOCKET_PATH_RE
from .choices import Backend, Route
from .errors import ConfigError
from .keys import HOST_KEY_DIR, PrivateKey, PublicKey
from .tunnels.cloudflared_config import CloudflaredConfig
from .tunnels.frp_config import FrpConfig

CONNECTIONS_DIR = "connections"
RELAY_KNOWN_HOSTS = "relay_known_hosts"
DEFAULT_NAME = "colab"
# Files the tool itself keeps in the folder; never mistaken for user keys.
OWN_FILES = {
    CONFIG_FILE,
    SEED_README_CONFIG_FILE,
    RELAY_KNOWN_HOSTS,
    CONNECTIONS_DIR,
    HOST_KEY_DIR,
}

Mode = Literal["public", "private"]


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
    # sshd's GatewayPorts for -R on the runtime: "no" binds loopback whatever the client asks.
    gateway_ports: str = "no"
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
                f"cannot run. Fix: add one (see `handy-colab help frp`)"
            )
        return found

    @property
    def ssh_relay(self) -> RelayConfig:
        """The relay, for the relay route's code; a clear error when the config has none."""
        if self.relay is None:
            raise ConfigError(
                f"{self.folder / CONFIG_FILE}: names no relay, so the relay route (ssh -R) "
                f'cannot run. Fix: add a "relay" section (see `handy-colab help config`), or '
                f"use the cloudflared route (up --route cloudflared)"
            )
        return self.relay

    @property
    def relay_known_hosts(self) -> Path:
        return self.folder / RELAY_KNOWN_HOSTS

    @property
    def connections_dir(self) -> Path:
        return self.folder / CONNECTIONS_DIR


def route_of_tunnel(tunnel: str | None) -> Route | None:
    """The route a ``tunnel`` request (choices.TUNNEL_REQUESTS) implies (None: the config
    decides). Every relay client implies the relay route, "auto" too: the tunnel it picks is
    the relay's, so a cloudflared config must not be read as if it were the route."""
    routes: dict[str, Route] = {
        "frp": "frp",
        "cloudflared": "cloudflared",
        "openssh": "relay",
        "embedded": "relay",
        "auto": "relay",
        "relay": "relay",
    }
    return routes.get(tunnel or "")
