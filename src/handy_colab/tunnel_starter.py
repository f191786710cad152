"""The seed's notebook API, kept working: ``tunnel_starter.start_tunnel(folder)``,
``PortmapTunnel(folder).start_tunnel()`` and ``FRPTunnel(folder).start_tunnel()``.

Each brings the runtime up through `notebook.up` (so it gets everything the new API does),
prints the connection block as the seed did, and returns it.
"""

from __future__ import annotations

from pathlib import Path


def _start(folder: str | Path, tunnel: str | None, name: str | None, timeout: float) -> str:
    from .notebook import up

    block = up(folder, name=name, timeout=timeout, tunnel=tunnel).text()
    print(block)
    return block


def start_tunnel(folder: str | Path, name: str | None = None, timeout: float = 60.0) -> str:
    """The seed's oldest entry point: the relay in the config (portmap.io's ``ssh -R``)."""
    return _start(folder, None, name, timeout)


class PortmapTunnel:
    """The seed's ``ssh -R`` tunnel to portmap.io (any OpenSSH relay)."""

    tunnel: str | None = None

    def __init__(self, folder: str | Path, name: str | None = None) -> None:
        self.folder = folder
        self.name = name

    def start_tunnel(self, timeout: float = 60.0) -> str:
        return _start(self.folder, self.tunnel, self.name, timeout)


class FRPTunnel(PortmapTunnel):
    """The seed's frp tunnel: ``tunnel_options`` name the frps (service_url, service_port)
    and the remote port (local_port), or the config's ``frp`` section does."""

    tunnel = "frp"
