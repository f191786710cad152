"""The embedded SSH server: a pure-Python stand-in for sshd where sshd cannot run.

Run as ``python -m handy_colab.server.asyncssh_server --config /abs/embedded_server.json``
(``EmbeddedServer`` in embedded.py writes the config and watches the process). It needs no
root, no binaries and no apt: key-only login for one user, a login shell on a PTY, exec with
exit codes and signals, SFTP, scp (both protocols), and TCP/Unix-socket forwards.

It prints ``READY_LINE`` once it accepts connections and logs one line per auth decision
(key fingerprints only), per session start/end and per error, all to stderr. On SIGTERM,
SIGINT or SIGHUP it closes every connection, hangs up every session's process group, kills
whatever is left, and exits 0: nothing it started survives it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import dataclasses
import errno
import fcntl
import itertools
import json
import logging
import os
import posixpath
import signal
import stat
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import asyncssh

from ..proc import descendants
from .base import READY_LINE
from .embedded import login_defaults
from .session import DEFAULT_PATH_ROOT, DEFAULT_PATH_USER, session_cwd

if TYPE_CHECKING:
    from asyncssh.channel import SSHChannel

log = logging.getLogger(__name__)

# Reads of this size let one pipe read become a whole window's worth of channel packets;
# the per-read cost is then paid once per ~32 packets instead of once per packet.
_CHUNK = 1 << 20
_F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ, named only from Python 3.10 on Linux
_PR_SET_CHILD_SUBREAPER = 36
# After the shell of a PTY session exits, background jobs may hold the terminal open for
# ever; sshd ends the session anyway once the shell is gone. This is how long output that
# the shell wrote just before exiting gets to reach the client.
_PTY_DRAIN = 0.5
_HANGUP_GRACE = 1.0  # between SIGHUP and SIGKILL at shutdown (the parent waits 3 s in all)

# OpenSSH picks the first cipher of its own list that the server offers. Its first choice,
# chacha20-poly1305, costs asyncssh four cipher set-ups per packet (measured ~0.75x of
# sshd's throughput); AES-CTR/GCM keep one context per key and run at or above sshd's
# chacha20 speed. Not offering chacha20 makes stock clients pick aes128-ctr (or GCM).
_CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
)
# asyncssh's default MACs less SHA-1 (and ssh.com's variants): what OpenSSH 9.x offers first
# stays (umac, hmac-sha2 etm); a client that would take hmac-sha1 first (sshj) gets sha2.
_MACS = (
    "umac-64-etm@openssh.com",
    "umac-128-etm@openssh.com",
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
    "umac-64@openssh.com",
    "umac-128@openssh.com",
    "hmac-sha2-256",
    "hmac-sha2-512",
)

# RFC 4254 8: opcode -> (index in the termios attribute list, flag) and control characters.
# The character size and parity modes (90-93) mean nothing on a pseudo-terminal.
_MODE_FLAGS: dict[int, tuple[int, str]] = {
    30: (0, "IGNPAR"), 31: (0, "PARMRK"), 32: (0, "INPCK"), 33: (0, "ISTRIP"),
    34: (0, "INLCR"), 35: (0, "IGNCR"), 36: (0, "ICRNL"), 37: (0, "IUCLC"),
    38: (0, "IXON"), 39: (0, "IXANY"), 40: (0, "IXOFF"), 41: (0, "IMAXBEL"),
    42: (0, "IUTF8"),
    50: (3, "ISIG"), 51: (3, "ICANON"), 52: (3, "XCASE"), 53: (3, "ECHO"),
    54: (3, "ECHOE"), 55: (3, "ECHOK"), 56: (3, "ECHONL"), 57: (3, "NOFLSH"),
    58: (3, "TOSTOP"), 59: (3, "IEXTEN"), 60: (3, "ECHOCTL"), 61: (3, "ECHOKE"),
    62: (3, "PENDIN"),
    70: (1, "OPOST"), 71: (1, "OLCUC"), 72: (1, "ONLCR"), 73: (1, "OCRNL"),
    74: (1, "ONOCR"), 75: (1, "ONLRET"),
}  # fmt: skip
_MODE_CHARS: dict[int, str] = {
    1: "VINTR", 2: "VQUIT", 3: "VERASE", 4: "VKILL", 5: "VEOF", 6: "VEOL", 7: "VEOL2",
    8: "VSTART", 9: "VSTOP", 10: "VSUSP", 12: "VREPRINT", 13: "VWERASE", 14: "VLNEXT",
    18: "VDISCARD",
}  # fmt: skip


@dataclass(frozen=True)
class Settings:
    """The JSON config written by EmbeddedServer.prepare()."""

    port: int
    host_key: str
    authorized_keys: str
    login_user: str
    cwd: str
    shell: str
    # Set by a runtime (not the demo's relay): sessions start through handy-colab's
    # launcher, and the notebook's directory is read from session.json at each session.
    launcher: str = ""
    session_info: str = ""

    @classmethod
    def load(cls, path: Path) -> Settings:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError("the config must be a JSON object")
        missing = [
            k for k in ("port", "host_key", "authorized_keys", "login_user") if k not in data
        ]
        if missing:
            raise ValueError(f"missing field(s): {', '.join(missing)}")
        port = data["port"]
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be 0-65535, not {port!r}")
        home, shell = login_defaults()
        return cls(
            port=port,
            host_key=str(data["host_key"]),
            authorized_keys=str(data["authorized_keys"]),
            login_user=str(data["login_user"]),
            cwd=str(data.get("cwd") or home),
            shell=str(data.get("shell") or shell),
            launcher=str(data.get("launcher") or ""),
            session_info=str(data.get("session_info") or ""),
        )


# -- child processes -----------------------------------------------------------------------


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


def _become_subreaper() -> None:
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


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _set_ctty() -> None:  # pragma: no cover - runs in the forked child
    # start_new_session already made the child a session leader; this makes the PTY on
    # fd 0 its controlling terminal, so job control, ^C and SIGWINCH work as under sshd.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _grow_pipe(fd: int) -> None:
    # 1 MiB is the default unprivileged maximum; fewer, larger reads and writes.
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, _F_SETPIPE_SZ, _CHUNK)


def _set_winsize(fd: int, cols: int, rows: int, xpix: int, ypix: int) -> None:
    if cols > 0 and rows > 0:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, xpix, ypix))


def _apply_modes(fd: int, modes: Mapping[int, int]) -> None:
    """Apply the client's terminal modes (erase character, echo, ...), as sshd does."""
    if not modes:
        return
    attrs = termios.tcgetattr(fd)
    cc = attrs[6]
    for opcode, value in modes.items():
        if opcode in _MODE_CHARS:
            index = getattr(termios, _MODE_CHARS[opcode], None)
            if index is not None and index < len(cc):
                # 255 means "disabled"; Linux spells that as 0 (_POSIX_VDISABLE).
                cc[index] = bytes([0 if value == 255 else value & 0xFF])
        elif opcode in _MODE_FLAGS:
            slot, name = _MODE_FLAGS[opcode]
            flag = getattr(termios, name, None)
            if flag is None:
                continue
            attrs[slot] = attrs[slot] | flag if value else attrs[slot] & ~flag
    with contextlib.suppress(termios.error):
        termios.tcsetattr(fd, termios.TCSANOW, attrs)


async def _wait_fd(fd: int, writable: bool) -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    if writable:
        loop.add_writer(fd, ready)
    else:
        loop.add_reader(fd, ready)
    try:
        await fut
    finally:
        if writable:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


async def _fd_to_channel(fd: int, writer: asyncssh.SSHWriter[bytes], close: bool) -> None:
    """Copy a child's output to the client until EOF (EIO: a PTY nobody holds any more).

    With ``close``, the fd is closed however this ends: once the client is gone the child
    gets EPIPE/SIGPIPE on its next write, as under sshd, instead of blocking on a full pipe.
    """
    try:
        while True:
            try:
                data = os.read(fd, _CHUNK)
            except BlockingIOError:
                await _wait_fd(fd, writable=False)
                continue
            except OSError as exc:
                if exc.errno == errno.EIO:
                    return
                raise
            if not data:
                return
            writer.write(data)
            # Returns at once unless the channel's window or buffer is full: flow control
            # is asyncssh's, and a slow client simply stops us reading the pipe.
            await writer.drain()
    finally:
        if close:
            with contextlib.suppress(OSError):
                os.close(fd)


async def _channel_to_fd(reader: asyncssh.SSHReader[bytes], fd: int, close: bool) -> None:
    """Copy the client's input to the child; EOF from the client closes the child's stdin."""
    broken = False
    try:
        while True:
            data = await reader.read(_CHUNK)
            if not data:
                return
            if broken:
                # The child closed its stdin: keep the channel flowing, drop the data.
                continue
            view = memoryview(data)
            while view:
                try:
                    view = view[os.write(fd, view) :]
                except BlockingIOError:
                    await _wait_fd(fd, writable=True)
                except OSError:
                    broken = True
                    break
    finally:
        if close:
            with contextlib.suppress(OSError):
                os.close(fd)


# -- SFTP, sessions, connections ----------------------------------------------------------


class _SFTPServer(asyncssh.SFTPServer):
    """asyncssh's SFTP server, with relative paths anchored at the session directory."""

    def __init__(self, chan: asyncssh.SSHServerChannel[bytes], cwd: bytes) -> None:
        super().__init__(chan)
        self._cwd = cwd

    def map_path(self, path: bytes) -> bytes:
        # By default a relative path resolves against this server process's cwd; clients
        # expect their home (sftp's "." and scp's "host:file").
        return posixpath.join(self._cwd, path)

    def exit(self) -> None:
        # OpenSSH's scp (SFTP mode) exits 1 unless the subsystem reports an exit status.
        with contextlib.suppress(OSError):
            self.channel.exit(0)


class _Process(asyncssh.SSHServerProcess[bytes]):
    """A session channel: asyncssh's process, with requests sshd would refuse refused and
    signals and window changes acted on at once instead of queued behind stdin data."""

    def __init__(self, handler: Callable[[_Process], Awaitable[None]], cwd: bytes) -> None:
        def start(process: asyncssh.SSHServerProcess[Any]) -> Awaitable[None]:
            return handler(cast(_Process, process))

        def sftp(chan: SSHChannel[bytes]) -> asyncssh.SFTPServer:
            return _SFTPServer(cast("asyncssh.SSHServerChannel[bytes]", chan), cwd)

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


@dataclass
class _Child:
    popen: subprocess.Popen[bytes]
    exited: asyncio.Future[int]

    @property
    def pgid(self) -> int:
        return self.popen.pid  # a session leader: its pid is its group


class Daemon:
    """Server-wide state: settings, live connections and session children."""

    def __init__(self, settings: Settings, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.loop = loop
        self.reaper = Reaper(loop)
        self.connections: set[asyncssh.SSHServerConnection] = set()
        self.children: dict[int, _Child] = {}
        self._ids = itertools.count(1)
        self.cwd_bytes = os.fsencode(settings.cwd)
        self.home = login_defaults()[0]

    def new_connection(self) -> _Connection:
        return _Connection(self)

    def next_id(self) -> int:
        return next(self._ids)

    def session_cwd(self) -> bytes:
        """Where a session starts: the notebook's directory as of the latest ``up``."""
        if self.settings.session_info:
            cwd = session_cwd(Path(self.settings.session_info))
            if cwd is not None:
                return os.fsencode(cwd)
        return self.cwd_bytes

    def session_env(self, conn: _Connection, process: _Process, tty: str | None) -> dict[str, str]:
        s = self.settings
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
            HOME=self.home,
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

    async def shutdown(self) -> None:
        groups = [child.pgid for child in self.children.values()]
        pending = [c.exited for c in self.children.values() if not c.exited.done()]
        for conn in list(self.connections):
            conn.close()
        for pgid in groups:
            _signal_group(pgid, signal.SIGHUP)
            _signal_group(pgid, signal.SIGCONT)  # a stopped job acts on SIGHUP only when continued
        if pending:
            await asyncio.wait(pending, timeout=_HANGUP_GRACE)
        # Whatever ignored the hang-up, left its group or was orphaned to us as subreaper.
        leftovers = descendants(os.getpid())
        for pgid in groups:
            _signal_group(pgid, signal.SIGKILL)
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if leftovers:
            log.info("Killed %d process(es) left after the hang-up", len(leftovers))
        # The parent SIGKILLs us 3 s after its SIGTERM: stay well inside that.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            self.reaper.reap()
            if not descendants(os.getpid()):
                break
            await asyncio.sleep(0.02)
        self.reaper.reap()
        closing = [asyncio.ensure_future(conn.wait_closed()) for conn in self.connections]
        if closing:
            await asyncio.wait(closing, timeout=0.3)


class _Connection(asyncssh.SSHServer):
    """One client connection: key-only auth for the one login user, sessions, forwards."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.conn: asyncssh.SSHServerConnection | None = None
        self.peer: tuple[str, int] = ("?", 0)
        self.local: tuple[str, int] = ("127.0.0.1", daemon.settings.port)
        self.user = ""
        self.allowed: set[bytes] = set()
        self.accepted_key = ""

    def where(self) -> str:
        return f"{self.peer[0]} port {self.peer[1]}"

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        self.daemon.connections.add(conn)
        peer = conn.get_extra_info("peername")
        sock = conn.get_extra_info("sockname")
        if isinstance(peer, tuple):
            self.peer = (str(peer[0]), int(peer[1]))
        if isinstance(sock, tuple):
            self.local = (str(sock[0]), int(sock[1]))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None:
            self.daemon.connections.discard(self.conn)
        if self.accepted_key:
            reason = f": {exc}" if exc else ""
            log.info("Disconnected from user %s %s%s", self.user, self.where(), reason)

    # Auth: public keys only (asyncssh offers no method this class does not enable).

    def begin_auth(self, username: str) -> bool:
        self.user = username
        if username != self.daemon.settings.login_user:
            log.info(
                "Refused user %s from %s: only %s may log in",
                username,
                self.where(),
                self.daemon.settings.login_user,
            )
            return True
        # Read per connection so a rewritten authorized_keys applies without a restart.
        self.allowed = _read_authorized_keys(self.daemon.settings.authorized_keys)
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        fp = f"{key.get_algorithm()} {key.get_fingerprint('sha256')}"
        if username == self.daemon.settings.login_user and key.public_data in self.allowed:
            self.accepted_key = fp
            return True
        if username == self.daemon.settings.login_user:
            log.info("Refused publickey for %s from %s: %s", username, self.where(), fp)
        return False

    def auth_completed(self) -> None:
        log.info(
            "Accepted publickey for %s from %s: %s", self.user, self.where(), self.accepted_key
        )

    # Sessions and forwards.

    def session_requested(self) -> _Process:
        return _Process(self.run_session, self.daemon.session_cwd())

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> bool:
        return True  # -L and -D: asyncssh opens the connection and pipes it

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        # ssh sends "localhost" for -R PORT:... (loopback only) and "" only for an explicit
        # -R *:PORT or -R :PORT, so binding what was asked is sshd's clientspecified mode.
        log.info("Remote forward for %s on %s:%d", self.user, listen_host or "*", listen_port)
        return True

    def unix_connection_requested(self, dest_path: str) -> bool:
        return True

    def unix_server_requested(self, listen_path: str) -> bool:
        log.info("Remote forward for %s on socket %s", self.user, listen_path)
        # sshd's StreamLocalBindUnlink yes: a socket left by a dead forward is replaced at
        # once instead of refusing the new one. Only sockets: never a regular file.
        with contextlib.suppress(OSError):
            if stat.S_ISSOCK(os.lstat(listen_path).st_mode):
                os.unlink(listen_path)
        return True

    async def run_session(self, process: _Process) -> None:
        sid = self.daemon.next_id()
        try:
            await self._session(sid, process)
        except Exception:
            log.exception("session %d failed", sid)
            with contextlib.suppress(Exception):
                process.exit(255)

    async def _session(self, sid: int, process: _Process) -> None:
        s = self.daemon.settings
        command = process.command
        use_pty = process.term_type is not None
        shell_name = os.path.basename(s.shell)
        executable = s.shell
        if s.launcher:
            # Like sshd with its ForceCommand: the launcher, started in the home directory,
            # finds the request in SSH_ORIGINAL_COMMAND and the notebook's environment.
            argv = ["/bin/sh", s.launcher]
            executable = "/bin/sh"
            cwd = self.daemon.home if os.path.isdir(self.daemon.home) else "/"
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
                _set_winsize(slave, *process.term_size)
                _apply_modes(slave, process.term_modes)
                stdio: tuple[int, int, int] = (slave, slave, slave)
            else:
                in_r, in_w = os.pipe()
                out_r, out_w = os.pipe()
                err_r, err_w = os.pipe()
                fds = [in_w, out_r, err_r]
                _grow_pipe(in_w)
                _grow_pipe(out_r)
                stdio = (in_r, out_w, err_w)
            env = self.daemon.session_env(self, process, tty)
            if s.launcher and command is not None:
                env["SSH_ORIGINAL_COMMAND"] = command
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
                    preexec_fn=_set_ctty if use_pty else None,
                )
            finally:
                for fd in {*stdio}:
                    os.close(fd)
        except OSError as exc:
            for fd in (master, *fds):
                if fd >= 0:
                    os.close(fd)
            log.error("session %d: cannot start %s: %s", sid, s.shell, exc)
            process.stderr.write(f"cannot start {s.shell}: {exc.strerror or exc}\n".encode())
            process.exit(127)
            return

        child = _Child(popen, self.daemon.reaper.watch(popen.pid))
        self.daemon.children[popen.pid] = child
        kind = ("shell" if command is None else "exec") + (" on a pty" if use_pty else "")
        log.info(
            "session %d started for %s from %s: %s, pid %d",
            sid,
            self.user,
            self.where(),
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
            _signal_group(group, sig)

        process.on_signal = on_signal
        try:
            if use_pty:
                status = await self._run_pty(process, child, master)
            else:
                status = await self._run_pipes(process, child, *fds)
        finally:
            self.daemon.children.pop(popen.pid, None)
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
        self, process: _Process, child: _Child, in_w: int, out_r: int, err_r: int
    ) -> int:
        for fd in (in_w, out_r, err_r):
            os.set_blocking(fd, False)
        pumps = [
            asyncio.create_task(_fd_to_channel(out_r, process.stdout, close=True)),
            asyncio.create_task(_fd_to_channel(err_r, process.stderr, close=True)),
        ]
        feed = asyncio.create_task(_channel_to_fd(process.stdin, in_w, close=True))
        try:
            # Like sshd: the session ends when the command has exited and its output is
            # closed (a background job holding stdout keeps it open, as it does there).
            await asyncio.wait(pumps)
            return await child.exited
        finally:
            for task in (*pumps, feed):
                task.cancel()
            await asyncio.gather(*pumps, feed, return_exceptions=True)

    async def _run_pty(self, process: _Process, child: _Child, master: int) -> int:
        os.set_blocking(master, False)

        def on_resize(cols: int, rows: int, xpix: int, ypix: int) -> None:
            # The kernel sends SIGWINCH to the terminal's foreground job.
            with contextlib.suppress(OSError):
                _set_winsize(master, cols, rows, xpix, ypix)

        def on_break() -> None:
            with contextlib.suppress(termios.error):
                termios.tcsendbreak(master, 0)

        process.on_resize = on_resize
        process.on_break = on_break
        out = asyncio.create_task(_fd_to_channel(master, process.stdout, close=False))
        feed = asyncio.create_task(_channel_to_fd(process.stdin, master, close=False))
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


def _read_authorized_keys(path: str) -> set[bytes]:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as exc:
        log.error("cannot read authorized keys %s: %s", path, exc.strerror)
        return set()
    keys: set[bytes] = set()
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            keys.add(asyncssh.import_public_key(line).public_data)
        except (asyncssh.KeyImportError, ValueError):
            # A line with options (from=, command=, ...) lands here: ignoring the line is
            # safe, accepting its key without honouring the options would not be.
            log.warning("%s line %d: not a plain public key line; ignored", path, number)
    return keys


# -- main -----------------------------------------------------------------------------------


async def serve(settings: Settings) -> int:
    loop = asyncio.get_running_loop()
    daemon = Daemon(settings, loop)
    daemon.reaper.install()
    _become_subreaper()
    try:
        host_key = asyncssh.read_private_key(settings.host_key)
    except (OSError, asyncssh.KeyImportError, ValueError) as exc:
        log.critical("Unable to load host key %s: %s", settings.host_key, exc)
        return 1
    try:
        acceptor = await asyncssh.listen(
            "127.0.0.1",
            settings.port,
            server_factory=daemon.new_connection,
            server_host_keys=[host_key],
            encoding=None,
            line_editor=False,
            agent_forwarding=False,
            x11_forwarding=False,
            gss_host=None,
            password_auth=False,
            kbdint_auth=False,
            encryption_algs=list(_CIPHERS),
            mac_algs=list(_MACS),
            keepalive_interval=15,
            keepalive_count_max=4,
            login_timeout=60,
            reuse_address=True,
        )
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        log.critical("Bind to port %d on 127.0.0.1 failed: %s.", settings.port, reason)
        return 1
    port = acceptor.get_port()
    daemon.settings = dataclasses.replace(settings, port=port)
    stop = asyncio.Event()
    received: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, on_signal, sig)
    print(READY_LINE.format(port=port), file=sys.stderr, flush=True)
    await stop.wait()
    log.info("Received %s; closing connections and sessions", received[0])
    acceptor.close()
    await daemon.shutdown()
    return 0


class _Formatter(logging.Formatter):
    """sshd-like lines: bare messages, "error: "/"fatal: " prefixes (EmbeddedServer matches
    "fatal: " at start-up)."""

    _PREFIX = {logging.WARNING: "warning: ", logging.ERROR: "error: ", logging.CRITICAL: "fatal: "}

    def format(self, record: logging.LogRecord) -> str:
        return self._PREFIX.get(record.levelno, "") + super().format(record)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, type=Path)
    args = parser.parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter("%(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    # asyncssh logs every channel and request at INFO; ours are the lines worth keeping.
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    try:
        settings = Settings.load(args.config)
    except (OSError, ValueError) as exc:
        log.critical("bad config %s: %s", args.config, exc)
        return 2
    return asyncio.run(serve(settings))


if __name__ == "__main__":
    sys.exit(main())
