"""`up` on the command line: its supervisor is this very process, forked once `up` has read
the config and decided to start.

Launch (launch.py) execs a fresh interpreter, which then imports the package and reads
the config folder again before it can start anything: 0.1-0.2 s on the way to ready on
the machines measured (docs/benchmarks.md). A fork starts the server and the tunnel at
once with what `up` has loaded. Forking is only right in a process with one thread that
is about to exit, which `up` on the command line is; a notebook's kernel is not, and
there (or if a thread runs after all) the supervisor is exec'd as before.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import supervisor_main as supervisor
from .config import Backend, RuntimeConfig
from .launch import Launch, child_env, wait_until_ready
from .state import RuntimeDir

log = logging.getLogger(__name__)


class ForkLaunch:
    """The supervisor of one `up`, forked at `go` (the same calls as Launch's)."""

    def __init__(self, timeout: float, server: Backend | None, tunnel: str | None) -> None:
        self.run_id = os.urandom(16).hex()
        self.timeout = timeout
        self.server = server
        self.tunnel = tunnel
        self.child: _Forked | None = None
        self.ready_fd: int | None = None
        self.instead: Launch | None = None  # the exec'd supervisor, when forking is not right

    def matches(self, folder: Path) -> bool:
        return True  # it is made from whatever config `up` read

    def go(self, rd: RuntimeDir, cfg: RuntimeConfig) -> None:
        if threading.active_count() > 1:
            self.instead = Launch(cfg.folder, cfg.name, self.timeout, self.server, self.tunnel)
            self.run_id = self.instead.run_id
            self.instead.go(rd, cfg)
            return
        ready_r, ready_w = os.pipe()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()  # or the child would write `up`'s buffered output again
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child; the e2e tests run it
            code = 1
            try:
                os.close(ready_r)
                _detach(rd.path / "supervisor.out", keep=ready_w)
                supervisor.setup_logging(rd)
                log.info("supervisor %d forked from `up`", os.getpid())
                code = supervisor.serve(
                    cfg, rd, self.run_id, self.server, self.tunnel,
                    max(10.0, self.timeout - 12.0), ready_w,
                )  # fmt: skip
            except BaseException:
                with contextlib.suppress(BaseException):
                    log.exception("the forked supervisor failed")
            finally:
                with contextlib.suppress(BaseException):
                    logging.shutdown()
                os._exit(code)
        os.close(ready_w)
        self.ready_fd = ready_r
        self.child = _Forked(pid)

    def cancel(self) -> None:
        # Before `go` nothing exists to cancel; after it, the supervisor is wanted.
        if self.instead is not None:
            self.instead.cancel()

    def wait_ready(
        self, rd: RuntimeDir, timeout: float, progress: Callable[[str], None] | None = None
    ) -> dict[str, Any]:
        if self.instead is not None:
            return self.instead.wait_ready(rd, timeout, progress)
        assert self.child is not None, "go() first"
        try:
            return wait_until_ready(rd, self.run_id, self.child, timeout, self.ready_fd, progress)
        finally:
            if self.ready_fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self.ready_fd)
                self.ready_fd = None


class _Forked:
    """The forked supervisor, as much of a Popen as wait_until_ready uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            with contextlib.suppress(ChildProcessError):
                done, status = os.waitpid(self.pid, os.WNOHANG)
                if done:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired("supervisor", timeout or 0)
            time.sleep(0.02)
        assert self.returncode is not None
        return self.returncode


def _detach(out: Path, keep: int) -> None:
    """Make the forked child what Launch's Popen makes: a session of its own (a cell
    interrupt or closed terminal does not reach it), in /, its output in ``out``, none of
    `up`'s files open (the caller's pipe would never see EOF; a lock would stay held), its
    children able to import this package. The fds of `up` still wrapped by Python objects
    are pointed at /dev/null rather than closed, so that no later close of such an object
    can close a file the supervisor opened under the same number."""
    os.setsid()
    os.chdir("/")
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    null = os.open(os.devnull, os.O_RDWR)
    outfd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(null, 0)
    os.dup2(outfd, 1)
    os.dup2(outfd, 2)
    with contextlib.suppress(OSError):  # no /proc: nothing more can be done portably
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if fd > 2 and fd not in (keep, null, outfd):
                with contextlib.suppress(OSError):
                    os.dup2(null, fd, inheritable=False)
    os.close(null)
    os.close(outfd)
    with contextlib.suppress(OSError):
        Path("/proc/self/comm").write_text("hc-supervisor")  # what `ps -e` and top show
    os.environ.update(child_env())
    root = logging.getLogger()
    for handler in root.handlers[:]:  # `up`'s own, to its stderr
        root.removeHandler(handler)
