"""`handy-colab list` on the laptop: every runtime `connect` knows, and whether it answers.

Reachable means the runtime's SSH banner arrived through the very route ssh would take (the
Host block's ProxyCommand, or its HostName/Port), within a short deadline; all runtimes are
probed at once, so the list takes about as long as its slowest probe.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..proc import die_with_parent, end_process
from ..tunnels.common import tcp_banner
from .laptop import KnownRuntime, known_runtimes, proxy_argv

PROBE_TIMEOUT = 2.0


@dataclass
class Listed:
    alias: str
    route: str  # "relay public", "cloudflared quick", ... ("?" when the descriptor is gone)
    reachable: bool
    detail: str  # the banner, or why not
    seconds: float


def _banner_via_proxy(argv: list[str], timeout: float) -> str:
    """The first line the ProxyCommand's stdout gives (the SSH server speaks first)."""
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=die_with_parent if sys.platform != "win32" else None,
    )
    assert proc.stdout is not None and proc.stderr is not None
    got: list[bytes] = []
    out = proc.stdout

    def read() -> None:
        with contextlib.suppress(OSError, ValueError):
            got.append(out.readline(256))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    try:
        if got and got[0]:
            return got[0].decode(errors="replace").strip()
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace").strip().splitlines()
            return "" if not err else f"!{err[-1]}"
        return ""
    finally:
        end_process(proc, grace=1)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()


def probe(rt: KnownRuntime, timeout: float = PROBE_TIMEOUT) -> Listed:
    desc = rt.descriptor
    route = f"{desc.route} {desc.mode}" if desc is not None else "?"
    start = time.monotonic()
    try:
        argv = proxy_argv(rt)
        if argv is None:
            host = rt.options.get("hostname", rt.alias)
            connected, text = tcp_banner(host, int(rt.options.get("port", "22")), timeout)
            banner = text.strip() if connected else f"!{text}"
        else:
            banner = _banner_via_proxy(argv, timeout)
    except (OSError, ValueError) as exc:
        banner = f"!{exc}"
    took = time.monotonic() - start
    if banner.startswith("SSH-"):
        return Listed(rt.alias, route, True, banner, took)
    why = banner[1:] if banner.startswith("!") else (banner or f"no SSH banner in {timeout:g}s")
    return Listed(rt.alias, route, False, why, took)


def list_laptop(ssh_config: Path | None = None, timeout: float = PROBE_TIMEOUT) -> list[Listed]:
    known = known_runtimes(ssh_config)
    if not known:
        return []
    with concurrent.futures.ThreadPoolExecutor(len(known)) as pool:
        return list(pool.map(lambda rt: probe(rt, timeout), known))
