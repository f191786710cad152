"""The small interface every SSH server backend implements (OpenSSH's sshd, embedded)."""

from __future__ import annotations

import socket
from abc import ABC, abstractmethod
from collections.abc import Callable

from ..config import RuntimeConfig
from ..errors import ServerError
from ..fsutil import atomic_write
from ..keys import PrivateKey, private_copy
from ..proc import ChildHolder
from ..state import RuntimeDir

# Every backend prints this line once it accepts connections: readiness is matched on it.
READY_LINE = "Server listening on 127.0.0.1 port {port}"


class Server(ChildHolder, ABC):
    """One SSH server on 127.0.0.1 for this runtime, run as a watched child process."""

    kind: str = "base"

    def __init__(self, cfg: RuntimeConfig, rd: RuntimeDir, host_key: PrivateKey) -> None:
        self.cfg = cfg
        self.rd = rd
        self.host_key = host_key
        self.port = cfg.server_port
        self._port_fixed = False
        # Called (from a reader thread) when the child exits, so the supervisor wakes at once.
        self.on_exit: Callable[[], None] | None = None

    @abstractmethod
    def prepare(self) -> None:
        """Write host key, authorized keys and config; choose the port. Raises ServerError."""

    @abstractmethod
    def start(self, timeout: float = 15.0) -> None:
        """Start the child; return once it listens on ``self.port``. Raises ServerError."""

    def fix_port(self) -> int:
        """Choose the port now (0 = a free one; a taken one is the config's fault), before
        ``prepare``: a relay tunnel needs nothing else to be opened meanwhile."""
        if self._port_fixed:
            return self.port
        if self.port == 0:
            self.port = free_port()
        elif port_in_use(self.port):
            raise ServerError(
                f"127.0.0.1:{self.port} (config field 'server.port') is already in "
                f"use. Fix: choose another port or set it to 0 to pick a free one"
            )
        self._port_fixed = True
        return self.port

    def write_keys_and_port(self) -> None:
        """The part of ``prepare`` every backend shares: the 0600 host-key copy, the
        authorized keys, and the port (fix_port, if not fixed already)."""
        private_copy(self.host_key, self.rd.host_key)
        atomic_write(
            self.rd.authorized_keys,
            "".join(k.line + "\n" for k in self.cfg.authorized_keys),
            mode=0o600,
        )
        self.fix_port()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False
