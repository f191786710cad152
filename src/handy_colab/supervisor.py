"""The supervisor: runs the runtime's sshd and tunnel, and brings them back when they drop.

It runs as its own session (exec'd by launch.py or forked by forklaunch.py; its process
entry is supervisor_main.py) so that a notebook cell interrupt or a closed terminal does not
reach it; `handy-colab down` stops it and everything under it. Its only channel to the
outside is ``state.json`` (atomic writes) and its rotated log (and, while `up` waits for
it, the "ready" pipe). The end-to-end check runs on a
thread of its own (health.py), so a child's death is acted on at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import threading
import time
from typing import IO, Any

from . import health
from .backends import choose_server, choose_tunnel, make_server, make_tunnel
from .config import Backend, RuntimeConfig
from .connection import publish_descriptor
from .errors import HandyColabError, TunnelError
from .keys import ensure_host_key
from .server.base import Server
from .server.session import read_info
from .state import RuntimeDir, new_record
from .tunnels.base import Tunnel
from .tunnels.relayport import RelayTunnel

log = logging.getLogger(__name__)

BACKOFF = (0.5, 1.0, 2.0, 3.0, 5.0)
# For this long after a tunnel drops, a failed attempt is retried within FAST_RETRY s: a relay
# restarting or a network blip usually ends within it, and a refused or timed-out connect
# costs the relay nothing (measured, relay down 10 s: the tunnel back 0.3 s after it, 1.7 s
# with the back-off alone). Later the back-off above spares a relay that stays away. A refusal that
# names its own pace (retry_after: a port the relay still holds, asked for by a login each
# time) keeps it.
FAST_RETRY_FOR = 60.0
FAST_RETRY = 0.5
PERMANENT_BACKOFF = 60.0
POLL = 0.5


class Supervisor:
    def __init__(
        self,
        cfg: RuntimeConfig,
        rd: RuntimeDir,
        run_id: str,
        server_kind: Backend | None = None,
        tunnel_kind: str | None = None,
        start_timeout: float = 25.0,
        ready_fd: int | None = None,
    ) -> None:
        self.cfg = cfg
        self.ready_fd = ready_fd
        self.rd = rd
        self.run_id = run_id
        # The command line's choice wins over the config's; "auto" decides from this machine.
        self.server_choice = choose_server(server_kind or cfg.server_kind)
        self.tunnel_choice = choose_tunnel(tunnel_kind, cfg)
        # How long the first start may take (`up --timeout` less the check's own margin).
        self.start_timeout = start_timeout
        self.stop_event = threading.Event()
        # Set when a child exits or a stop is asked: the loop reacts at once, not at its poll.
        self.wake = threading.Event()
        self.server: Server | None = None
        self.tunnel: Tunnel | None = None
        self.state: dict[str, Any] = new_record(
            cfg.name,
            run_id,
            str(cfg.folder),
            cfg.mode,
            (self.server_choice.kind, self.server_choice.reason),
            (self.tunnel_choice.kind, self.tunnel_choice.reason),
        )
        self._lock_fh: IO[str] | None = None
        self._host_key_line = ""
        self._failed_checks = 0
        self._forced: TunnelError | None = None
        self._check: health.Check | None = None
        self._state_lock = threading.Lock()
        self._checks_run = 0

    # -- state -----------------------------------------------------------------------------
    def _set(self, part: str | None, **fields: Any) -> None:
        # The tunnel's first start may report (on_wait) from its own thread while the server
        # starts: one writer at a time.
        with self._state_lock:
            self._set_locked(part, **fields)

    def _set_locked(self, part: str | None, **fields: Any) -> None:
        target = self.state if part is None else self.state[part]
        if "state" in fields and fields["state"] != target.get("state"):
            target["since"] = time.time()
        if "phase" in fields and fields["phase"] != target.get("phase"):
            target["since"] = time.time()
        target.update(fields)
        try:
            self.rd.write_state(self.state)
        except HandyColabError as exc:
            # Keep the tunnel up: a full disk must not take the user's session down with it.
            log.error("%s", exc)

    def acquire(self) -> bool:
        self._lock_fh = open(self.rd.lock_file, "w")  # noqa: SIM115 - held for our lifetime
        try:
            fcntl.flock(self._lock_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self._lock_fh.write(str(os.getpid()))
        self._lock_fh.flush()
        return True

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Bring everything up once; raise on the first failure."""
        host_key = ensure_host_key(self.cfg.folder)
        log.info(
            "server: %s (%s); tunnel: %s (%s)",
            self.server_choice.kind,
            self.server_choice.reason,
            self.tunnel_choice.kind,
            self.tunnel_choice.reason,
        )
        self.server = make_server(self.server_choice.kind, self.cfg, self.rd, host_key)
        self.server.on_exit = self.wake.set
        # The server's port is all a tunnel needs to be opened.
        self.tunnel = make_tunnel(
            self.tunnel_choice.kind, self.cfg, self.rd, self.server.fix_port()
        )
        self.tunnel.on_exit = self.wake.set
        self.tunnel.on_wait = self._tunnel_waits
        self._set("tunnel", endpoint=self.tunnel.endpoint)
        if isinstance(self.tunnel, RelayTunnel):
            # A relay forward only asks the relay to listen: it can be opened while the
            # server is prepared and started, and the log-in to the relay is the longest
            # step of `up`.
            self._start_both(self.server, self.tunnel)
        else:
            # Other routes read the server's banner while they start: it must listen first.
            self.server.prepare()
            self.server.start()
            self._set("server", state="up", pid=self.server.pid, port=self.server.port)
            self.tunnel.start(timeout=self.start_timeout)
        self.tunnel.check(timeout=10)
        self._set("tunnel", state="up", pid=self.tunnel.pid)
        self._publish(host_key.public_line)
        self._set(None, phase="ready", error=None)
        self._tell_up()

    def _start_both(self, server: Server, tunnel: Tunnel) -> None:
        """Prepare and start the server here and open the tunnel in a thread meanwhile."""
        failed: list[BaseException] = []

        def open_tunnel() -> None:
            try:
                tunnel.start(timeout=self.start_timeout)
            except BaseException as exc:  # handed to the caller's thread below
                failed.append(exc)

        opener = threading.Thread(target=open_tunnel, name="tunnel-start", daemon=True)
        opener.start()
        try:
            server.prepare()
            server.start()
        except BaseException:
            # The server's error is the one to report; stopping the tunnel ends its wait.
            tunnel.stop()
            opener.join()
            raise
        self._set("server", state="up", pid=server.pid, port=server.port)
        opener.join()
        if failed:
            raise failed[0]

    def _tell_up(self) -> None:
        """Wake the `up` that started us (it waits on a pipe, see runtime._start)."""
        if self.ready_fd is None:
            return
        with contextlib.suppress(OSError):  # `up` gave up and is gone: nothing to tell
            os.write(self.ready_fd, b"r")
        with contextlib.suppress(OSError):
            os.close(self.ready_fd)
        self.ready_fd = None

    def _publish(self, host_key_line: str) -> None:
        """Write the descriptor for the laptop: once, and again whenever the tunnel's address
        changed (a quick tunnel gets a new hostname on every start)."""
        assert self.tunnel is not None
        self._host_key_line = host_key_line
        info = read_info(self.rd)
        self._set("tunnel", endpoint=self.tunnel.endpoint, details=self.tunnel.details())
        where = publish_descriptor(
            self.cfg,
            # The tunnel's config carries the port a relay allocated (remote_port 0).
            self.tunnel.cfg,
            host_key_line,
            str(info.get("python") or ""),
            str(info.get("cwd") or ""),
            self.tunnel.route_endpoint(),
            [*self.cfg.notices, *self.tunnel.warnings],
        )
        self._set(None, **where)

    def _on_signal(self, _signum: int, _frame: object) -> None:
        self.stop_event.set()
        self.wake.set()

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        if not self.acquire():
            log.info("another supervisor holds %s; exiting", self.rd.lock_file)
            return 3
        self._set(None)
        try:
            try:
                self.start()
            except HandyColabError as exc:
                log.error("start failed: %s", exc)
                self._set(None, phase="failed", error=str(exc))
                return 1
            except Exception as exc:  # a bug must still reach `up` as a reason, not a hang
                log.exception("start crashed")
                self._set(None, phase="failed", error=f"internal error: {exc!r}")
                return 1
            try:
                self.loop()
            except Exception as exc:  # never die silently with the user's session under us
                log.exception("supervisor loop crashed")
                self._set(None, phase="failed", error=f"internal error: {exc!r}")
                return 1
            return 0
        finally:
            self.shutdown()

    def _tunnel_waits(self, why: str) -> None:
        """The tunnel's first start waits on the relay (a port still held): say what for
        ("" once the wait is over)."""
        if why:
            self._set("tunnel", state="waiting", last_error=why)
        else:
            self._set("tunnel", state="starting", last_error=None)

    def loop(self) -> None:
        assert self.tunnel is not None
        next_check = time.monotonic() + health.INTERVAL
        while not self.stop_event.is_set():
            self.wake.wait(POLL)
            self.wake.clear()
            if self.stop_event.is_set():
                break
            # The children first, whatever a check is doing: a death is acted on at once.
            self._tend_server()
            if not self.tunnel.alive():
                self._reconnect(self._forced or self.tunnel.failure())
                self._forced = None
                next_check = time.monotonic() + health.INTERVAL
                continue
            if self._check is not None and self._check.done.is_set():
                self._finish_check(self._check)
                self._check = None
                wait = health.RETRY if self._failed_checks else health.INTERVAL
                next_check = time.monotonic() + wait
            if self._check is None and time.monotonic() >= next_check:
                self._begin_check()

    def _begin_check(self) -> None:
        assert self.tunnel is not None
        self._checks_run += 1
        self._check = health.begin(self.tunnel, self._checks_run, self.wake.set)
        self._set("tunnel", check_running_since=time.time())

    def _finish_check(self, check: health.Check) -> None:
        """Act on a finished check: a failure counts towards a forced reconnect."""
        assert self.tunnel is not None
        self._set("tunnel", check_running_since=None)
        j = health.judge(check, self.tunnel)
        if j.verdict == "ignored":
            log.info(
                "end-to-end check #%d ignored: the tunnel was restarted while it ran",
                check.number,
            )
            return
        if j.verdict == "passed":
            self._failed_checks = 0
            self._set(
                "tunnel", last_check=time.time(), checks_failed=0, details=self.tunnel.details()
            )
            return
        if j.verdict == "busy":
            inconclusive = self.state["tunnel"].get("checks_inconclusive", 0) + 1
            log.info(
                "end-to-end check #%d timed out, but the tunnel read %d KiB meanwhile: "
                "busy, not broken; not counted (%s)",
                check.number,
                j.moved // 1024,
                j.error,
            )
            self._set("tunnel", last_check=time.time(), checks_inconclusive=inconclusive)
            return
        exc = j.error
        self._failed_checks += 1
        log.warning(
            "end-to-end check #%d failed (%d in a row): %s",
            check.number,
            self._failed_checks,
            exc,
        )
        self._set(
            "tunnel",
            last_check=time.time(),
            checks_failed=self._failed_checks,
            last_error=f"end-to-end check failed: {exc}",
        )
        if self._failed_checks >= health.FAILURES:
            self._forced = TunnelError(
                f"end-to-end check failed {self._failed_checks} times in a row: {exc}"
            )
            self.tunnel.stop()
            self.wake.set()

    def _tend_server(self) -> None:
        assert self.server is not None
        if self.server.alive():
            return
        err = " | ".join(self.server.last_lines(3)) or "exited"
        log.warning("sshd died (%s); restarting it", err)
        self._set("server", state="restarting", last_error=f"sshd exited: {err}")
        try:
            self.server.start()
        except HandyColabError as exc:
            self._set("server", state="down", last_error=str(exc))
            self.stop_event.wait(BACKOFF[-1])
            return
        self._set(
            "server", state="up", pid=self.server.pid, restarts=self.state["server"]["restarts"] + 1
        )

    def _reconnect(self, failure: Exception) -> None:
        assert self.tunnel is not None
        log.warning("tunnel dropped: %s", failure)
        self._set(None, phase="reconnecting")
        self._set("tunnel", state="reconnecting", pid=None, last_error=str(failure))
        tries = 0
        dropped = time.monotonic()
        while not self.stop_event.is_set():
            self._tend_server()
            attempt = time.monotonic()
            try:
                self.tunnel.start(timeout=25)
                self.tunnel.check(timeout=health.TIMEOUT)
            except TunnelError as exc:
                # Short, capped back-off: a stale listener on the relay goes away on its own
                # and we want the port the moment it does; only what cannot heal by waiting
                # (key refused, host key changed) is retried slowly.
                if exc.retry_after:
                    delay = exc.retry_after
                elif exc.permanent:
                    delay = PERMANENT_BACKOFF
                elif attempt - dropped < FAST_RETRY_FOR:
                    delay = FAST_RETRY
                else:
                    delay = BACKOFF[min(tries, len(BACKOFF) - 1)]
                tries += 1
                # The back-off counts from the start of the attempt: one that already waited
                # out a connect timeout is not made to wait again.
                delay = max(0.2, delay - (time.monotonic() - attempt))
                log.warning("reconnect failed (%s); next try in %.1fs", exc, delay)
                self._set("tunnel", state="down", last_error=str(exc), next_try=time.time() + delay)
                self.tunnel.stop()
                self._pause(delay)
                continue
            self._failed_checks = 0
            self._set(
                "tunnel",
                state="up",
                pid=self.tunnel.pid,
                checks_failed=0,
                next_try=None,
                reconnects=self.state["tunnel"]["reconnects"] + 1,
            )
            if self.tunnel.endpoint != self.state["tunnel"].get("endpoint"):
                self._publish(self._host_key_line)
            self._set(None, phase="ready")
            log.info("tunnel re-opened (reconnect #%d)", self.state["tunnel"]["reconnects"])
            return

    def _pause(self, seconds: float) -> None:
        """Wait between reconnect attempts, still restarting sshd the moment it dies."""
        deadline = time.monotonic() + seconds
        while not self.stop_event.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if self.wake.wait(left):
                self.wake.clear()
                self._tend_server()

    def shutdown(self) -> None:
        if self.tunnel is not None:
            self.tunnel.stop()
        if self.server is not None:
            self.server.stop()
        if self.state["phase"] != "failed":
            self._set(None, phase="stopped")
        self._set("tunnel", state="stopped", pid=None)
        self._set("server", state="stopped", pid=None)
