"""The supervisor's end-to-end check: run on a thread of its own, and judged when it ends.

A live tunnel process is not a working path (it may be frozen, or the relay may have dropped
the forward without closing the session), so the supervisor proves the path every
``INTERVAL`` seconds. The check runs beside the supervisor's loop, so a child's death is
acted on at once while a check waits; and a check that merely timed out while the tunnel's
client kept reading data (busy sessions on a loaded machine) is not counted as a failure.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from .errors import TunnelError
from .tunnels.base import Tunnel
from .tunnels.common import CheckTimeout

log = logging.getLogger(__name__)

INTERVAL = 10.0
RETRY = 2.0  # after a failed check, look again soon: one miss may be noise
TIMEOUT = 8.0
FAILURES = 2  # failed checks in a row that force a reconnect
# A check that timed out while the tunnel's client read at least this much was slow, not
# broken (busy sessions); the check's own traffic and ssh's keepalives are a few hundred
# bytes, so a frozen client or a dead connection never gets there.
BUSY_BYTES = 64 * 1024


@dataclass
class Check:
    """One end-to-end check, run on its own thread so the loop keeps tending the children."""

    number: int
    tunnel_pid: int | None  # the tunnel it checks: a restart meanwhile voids its verdict
    traffic_before: int | None
    started: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    error: TunnelError | None = None


def begin(tunnel: Tunnel, number: int, on_done: Callable[[], None]) -> Check:
    """Start check ``number`` of ``tunnel``; ``on_done`` is called from its thread at the end."""
    check = Check(number, tunnel.pid, tunnel.traffic())

    def run() -> None:
        try:
            tunnel.check(timeout=TIMEOUT)
        except TunnelError as exc:
            check.error = exc
        except Exception as exc:  # a bug in a check is a failed check, not a dead loop
            log.exception("end-to-end check crashed")
            check.error = TunnelError(f"end-to-end check crashed: {exc!r}")
        finally:
            check.done.set()
            on_done()

    threading.Thread(target=run, name=f"check-{number}", daemon=True).start()
    return check


Verdict = Literal["passed", "ignored", "busy", "failed"]


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    error: TunnelError | None = None  # set for "failed"
    moved: int = 0  # bytes the tunnel read during a "busy" check


def judge(check: Check, tunnel: Tunnel) -> Judgement:
    """What a finished check says: only a definite failure, or a timeout while the tunnel
    moved no data, is a failure."""
    if check.tunnel_pid != tunnel.pid:
        return Judgement("ignored")  # the tunnel was restarted while it ran
    exc = check.error
    if exc is None:
        return Judgement("passed")
    if isinstance(exc, CheckTimeout):
        after, before = tunnel.traffic(), check.traffic_before
        moved = None if after is None or before is None else after - before
        if moved is not None and moved >= BUSY_BYTES:
            return Judgement("busy", exc, moved)
        exc = TunnelError(f"{exc} (and the tunnel moved no data meanwhile)")
    return Judgement("failed", exc)
