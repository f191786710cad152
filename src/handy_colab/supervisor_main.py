"""The supervisor process: how it begins (exec'd by Launch, or forked by ForkLaunch), its
log, and the record it leaves when it cannot start. The work itself is supervisor.py's.

Run as ``python -m handy_colab.supervisor_main`` by launch.py; forklaunch.py calls
``setup_logging`` and ``serve`` in its child.
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import sys
from pathlib import Path

from .config import (
    BACKENDS,
    TUNNEL_REQUESTS,
    Backend,
    RuntimeConfig,
    load_config,
    route_of_tunnel,
)
from .errors import HandyColabError
from .launch import process_age, ready_fd_from_env, wait_for_go
from .state import RuntimeDir
from .supervisor import Supervisor

log = logging.getLogger(__name__)


def setup_logging(rd: RuntimeDir, also_stderr: bool = False) -> None:
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    # Bounded: a tunnel that flaps for days must not fill a notebook's disk.
    handler = logging.handlers.RotatingFileHandler(rd.log_file, maxBytes=1_000_000, backupCount=2)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    if also_stderr:
        err = logging.StreamHandler()
        err.setLevel(logging.WARNING)
        root.addHandler(err)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="handy_colab.supervisor_main")
    parser.add_argument("--folder", required=True)
    parser.add_argument("--name")
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--server", choices=BACKENDS)
    parser.add_argument("--tunnel", choices=TUNNEL_REQUESTS)
    parser.add_argument("--start-timeout", type=float, default=25.0)
    parser.add_argument("--wait-go", metavar="SPAWN_OUT", type=Path)
    args = parser.parse_args(argv)
    if args.name is None and args.wait_go is None:
        parser.error("--name is needed without --wait-go")
    os.umask(0o077)
    ready_fd = ready_fd_from_env()
    age = process_age()
    route = route_of_tunnel(args.tunnel)
    cfg: RuntimeConfig | None = None
    error: HandyColabError | None = None
    # Read while `up` still works on its side (the point of being launched early).
    try:
        cfg = load_config(Path(args.folder), args.name, route)
    except HandyColabError as exc:
        error = exc
    name: str = args.name or ""
    if args.wait_go is not None:
        told = wait_for_go(args.wait_go)
        if told is None:
            return 0
        name = told
    rd = RuntimeDir.for_name(name).ensure()
    setup_logging(rd)
    log.info("supervisor %d up %.2fs after its exec (interpreter and imports)", os.getpid(), age)
    try:
        if error is not None:
            raise error
        if cfg is None or cfg.name != name:
            cfg = load_config(Path(args.folder), name, route)
    except HandyColabError as exc:
        _failed(rd, name, args.run_id, exc)
        return 1
    return serve(cfg, rd, args.run_id, args.server, args.tunnel, args.start_timeout, ready_fd)


def serve(
    cfg: RuntimeConfig,
    rd: RuntimeDir,
    run_id: str,
    server: Backend | None,
    tunnel: str | None,
    start_timeout: float,
    ready_fd: int | None,
) -> int:
    """Supervise runtime ``cfg`` until stopped: the supervisor process's life, whether it
    was exec'd (main) or forked from `up` (forklaunch.py). Its log is set up already."""
    try:
        sup = Supervisor(cfg, rd, run_id, server, tunnel, start_timeout, ready_fd)
    except HandyColabError as exc:
        _failed(rd, cfg.name, run_id, exc)
        return 1
    return sup.run()


def _failed(rd: RuntimeDir, name: str, run_id: str, exc: HandyColabError) -> None:
    rd.write_state(
        {
            "name": name,
            "run_id": run_id,
            "pid": os.getpid(),
            "pgid": os.getpgid(0),
            "phase": "failed",
            "error": str(exc),
        }
    )


if __name__ == "__main__":
    sys.exit(main())
