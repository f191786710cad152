"""handy-colab: a notebook runtime behind NAT as a first-class SSH host."""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"
__all__ = ["__version__", "start_tunnel"]


def start_tunnel(folder: str | Path, name: str | None = None, timeout: float = 60.0) -> str:
    """The seed's notebook API: bring the runtime up from ``folder`` and return the block.

    Safe to call again in a re-run cell: a running runtime is found, not started twice.
    The connection block is printed (as the seed did) and also returned.
    """
    from .connection import render_block
    from .runtime import up

    res = up(folder, name=name, timeout=timeout)
    block = render_block(res.descriptor, res.descriptor_path, None)
    print(block)
    return block
