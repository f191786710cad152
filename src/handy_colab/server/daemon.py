"""The embedded server's shared state, and how it ends: nothing it started survives it.

One Daemon per server process holds the settings, the live connections and every session's
child. Its shutdown is what ``down`` relies on: close every connection, hang up each
session's process group (SIGHUP, then SIGCONT so stopped jobs act on it), then SIGKILL
whatever is left, including orphans inherited as child subreaper, all within the 3 s the
parent (EmbeddedServer.stop) waits before it SIGKILLs the server itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import time
from pathlib import Path

import asyncssh

from ..proc import descendants
from .children import Child, Reaper, signal_group
from .connection import Connection
from .embedded import login_defaults
from .session import session_cwd
from .settings import Settings

log = logging.getLogger(__name__)

_HANGUP_GRACE = 1.0  # between SIGHUP and SIGKILL at shutdown (the parent waits 3 s in all)


class Daemon:
    """Server-wide state: settings, live connections and session children."""

    def __init__(self, settings: Settings, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.loop = loop
        self.reaper = Reaper(loop)
        self.connections: set[asyncssh.SSHServerConnection] = set()
        self.children: dict[int, Child] = {}
        self._ids = itertools.count(1)
        self.cwd_bytes = os.fsencode(settings.cwd)
        self.home = login_defaults()[0]

    def new_connection(self) -> Connection:
        return Connection(self)

    def next_id(self) -> int:
        return next(self._ids)

    def session_cwd(self) -> bytes:
        """Where a session starts: the notebook's directory as of the latest ``up``."""
        if self.settings.session_info:
            cwd = session_cwd(Path(self.settings.session_info))
            if cwd is not None:
                return os.fsencode(cwd)
        return self.cwd_bytes

    async def shutdown(self) -> None:
        groups = [child.pgid for child in self.children.values()]
        pending = [c.exited for c in self.children.values() if not c.exited.done()]
        for conn in list(self.connections):
            conn.close()
        for pgid in groups:
            signal_group(pgid, signal.SIGHUP)
            signal_group(pgid, signal.SIGCONT)  # a stopped job acts on SIGHUP only when continued
        if pending:
            await asyncio.wait(pending, timeout=_HANGUP_GRACE)
        # Whatever ignored the hang-up, left its group or was orphaned to us as subreaper.
        leftovers = descendants(os.getpid())
        for pgid in groups:
            signal_group(pgid, signal.SIGKILL)
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
