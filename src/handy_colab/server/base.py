"""The small interface every SSH server backend implements (OpenSSH's sshd, embedded)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

from ..config import RuntimeConfig
from ..keys import PrivateKey
from ..state import RuntimeDir

# Every backend prints this line once it accepts connections: readiness is matched on it.
READY_LINE = "Server listening on 127.0.0.1 port {port}"


class Server(ABC):
    """One SSH server on 127.0.0.1 for this runtime, run as a watched child process."""

    kind: str = "base"

    def __init__(self, cfg: RuntimeConfig, rd: RuntimeDir, host_key: PrivateKey) -> None:
        self.cfg = cfg
        self.rd = rd
        self.host_key = host_key
        self.port = cfg.server_port
        # Called (from a reader thread) when the child exits, so the supervisor wakes at once.
        self.on_exit: Callable[[], None] | None = None

    @abstractmethod
    def prepare(self) -> None:
        """Write host key, authorized keys and config; choose the port. Raises ServerError."""

    @abstractmethod
    def start(self, timeout: float = 15.0) -> None:
        """Start the child; return once it listens on ``self.port``. Raises ServerError."""

    @abstractmethod
    def alive(self) -> bool: ...

    @property
    @abstractmethod
    def pid(self) -> int | None: ...

    @abstractmethod
    def last_lines(self, n: int = 5) -> list[str]: ...

    @abstractmethod
    def stop(self) -> None: ...
