"""`handy-colab forward NAME`: a local port to a runtime, for IDEs that cannot use ssh's config."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "forward",
        help="laptop side: a local port that reaches a runtime, for PyCharm and other IDEs "
        "that cannot use ~/.ssh/config",
        description="Listen on a local port and carry each connection to a runtime `connect` "
        "set up (through\nits ProxyCommand, or straight to its public address), with its host "
        "key pinned for\n[127.0.0.1]:PORT too. Point the IDE's SSH settings at 127.0.0.1 and "
        "that port; keep it\nrunning. The default port is fixed per runtime name, so saved IDE "
        "settings stay right.",
        epilog="Example:\n  handy-colab forward colab            # then PyCharm: host "
        "127.0.0.1, the port it prints",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", help="the runtime's alias, as `connect` wrote it")
    p.add_argument("--port", type=int, help="local port (default: fixed per runtime name)")
    p.add_argument("--ssh-config", metavar="FILE", help="the file connect wrote (if not default)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..client.forward import serve
    from ..client.laptop import find_runtime
    from ..client.pycharm import forward_port

    rt = find_runtime(args.name, Path(args.ssh_config) if args.ssh_config else None)
    port = args.port if args.port is not None else forward_port(rt.alias)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: object) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)

    def ready(bound: int) -> None:
        print(
            f"Forwarding 127.0.0.1:{bound} to runtime {rt.alias} (its host key is pinned for "
            f"[127.0.0.1]:{bound}); Ctrl-C stops",
            flush=True,
        )

    serve(rt, port, ready, stop)
    return 0
