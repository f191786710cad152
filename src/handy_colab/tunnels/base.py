"""The small interface every tunnel backend implements."""

from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..config import RuntimeConfig
from ..errors import BinaryError, TunnelError
from ..proc import ChildHolder, WatchedProcess
from .common import classify

if TYPE_CHECKING:
    from ..binaries import Resolved
    from ..connection import RouteEndpoint


def check_program(binary: Resolved) -> None:
    """Before a route (re)starts its program: the bytes verified are the bytes run. A file
    that changed since is a permanent failure: retrying would only find it changed again."""
    try:
        binary.check()
    except BinaryError as exc:
        raise TunnelError(str(exc), permanent=True) from None


log = logging.getLogger(__name__)


class Tunnel(ChildHolder, ABC):
    """Carries the relay's listener to the runtime's local SSH server."""

    kind: str = "base"
    # What the child prints once the relay confirmed the forward, and (optionally) a line
    # that means it failed; a child that says why and then exits needs no fail pattern.
    ready: re.Pattern[str]
    fail: re.Pattern[str] | None = None

    def __init__(self, cfg: RuntimeConfig, local_port: int) -> None:
        self.cfg = cfg
        self.local_port = local_port
        # Called (from a reader thread) when the child exits, so the supervisor wakes at once.
        self.on_exit: Callable[[], None] | None = None
        # One-line remarks for `up` to show (e.g. an unverified server), not errors.
        self.warnings: list[str] = []
        # Called when a start waits on the relay (a port a previous runtime still holds),
        # with what it waits for: the supervisor puts it in the state `up` and `status` read.
        self.on_wait: Callable[[str], None] | None = None

    @abstractmethod
    def argv(self) -> list[str]:
        """The child that holds the tunnel open."""

    @property
    @abstractmethod
    def program(self) -> str:
        """The child's name in an error ("cannot run PROGRAM")."""

    @abstractmethod
    def forward_desc(self) -> str:
        """The forward, for the log."""

    def start(self, timeout: float) -> None:
        """Open the tunnel; return once the relay confirmed the forward.

        Raises TunnelError (``permanent=True`` when retrying cannot help).
        """
        self.stop()
        try:
            self.proc = WatchedProcess(self.argv(), label="tunnel", on_exit=self.on_exit)
        except OSError as exc:
            raise TunnelError(f"cannot run {self.program}: {exc}") from None
        status, _ = self.proc.wait_for(self.ready, self.fail, timeout)
        if status == "ready":
            log.info("relay accepted the forward %s (pid %d)", self.forward_desc(), self.proc.pid)
            return
        if status == "timeout":
            self.stop()
            raise TunnelError(
                f"relay {self.cfg.ssh_relay.host}:{self.cfg.ssh_relay.port} did not confirm "
                f"the forward within {timeout:.0f}s. Fix: check the relay is "
                f"reachable from the runtime"
            )
        err = self.failure()
        self.stop()
        raise err

    def failure(self) -> TunnelError:
        """Why a tunnel that was up has ended (classified from the child's last lines)."""
        if self.proc is None:
            return TunnelError("tunnel is not running")
        self.proc.settle()
        return classify(self.proc.last_lines(30), self.cfg, self.cfg.ssh_relay.key.path.name)

    @abstractmethod
    def check(self, timeout: float) -> None:
        """Prove the path end to end: the runtime's SSH banner comes back through the relay.

        Raises ``common.CheckTimeout`` when no answer came in time (inconclusive: see
        `traffic`), any other TunnelError when the path is proven broken.
        """

    def traffic(self) -> int | None:
        """Bytes the tunnel's client has read so far (None: unknown).

        A check that timed out while this grew by more than the check's own few hundred
        bytes was slow, not broken: the client is reading from its relay connection, so
        neither it nor that connection is frozen. Read from /proc (no packet, no
        connection: nothing that could keep a stale listener alive).
        """
        pid = self.pid
        if pid is None:
            return None
        try:
            with open(f"/proc/{pid}/io") as fh:
                for line in fh:
                    if line.startswith("rchar:"):
                        return int(line.split()[1])
        except (OSError, ValueError):
            return None
        return None

    def route_endpoint(self) -> RouteEndpoint | None:
        """Where a route other than the relay put the runtime (None: the relay's fields)."""
        return None

    def details(self) -> dict[str, Any]:
        """Route-specific facts for `status` (a cloudflared hostname, protocol...)."""
        return {}

    @property
    def endpoint(self) -> str:
        relay = self.cfg.ssh_relay
        if self.cfg.mode == "public":
            return f"{relay.public_host}:{relay.remote_port}"
        return f"{relay.user}@{relay.host}:{relay.port}:{relay.socket_path} (private)"
