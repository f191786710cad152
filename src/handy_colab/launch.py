"""Starting the supervisor process for `up`, and waiting until it says the runtime is ready.

The supervisor is a fresh Python process (its own session, so a cell interrupt does not
reach it), and a fresh interpreter spends a few hundred milliseconds importing and reading
the config folder before it can do anything. So `up` launches it first thing, while `up`
itself is still reading the config, capturing the session environment and looking for a
runtime that already runs; the new process does its own reading meanwhile and then waits,
with nothing started and nothing written, for one line on its stdin:

* ``go NAME``: `up` decided to start this runtime; the supervisor takes over.
* end of input (`up` died): it is not wanted; it exits without a trace. When `up` itself
  finds it is not needed (the runtime runs already, or the config is refused) it kills it.

Its output goes to a file of its own until then (the runtime's name, and so its state
folder, is known only once the config is read), which `go` moves to the state folder as
``supervisor.out``. It says "ready" by writing to a pipe (its state file stays the record),
so `up` returns the moment the end-to-end check has passed.

Both ends of that handshake live here: `Launch` for `up`, and the supervisor's
(`wait_for_go`, `ready_fd_from_env`, `process_age`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from .errors import HandyColabError
from .proc import kill_tree
from .state import READY_FD_ENV, RuntimeDir, state_root

if TYPE_CHECKING:
    from .config import RuntimeConfig

log = logging.getLogger(__name__)

GO = "go"  # the first word of the line that lets a waiting supervisor start


class Launch:
    """One supervisor process, launched early and waiting for `go` (or never needed)."""

    def __init__(
        self,
        folder: Path,
        name: str | None,
        timeout: float,
        server: str | None,
        tunnel: str | None,
    ) -> None:
        self.folder = folder
        self.run_id = os.urandom(16).hex()
        root = state_root()
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.out = root / f".supervisor-{self.run_id}.out"
        argv = [
            sys.executable,
            "-m",
            "handy_colab.supervisor_main",
            "--folder",
            str(folder),
            *(["--name", name] if name else []),
            "--run-id",
            self.run_id,
            *(["--server", server] if server else []),
            *(["--tunnel", tunnel] if tunnel else []),
            # The tunnel's first start may use what `up` waits, less the check after it.
            "--start-timeout",
            str(max(10.0, timeout - 12.0)),
            "--wait-go",
            str(self.out),
        ]
        ready_r, ready_w = os.pipe()
        self.ready_fd: int | None = ready_r
        self.launched = False
        try:
            with open(self.out, "ab") as out:
                self.child: subprocess.Popen[bytes] = subprocess.Popen(
                    argv,
                    stdin=subprocess.PIPE,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                    pass_fds=(ready_w,),
                    cwd="/",
                    env={**child_env(), READY_FD_ENV: str(ready_w)},
                )
        except BaseException:
            os.close(ready_r)
            with contextlib.suppress(OSError):
                self.out.unlink()
            raise
        finally:
            os.close(ready_w)

    @classmethod
    def early(
        cls,
        folder: str | Path,
        name: str | None,
        timeout: float,
        server: str | None,
        tunnel: str | None,
    ) -> Launch | None:
        """Launch for ``folder`` before it is read; None where that cannot be right yet (no
        such folder: `up` reports it; the state folder cannot be made: `up` says why)."""
        resolved = Path(folder).expanduser().resolve()
        if not resolved.is_dir():
            return None
        try:
            return cls(resolved, name, timeout, server, tunnel)
        except OSError:
            return None

    def matches(self, folder: Path) -> bool:
        """Whether the process was launched for this (resolved) config folder."""
        return self.folder == folder

    def go(self, rd: RuntimeDir, cfg: RuntimeConfig) -> None:
        """Let the waiting supervisor start runtime ``cfg.name`` (state folder ``rd``)."""
        name = cfg.name
        with contextlib.suppress(OSError):
            os.replace(self.out, rd.path / "supervisor.out")
        stdin = self._stdin()
        try:
            stdin.write(f"{GO} {name}\n".encode())
            stdin.close()
        except OSError:
            pass  # it died already: wait_ready reports how, from its output
        self.launched = True

    def cancel(self) -> None:
        """Not needed after all (or `up` failed first): it goes now, with `up`.

        It has started nothing and written nothing but its output file, so it is killed
        rather than left to notice the end of its input once its imports are done: `up`
        returns with no process of its left behind.
        """
        if self.launched:
            return
        self.launched = True  # nothing more to do either way
        with contextlib.suppress(OSError):
            self._stdin().close()
        with contextlib.suppress(OSError):
            self.child.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.child.wait(5)
        with contextlib.suppress(OSError):
            self.out.unlink()
        self._close_ready()

    def wait_ready(
        self, rd: RuntimeDir, timeout: float, progress: Callable[[str], None] | None = None
    ) -> dict[str, Any]:
        """The supervisor's state once it is ready; raise with its reason if it is not.
        ``progress`` gets what the start waits for, if it waits (a port the relay holds)."""
        try:
            return wait_until_ready(rd, self.run_id, self.child, timeout, self.ready_fd, progress)
        finally:
            self._close_ready()

    def _stdin(self) -> IO[bytes]:
        assert self.child.stdin is not None
        return self.child.stdin

    def _close_ready(self) -> None:
        if self.ready_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.ready_fd)
            self.ready_fd = None


class Child(Protocol):
    """What `up` needs of the supervisor it started: a subprocess.Popen, or forklaunch's."""

    pid: int

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


# -- the supervisor's end -----------------------------------------------------------------
def process_age() -> float:
    """Seconds since this process was started (0.0 where /proc cannot say)."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def ready_fd_from_env() -> int | None:
    """The pipe `up` waits on, if it gave one; kept from our own children."""
    value = os.environ.pop(READY_FD_ENV, "")
    if not value.isdigit():
        return None
    fd = int(value)
    try:
        os.set_inheritable(fd, False)
    except OSError:
        return None
    return fd


def wait_for_go(spawn_out: Path) -> str | None:
    """Block until `up` says go (return the runtime's name) or does not want us (None).

    Until then nothing is started or written: see launch.py.
    """
    line = sys.stdin.buffer.readline()
    # Our children must not inherit `up`'s end of the pipe.
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    word, _, name = line.decode(errors="replace").strip().partition(" ")
    if word != GO or not name:
        with contextlib.suppress(OSError):
            spawn_out.unlink()
        return None
    return name


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    # The supervisor must import this very package, wherever `up` imported it from.
    pkg_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, env.get("PYTHONPATH")) if p)
    return env


def wait_until_ready(
    rd: RuntimeDir,
    run_id: str,
    child: Child,
    timeout: float,
    ready_fd: int | None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    told = False
    while True:
        st = rd.read_state()
        if st and st.get("run_id") == run_id:
            tun = st.get("tunnel") or {}
            if not told and progress is not None and tun.get("state") == "waiting":
                # e.g. the relay still holds the port of this runtime's previous VM
                progress(str(tun.get("last_error")))
                told = True
            if st.get("phase") == "ready":
                return st
            if st.get("phase") == "failed":
                child.wait(10)
                kill_tree(child.pid)
                raise HandyColabError(st.get("error") or "the supervisor failed to start")
        code = child.poll()
        if code is not None and (
            not st or st.get("run_id") != run_id or st.get("phase") != "ready"
        ):
            kill_tree(child.pid)
            tail = _tail(rd.path / "supervisor.out", 3)
            raise HandyColabError(
                f"the supervisor exited with code {code} before the runtime "
                f"was reachable: {tail or 'no output'}. Fix: see "
                f"`handy-colab logs {rd.name}`"
            )
        if time.monotonic() > deadline:
            last = (st or {}).get("tunnel", {}).get("last_error") or (st or {}).get("error")
            kill_tree(child.pid)
            raise HandyColabError(
                f"runtime '{rd.name}' was not reachable through the relay "
                f"within {timeout:.0f}s ({last or 'no error reported'}); "
                f"stopped it. Fix: see `handy-colab logs {rd.name}`"
            )
        if ready_fd is None:
            time.sleep(0.05)
            continue
        # The state file stays the record; the pipe only says when to read it again. At
        # its EOF (the supervisor is gone, or closed it) polling goes on as before.
        readable, _, _ = select.select([ready_fd], [], [], 0.05)
        if readable and not os.read(ready_fd, 64):
            ready_fd = None


def _tail(path: Path, n: int) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " | ".join(lines[-n:])
