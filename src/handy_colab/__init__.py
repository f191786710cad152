"""handy-colab: a notebook runtime behind NAT as a first-class SSH host.

In a notebook cell::

    import handy_colab
    rt = handy_colab.up("/content/drive/MyDrive/colab_data")   # shows how to connect
    rt.status(); rt.stop()
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .notebook import Runtime, RuntimeStatus

__version__ = "0.1.0"
__all__ = [
    "FRPTunnel",
    "PortmapTunnel",
    "__version__",
    "start_tunnel",
    "status",
    "stop",
    "tunnel_starter",
    "up",
]


def __getattr__(name: str) -> Any:
    # The seed's names, imported on first use like the rest of the API.
    if name in ("FRPTunnel", "PortmapTunnel", "tunnel_starter"):
        import importlib

        module = importlib.import_module(f"{__name__}.tunnel_starter")
        return module if name == "tunnel_starter" else getattr(module, name)
    raise AttributeError(f"module 'handy_colab' has no attribute {name!r}")


# The API is imported on first use: `import handy_colab` (and the CLI) stay cheap.
def up(folder: str | Path | None = None, **kwargs: Any) -> Runtime:
    """See :func:`handy_colab.notebook.up`."""
    from .notebook import up as _up

    return _up(folder, **kwargs)


def status(name: str | None = None) -> RuntimeStatus:
    """See :func:`handy_colab.notebook.status`."""
    from .notebook import status as _status

    return _status(name)


def stop(name: str | None = None) -> bool:
    """See :func:`handy_colab.notebook.stop`."""
    from .notebook import stop as _stop

    return _stop(name)


def start_tunnel(folder: str | Path, name: str | None = None, timeout: float = 60.0) -> str:
    """The seed's notebook API: bring the runtime up from ``folder`` and return the block.

    Safe to call again in a re-run cell: a running runtime is found, not started twice
    (and its sessions get this kernel's environment and directory afresh). The connection
    block is printed (as the seed did) and also returned.
    """
    from .notebook import up as _up

    block = _up(folder, name=name, timeout=timeout).text()
    print(block)
    return block
