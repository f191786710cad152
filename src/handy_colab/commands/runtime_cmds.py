"""`up`, `down`, `status`, `logs`: the runtime side."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import runtime
from ..client.block import render_block
from ..config import Backend
from ..errors import ExitCode
from ..launch import Launch
from ..progress_view import terminal_reporter
from ..server.session import read_info
from ..state import RuntimeDir

if TYPE_CHECKING:
    from ..forklaunch import ForkLaunch


def cmd_up(
    folder: str,
    name: str | None,
    foreground: bool,
    timeout: float,
    install: bool,
    server: Backend | None = None,
    tunnel: str | None = None,
    launch: Launch | ForkLaunch | None = None,
) -> int:
    res = runtime.up(
        folder,
        name=name,
        timeout=timeout,
        install=install,
        server=server,
        tunnel=tunnel,
        # A bar on a terminal; in a log or CI, whole lines (progress_view.py).
        progress=terminal_reporter(sys.stdout),
        launch=launch,
    )
    if res.already_running:
        print(
            f"Runtime '{res.cfg.name}' is already running (supervisor pid "
            f"{res.state.get('pid')}); nothing started.\n"
        )
    for warning in res.state.get("warnings") or []:
        print(f"warning: {warning}", file=sys.stderr)
    srv, tun = res.state.get("server") or {}, res.state.get("tunnel") or {}
    print(
        f"server: {srv.get('kind', '?')} ({srv.get('why', '-')}); "
        f"tunnel: {tun.get('kind', '?')} ({tun.get('why', '-')})"
    )
    if res.session is not None:
        print(
            f"sessions: start in {res.session.cwd} with this shell's environment "
            f"({len(res.session.env)} variables; python {res.session.python or '-'})\n"
        )
    print(render_block(res.descriptor, res.descriptor_path, None), end="")
    # The tunnel is up regardless: a failed extra package is reported, not fatal.
    for line in res.package_failures:
        print(f"warning: {line}", file=sys.stderr)
    if not foreground:
        return 0
    # Foreground: stay attached; Ctrl-C (or SIGTERM) takes the runtime down with us.
    print(f"\nRunning in the foreground; Ctrl-C stops runtime '{res.cfg.name}'.", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        _healthy, st = runtime.status(res.cfg.name)
        if st.get("phase") in ("dead", "stopped", "failed"):
            print(
                f"runtime '{res.cfg.name}' ended: {st.get('error') or st.get('phase')}",
                file=sys.stderr,
            )
            return 1
    runtime.down(res.cfg.name)
    return 0


def _ago(ts: Any) -> str:
    if not isinstance(ts, (int, float)):
        return "-"
    when = time.strftime("%H:%M:%S", time.localtime(ts))
    return f"since {when} ({int(time.time() - ts)}s)"


def cmd_status(name: str | None, as_json: bool) -> int:
    names = [name] if name else runtime.names()
    if as_json:
        return _status_json(name, names)
    if not names:
        print("no runtime has been started here")
        return ExitCode.NOT_FOUND
    worst: int = ExitCode.OK
    for n in names:
        healthy, st = runtime.status(n)
        if not st:
            print(f"{n}: never started")
            worst = max(worst, ExitCode.NOT_FOUND)
        else:
            print(
                f"{n}: {'healthy' if healthy else 'NOT healthy'} - {st.get('phase')} "
                f"{_ago(st.get('since'))}, supervisor pid {st.get('pid')}"
            )
            srv, tun = st.get("server") or {}, st.get("tunnel") or {}
            print(
                f"  server  {srv.get('kind', '-')}: {srv.get('state', '-')} "
                f"{_ago(srv.get('since'))}, 127.0.0.1:{srv.get('port')}, "
                f"restarts {srv.get('restarts', 0)}"
                + (f", last error: {srv['last_error']}" if srv.get("last_error") else "")
            )
            print(
                f"  tunnel  {tun.get('kind', '-')}: {tun.get('state', '-')} "
                f"{_ago(tun.get('since'))}, {tun.get('endpoint')}, "
                f"reconnects {tun.get('reconnects', 0)}"
                + (f", last error: {tun['last_error']}" if tun.get("last_error") else "")
            )
            if isinstance(tun.get("next_try"), (int, float)) and tun.get("state") != "up":
                when = time.strftime("%H:%M:%S", time.localtime(tun["next_try"]))
                left = max(0, int(tun["next_try"] - time.time()))
                print(f"  tunnel  next try at {when} (in {left}s)")
            details = tun.get("details") or {}
            if details.get("hostname") or details.get("protocol"):
                conns = details.get("edge_connections", 0)
                where = ", ".join(details.get("locations") or []) or "-"
                print(
                    f"  cloudflared {details.get('tunnel', '-')} tunnel "
                    f"https://{details.get('hostname') or '(pending)'}, protocol "
                    f"{details.get('protocol', '-')}, {conns} edge connection"
                    f"{'' if conns == 1 else 's'} ({where}), {details.get('binary', '-')}"
                )
            if details.get("mode") and details.get("server"):
                print(
                    f"  frp {details['mode']} via frps {details['server']} "
                    f"({'verified' if details.get('verified') else 'NOT verified'}), proxies "
                    + ", ".join(f"{k} {v}" for k, v in (details.get("proxies") or {}).items())
                    + (
                        f"; last p2p session: {details['p2p_path']}"
                        if details.get("p2p_path")
                        else ""
                    )
                )
            info = read_info(RuntimeDir.for_name(n))
            if info:
                names_ = info.get("names")
                count = len(names_) if isinstance(names_, list) else 0
                print(
                    f"  sessions start in {info.get('cwd')}, python "
                    f"{info.get('python') or '-'}, {count} variables from the notebook"
                )
            if st.get("error"):
                print(f"  error: {st['error']}")
        worst = max(worst, ExitCode.OK if healthy else ExitCode.FAILED)
    return worst


# What `status NAME --json` says of a name that never ran here (its "phase" is one no
# supervisor writes, so a script can tell it from "stopped").
NEVER_STARTED = "never-started"


def _status_json(name: str | None, names: list[str]) -> int:
    """Always JSON: NAME gives one object (a "never-started" one for an unknown name),
    no NAME a list of them, `[]` when nothing was started here. Same exit codes as text."""
    found: list[dict[str, Any]] = []
    worst: int = ExitCode.OK if names else ExitCode.NOT_FOUND
    for n in names:
        healthy, st = runtime.status(n)
        if not st:
            st = {"name": n, "phase": NEVER_STARTED}
            worst = max(worst, ExitCode.NOT_FOUND)
        else:
            worst = max(worst, ExitCode.OK if healthy else ExitCode.FAILED)
        found.append(dict(st, healthy=healthy))
    shown: object = found[0] if name else found
    print(json.dumps(shown, indent=2, sort_keys=True))
    return worst


def cmd_down(name: str | None) -> int:
    names = [name] if name else runtime.names()
    if not names:
        print("nothing to stop")
        return 0
    for n in names:
        print(f"{n}: {'stopped' if runtime.down(n) else 'was not running'}")
    return 0


def cmd_logs(name: str | None, lines: int) -> int:
    path: Path = runtime.log_path(runtime.resolve_name(name))
    try:
        text = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        print(f"no log yet at {path}")
        return ExitCode.NOT_FOUND
    print("\n".join(text[-lines:]))
    return 0
