"""The embedded server's sessions: a login shell, ``ssh host cmd``, either on pipes or a PTY.

A session channel becomes one child process, started the way sshd starts it: through the
runtime's launcher when there is one (like sshd's ForceCommand, so it gets the notebook's
environment and directory), else the login shell itself. Without a PTY, stdin, stdout and
stderr are three pipes and the session ends once the command exited and its output closed;
with one, the shell's exit ends it (background jobs may hold the terminal for ever). Exit
codes and exit signals go back to the client; signal, window-change and break requests act
on the child at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import termios
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

import asyncssh

from .children import Child, signal_group, spawn
from .pumps import channel_to_fd, fd_to_channel, grow_pipe
from .session import DEFAULT_PATH_ROOT, DEFAULT_PATH_USER
from .sftp import SessionSFTPServer
from .terminal import apply_modes, set_winsize

if TYPE_CHECKING:
    from asyncssh.channel import SSHChannel

    from .connection import Connection
    from .daemon import Daemon

log = logging.getLogger(__name__)

# After the shell of a PTY session exits, background jobs may hold the terminal open for
# ever; sshd ends the session anyway once the shell is gone. This is how long output that
# the shell wrote just before exiting gets to reach the client.
_PTY_DRAIN = 0.5


class SessionProcess(asyncssh.SSHServerProcess[bytes]):
    """A session channel: asyncssh's process, with requests sshd would refuse refused and
    signals and window changes acted on at once instead of queued behind stdin data."""

    def __init__(self, handler: Callable[[SessionProcess], Awaitable[None]], cwd: bytes) -> None:
        def start(process: asyncssh.SSHServerProcess[Any]) -> Awaitable[None]:
            return handler(cast(SessionProcess, process))

        def sftp(chan: SSHChannel[bytes]) -> asyncssh.SFTPServer:
            return SessionSFTPServer(cast("asyncssh.SSHServerChannel[bytes]", chan), cwd)

        # SFTP protocol version 3 is what OpenSSH speaks; allow_scp serves `scp -O`.
        super().__init__(start, sftp, 3, True)
        self.on_signal: Callable[[str], None] | None = None
        self.on_resize: Callable[[int, int, int, int], None] | None = None
        self.on_break: Callable[[], None] | None = None

    def subsystem_requested(self, subsystem: str) -> bool:
        if subsystem != "sftp":
            log.info("Refused subsystem %r (only sftp is served)", subsystem)
            return False
        return super().subsystem_requested(subsystem)

    def signal_received(self, signal: str) -> None:
        if self.on_signal is not None:
            self.on_signal(signal)

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        if self.on_resize is not None:
            self.on_resize(width, height, pixwidth, pixheight)

    def break_received(self, msec: int) -> bool:
        # Only a terminal has a break to send (sshd refuses it without one too).
        if self.on_break is None:
            return False
        self.on_break()
        return True


def session_env(
    daemon: Daemon, conn: Connection, process: SessionProcess, tty: str | None
) -> dict[str, str]:
    s = daemon.settings
    if s.launcher:
        # As sshd does: a fresh environment; the launcher adds the notebook's.
        env = {"PATH": DEFAULT_PATH_ROOT if os.getuid() == 0 else DEFAULT_PATH_USER}
        if "TZ" in os.environ:
            env["TZ"] = os.environ["TZ"]
    else:
        env = dict(os.environ)
    env.update(
        USER=s.login_user,
        LOGNAME=s.login_user,
        HOME=daemon.home,
        SHELL=s.shell,
        SSH_CONNECTION=f"{conn.peer[0]} {conn.peer[1]} {conn.local[0]} {conn.local[1]}",
        SSH_CLIENT=f"{conn.peer[0]} {conn.peer[1]} {conn.local[1]}",
    )
    if tty is not None:
        env["SSH_TTY"] = tty
        env["TERM"] = process.term_type or "dumb"
    else:
        # sshd sets these only with a terminal; the runtime's own must not leak in.
        env.pop("SSH_TTY", None)
        env.pop("TERM", None)
    # Same user on both sides, so no privilege boundary to guard: the client wins, as
    # with SetEnv/SendEnv against an sshd that accepts everything.
    for key, value in process.env.items():
        if key and "=" not in key and "\0" not in key + value:
            env[key] = value
    return env


async def run_session(daemon: Daemon, conn: Connection, process: SessionProcess) -> None:
    sid = daemon.next_id()
    try:
        await _session(daemon, conn, sid, process)
    except Exception:
        log.exception("session %d failed", sid)
        with contextlib.suppress(Exception):
            process.exit(255)


async def _session(daemon: Daemon, conn: Connection, sid: int, process: SessionProcess) -> None:
    s = daemon.settings
    command = process.command
    use_pty = process.term_type is not None
    shell_name = os.path.basename(s.shell)
    executable = s.shell
    if s.launcher:
        # Like sshd with its ForceCommand: the launcher, started in the home directory,
        # finds the request in SSH_ORIGINAL_COMMAND and the notebook's environment.
        argv = ["/bin/sh", s.launcher]
        executable = "/bin/sh"
        cwd = daemon.home if os.path.isdir(daemon.home) else "/"
    else:
        # No command: a login shell ("-bash"), as sshd starts it.
        argv = [f"-{shell_name}"] if command is None else [shell_name, "-c", command]
        cwd = s.cwd if os.path.isdir(s.cwd) else "/"
        if cwd != s.cwd:
            process.stderr.write(f"Could not chdir to {s.cwd}: no such directory\n".encode())

    master = slave = -1
    tty: str | None = None
    fds: list[int] = []
    try:
        if use_pty:
            master, slave = os.openpty()
            tty = os.ttyname(slave)
            set_winsize(slave, *process.term_size)
            apply_modes(slave, process.term_modes)
            stdio: tuple[int, int, int] = (slave, slave, slave)
        else:
            in_r, in_w = os.pipe()
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            fds = [in_w, out_r, err_r]
            grow_pipe(in_w)
            grow_pipe(out_r)
            stdio = (in_r, out_w, err_w)
        env = session_env(daemon, conn, process, tty)
        if s.launcher and command is not None:
            env["SSH_ORIGINAL_COMMAND"] = command
        child = spawn(daemon.reaper, argv, executable, stdio, cwd, env, on_pty=use_pty)
    except OSError as exc:
        for fd in (master, *fds):
            if fd >= 0:
                os.close(fd)
        log.error("session %d: cannot start %s: %s", sid, s.shell, exc)
        process.stderr.write(f"cannot start {s.shell}: {exc.strerror or exc}\n".encode())
        process.exit(127)
        return

    popen = child.popen
    daemon.children[popen.pid] = child
    kind = ("shell" if command is None else "exec") + (" on a pty" if use_pty else "")
    log.info(
        "session %d started for %s from %s: %s, pid %d",
        sid,
        conn.user,
        conn.where(),
        kind,
        popen.pid,
    )

    def on_signal(name: str) -> None:
        sig = getattr(signal, f"SIG{name}", None)
        if not isinstance(sig, signal.Signals):
            return
        group = child.pgid
        if use_pty:
            # On a terminal the job in the foreground (not the shell) is the target,
            # as when the same key is typed.
            with contextlib.suppress(OSError):
                group = os.tcgetpgrp(master)
        signal_group(group, sig)

    process.on_signal = on_signal
    try:
        if use_pty:
            status = await _run_pty(process, child, master)
        else:
            status = await _run_pipes(process, child, *fds)
    finally:
        daemon.children.pop(popen.pid, None)
    popen.returncode = os.waitstatus_to_exitcode(status)

    if os.WIFSIGNALED(status):
        name = signal.Signals(os.WTERMSIG(status)).name[3:]
        log.info("session %d ended: killed by SIG%s", sid, name)
        with contextlib.suppress(OSError):
            process.exit_with_signal(name, os.WCOREDUMP(status))
    else:
        code = os.WEXITSTATUS(status)
        log.info("session %d ended: exit %d", sid, code)
        with contextlib.suppress(OSError):
            process.exit(code)


async def _run_pipes(
    process: SessionProcess, child: Child, in_w: int, out_r: int, err_r: int
) -> int:
    for fd in (in_w, out_r, err_r):
        os.set_blocking(fd, False)
    pumps = [
        asyncio.create_task(fd_to_channel(out_r, process.stdout, close=True)),
        asyncio.create_task(fd_to_channel(err_r, process.stderr, close=True)),
    ]
    feed = asyncio.create_task(channel_to_fd(process.stdin, in_w, close=True))
    try:
        # Like sshd: the session ends when the command has exited and its output is
        # closed (a background job holding stdout keeps it open, as it does there).
        await asyncio.wait(pumps)
        return await child.exited
    finally:
        for task in (*pumps, feed):
            task.cancel()
        await asyncio.gather(*pumps, feed, return_exceptions=True)


async def _run_pty(process: SessionProcess, child: Child, master: int) -> int:
    os.set_blocking(master, False)

    def on_resize(cols: int, rows: int, xpix: int, ypix: int) -> None:
        # The kernel sends SIGWINCH to the terminal's foreground job.
        with contextlib.suppress(OSError):
            set_winsize(master, cols, rows, xpix, ypix)

    def on_break() -> None:
        with contextlib.suppress(termios.error):
            termios.tcsendbreak(master, 0)

    process.on_resize = on_resize
    process.on_break = on_break
    out = asyncio.create_task(fd_to_channel(master, process.stdout, close=False))
    feed = asyncio.create_task(channel_to_fd(process.stdin, master, close=False))
    try:
        status = await child.exited
        await asyncio.wait([out], timeout=_PTY_DRAIN)
        return status
    finally:
        for task in (out, feed):
            task.cancel()
        await asyncio.gather(out, feed, return_exceptions=True)
        # Closing the master hangs up the terminal: what still runs on it gets SIGHUP.
        os.close(master)
