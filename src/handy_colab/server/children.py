"""The embedded server's session children: starting them, reaping them, signalling them.

Every session runs as its own session leader (so its whole process group can be hung up at
once), and exit statuses come from one SIGCHLD handler rather than a waiting thread per child:
the server is a child subreaper, so it also inherits the orphans of its sessions (a daemon
started from a shell double-forks) and must reap those too, or they linger as zombies.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
from dataclasses import dataclass

from .terminal import set_ctty

log = logging.getLogger(__name__)

_PR_SET_CHILD_SUBREAPER = 36


class Reaper:
    """Reaps every child on SIGCHLD and hands exit statuses to whoever waits for a pid.

    As a child subreaper this process also inherits the orphans of its sessions (a daemon
    started from a shell double-forks); they are reaped here so none lingers as a zombie.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiters: dict[int, asyncio.Future[int]] = {}

    def install(self) -> None:
        self._loop.add_signal_handler(signal.SIGCHLD, self.reap)

    def watch(self, pid: int) -> asyncio.Future[int]:
        # Called right after the fork, with no await in between: the SIGCHLD callback
        # runs on this loop, so it cannot reap the pid before the waiter exists.
        fut: asyncio.Future[int] = self._loop.create_future()
        self._waiters[pid] = fut
        return fut

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            fut = self._waiters.pop(pid, None)
            if fut is not None and not fut.done():
                fut.set_result(status)


def become_subreaper() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl failed")
    except (OSError, AttributeError) as exc:
        # Without it, a double-forked daemon escapes to init and may outlive us.
        log.warning(
            "cannot become a child subreaper (%s); daemons started in sessions may survive a stop",
            exc,
        )


def signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


@dataclass
class Child:
    """A session's process (a session leader) and the future its exit status lands in."""

    popen: subprocess.Popen[bytes]
    exited: asyncio.Future[int]

    @property
    def pgid(self) -> int:
        return self.popen.pid  # a session leader: its pid is its group


def spawn(
    reaper: Reaper,
    argv: list[str],
    executable: str,
    stdio: tuple[int, int, int],
    cwd: str,
    env: dict[str, str],
    on_pty: bool,
) -> Child:
    """Start a session's process in a new session (with the PTY on fd 0 as its controlling
    terminal when ``on_pty``). The stdio fds are the child's ends: they are closed here,
    whether or not the start succeeds. Raises OSError when it cannot start."""
    try:
        popen = subprocess.Popen(
            argv,
            executable=executable,
            stdin=stdio[0],
            stdout=stdio[1],
            stderr=stdio[2],
            cwd=cwd,
            env=env,
            start_new_session=True,
            preexec_fn=set_ctty if on_pty else None,
        )
    finally:
        for fd in {*stdio}:
            os.close(fd)
    return Child(popen, reaper.watch(popen.pid))
