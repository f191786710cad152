"""The relay connections private mode's ProxyCommand holds (relayhop.py), seen from the
ssh config `connect` wrote: which runtime has one, and ending them."""

from __future__ import annotations

from pathlib import Path

from .laptop import find_runtime, known_runtimes, proxy_argv
from .relayhop import Args, Hold, HopError, alive, end_master


def hold_of(argv: list[str] | None) -> Hold | None:
    """The held connection a ProxyCommand argv uses (None: not relayhop's)."""
    script = next((i for i, a in enumerate(argv or []) if a.endswith("relayhop.py")), None)
    if argv is None or script is None:
        return None
    try:
        return Args(argv[script + 1 :]).hold()
    except HopError:
        return None


def end_holds(names: list[str], ssh_config: Path | None = None) -> list[str]:
    """End the held relay connections of ``names`` (all runtimes without names); return
    the aliases that had one running."""
    runtimes = [find_runtime(n, ssh_config) for n in names] if names else known_runtimes(ssh_config)
    ended = []
    for rt in runtimes:
        hold = hold_of(proxy_argv(rt))
        if hold is not None and alive(hold):
            end_master(hold)
            ended.append(rt.alias)
    return ended
