"""The small interface every tunnel backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

from ..config import RuntimeConfig
from ..proc import ChildHolder


class Tunnel(ChildHolder, ABC):
    """Carries the relay's listener to the runtime's local SSH server."""

    kind: str = "base"

    def __init__(self, cfg: RuntimeConfig, local_port: int) -> None:
        self.cfg = cfg
        self.local_port = local_port
        # Called (from a reader thread) when the child exits, so the supervisor wakes at once.
        self.on_exit: Callable[[], None] | None = None

    @abstractmethod
    def start(self, timeout: float) -> None:
        """Open the tunnel; return once the relay confirmed the forward.

        Raises TunnelError (``permanent=True`` when retrying cannot help).
        """

    @abstractmethod
    def check(self, timeout: float) -> None:
        """Prove the path end to end: the runtime's SSH banner comes back through the relay."""

    @abstractmethod
    def failure(self) -> Exception:
        """Why a tunnel that was up has ended (a TunnelError, classified)."""

    @property
    def endpoint(self) -> str:
        relay = self.cfg.relay
        if self.cfg.mode == "public":
            return f"{relay.public_host}:{relay.remote_port}"
        return f"{relay.user}@{relay.host}:{relay.port}:{relay.socket_path} (private)"
