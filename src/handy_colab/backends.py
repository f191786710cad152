"""Which SSH server and which tunnel client run this runtime, and why.

``auto`` prefers OpenSSH where it is usable as is, and otherwise the embedded (asyncssh)
parts, which need neither root nor apt nor any OpenSSH binary. The choice and its reason are
recorded in the runtime's state, so `up` and `status` can say what runs.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from .config import Backend, RuntimeConfig
from .errors import ConfigError, TunnelError
from .keys import PrivateKey
from .server.base import Server
from .server.openssh import find_sshd
from .state import RuntimeDir
from .tunnels.base import Tunnel


@dataclass(frozen=True)
class Choice:
    kind: str  # "openssh" | "embedded" | "cloudflared" (tunnels only)
    reason: str


def choose_server(asked: Backend) -> Choice:
    if asked != "auto":
        return Choice(asked, "chosen in the config (server.kind) or with --server")
    if os.geteuid() != 0:
        # A normal user's sshd cannot allocate PTYs here (chown of /dev/pts fails without the
        # tty group) and cannot use PAM: the embedded server gives the full session instead.
        return Choice("embedded", "not root: OpenSSH's sshd cannot give a normal user PTYs")
    sshd = find_sshd()
    if sshd is None:
        # Installing openssh-server costs time on every fresh runtime; `--server openssh`
        # still does it.
        return Choice("embedded", "no sshd installed (--server openssh would install it)")
    return Choice("openssh", f"{sshd} found, running as root")


def choose_tunnel(asked: str | None, cfg: RuntimeConfig | None = None) -> Choice:
    """``asked``: a tunnel request (choices.TUNNEL_REQUESTS, from `up --route`/`--relay-client`;
    None: the config decides, by its route and relay.client)."""
    if asked in ("cloudflared", "frp"):
        return Choice(asked, "chosen with --route")
    if asked is None and cfg is not None and cfg.route == "frp":
        return Choice("frp", "the config has an frp section (your frps)")
    if asked is None and cfg is not None and cfg.route == "cloudflared":
        if cfg.relay is not None or cfg.cloudflared.named:
            return Choice("cloudflared", 'chosen in the config ("route": "cloudflared")')
        return Choice(
            "cloudflared",
            "the config names no relay: a quick tunnel on trycloudflare.com, no account needed",
        )
    if cfg is not None and cfg.relay is None:
        raise ConfigError(
            f"the relay route (--route relay, --relay-client) needs a relay, and {cfg.folder} "
            f'names none. Fix: add a "relay" section (`handy-colab help config`), or use '
            f"--route cloudflared"
        )
    kind = asked if asked not in (None, "relay") else None
    kind = kind or (cfg.tunnel_kind if cfg is not None else "auto")
    if kind != "auto":
        return Choice(kind, "chosen in the config (relay.client) or with --relay-client")
    ssh = shutil.which("ssh")
    if ssh is None:
        return Choice("embedded", "no `ssh` client on PATH")
    return Choice("openssh", f"{ssh} found")


def make_server(kind: str, cfg: RuntimeConfig, rd: RuntimeDir, host_key: PrivateKey) -> Server:
    if kind == "openssh":
        from .server.openssh import OpenSSHServer

        return OpenSSHServer(cfg, rd, host_key)
    # It never imports asyncssh here (only its child does): a missing asyncssh is reported
    # by EmbeddedServer itself, with the fix.
    from .server.embedded import EmbeddedServer

    return EmbeddedServer(cfg, rd, host_key)


def make_tunnel(kind: str, cfg: RuntimeConfig, rd: RuntimeDir, local_port: int) -> Tunnel:
    if kind == "cloudflared":
        from .tunnels.cloudflared import CloudflaredTunnel

        return CloudflaredTunnel(cfg, rd, local_port)
    if kind == "frp":
        from .tunnels.frp import FrpTunnel

        return FrpTunnel(cfg, rd, local_port)
    if kind == "openssh":
        from .tunnels.openssh import OpenSSHTunnel

        return OpenSSHTunnel(cfg, rd, local_port)
    try:
        from .tunnels.embedded import EmbeddedTunnel
    except ImportError as exc:
        raise TunnelError(
            f"the embedded tunnel client cannot load ({exc}). Fix: pip install asyncssh",
            permanent=True,
        ) from None
    return EmbeddedTunnel(cfg, rd, local_port)
