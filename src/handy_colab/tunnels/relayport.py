"""Relay-allocated ports: public mode with ``remote_port: 0``.

The relay picks a free port (``ssh -R 0:...``; OpenSSH then prints ``Allocated port N for
remote forward to HOST:PORT``, and the embedded client prints the same line from asyncssh's
``listener.get_port()``). The port then sticks: every reconnect asks for that same port
again, so a laptop set up once keeps working; only when the relay keeps refusing it (another
program took it) does the tunnel take whatever port the relay gives, and the supervisor
republishes the descriptor. So several runtimes can share one relay account without agreeing
on ports.

`RelayTunnel` keeps ``self.cfg`` as the config *of this run*: ``relay.remote_port`` there is
the port asked for and, once granted, the port in use. Everything that reads the relay's
port (the ``-R`` argument, the embedded client's settings, the end-to-end check, `endpoint`,
the error wording, the descriptor) therefore follows it without a second source of truth.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Iterable
from typing import Any

from ..config import RuntimeConfig
from ..connection import Descriptor
from ..errors import HandyColabError, TunnelError
from .base import Tunnel
from .common import relay_connection, reset_connection, tcp_banner

log = logging.getLogger(__name__)

# OpenSSH's logit() line (clientloop.c); printed after "remote forward success", so for a
# port-0 request it, not the success line, is the sign the forward is up.
ALLOCATED = re.compile(r"^Allocated port (\d+) for remote forward to ")
_REFUSED = re.compile(r"remote port forwarding failed for listen port (\d+)")
# How long a refused port is asked for again before any port will do. A relay set up by
# relay-setup frees a dead tunnel's port within ~30 s (ClientAlive 5 x 2, measured 28 s), and
# a tunnel that merely dropped (network blip, killed client) gets its port back within
# seconds; a program that took the port keeps it, so waiting longer would only prolong the
# outage.
STICKY_GRACE = 40.0
# How often `up` asks again for a fixed port that a previous runtime's tunnel still holds on
# the relay. Asking is an `ssh -R` (the relay's sshd tries to bind): it sends nothing to the
# stale listener, so it cannot keep it alive the way a connection to it would.
PORT_WAIT_RETRY = 1.0
# For how long a reconnect refused its port asks again every PORT_WAIT_RETRY (then the
# supervisor's usual back-off, up to 5 s, spares the relay's auth log on a stock sshd that
# holds a dead listener for hours).
HELD_FAST_RETRY = 60.0


def allocated_port(lines: Iterable[str]) -> int | None:
    """The port the relay allocated, from the tunnel client's lines (the last one wins)."""
    found = None
    for line in lines:
        m = ALLOCATED.match(line)
        if m and 0 < int(m.group(1)) <= 65535:
            found = int(m.group(1))
    return found


def refused_port(lines: Iterable[str]) -> int | None:
    """The port of a forward the relay refused, from the client's lines (None: none)."""
    found = None
    for line in lines:
        m = _REFUSED.search(line)
        if m and not line.startswith("debug"):
            found = int(m.group(1))
    return found


def previous_port(cfg: RuntimeConfig) -> int | None:
    """The port the laptop was last given for this runtime on this relay (the descriptor
    in the folder), so a restarted runtime asks for it first; None when there is none."""
    relay = cfg.ssh_relay
    try:
        desc = Descriptor.load(cfg.connections_dir / f"{cfg.name}.json")
    except HandyColabError:
        return None
    same = (desc.route, desc.mode, desc.relay_host, desc.relay_port, desc.public_host) == (
        "relay",
        "public",
        relay.host,
        relay.port,
        relay.public_host,
    )
    return desc.remote_port if same and desc.remote_port > 0 else None


def with_remote_port(cfg: RuntimeConfig, port: int) -> RuntimeConfig:
    return dataclasses.replace(cfg, relay=dataclasses.replace(cfg.ssh_relay, remote_port=port))


class RelayTunnel(Tunnel):
    """A tunnel to an OpenSSH relay (``ssh -R`` or the embedded client), with
    ``remote_port: 0`` handled: see the module's doc."""

    def __init__(self, cfg: RuntimeConfig, local_port: int) -> None:
        super().__init__(cfg, local_port)
        self.configured = cfg
        self.allocating = cfg.mode == "public" and cfg.ssh_relay.remote_port == 0
        self._first_start = True
        self._refused: int | None = None  # the port the last failed start was refused
        self._refused_since: float | None = None
        # The TCP connection of the tunnel last up (public mode), to abort once it is dead.
        self._conn: tuple[str, int, str, int] | None = None
        self._held_since: float | None = None  # our port refused since (reconnects)
        if self.allocating:
            prev = previous_port(cfg)
            if prev is not None:
                self.cfg = with_remote_port(cfg, prev)

    def request_changed(self) -> None:
        """The port to ask for changed (``self.cfg``): a backend that wrote it into a file
        rewrites it here. OpenSSH's ``-R`` argument is built from ``self.cfg`` each time."""

    def _ask(self, port: int) -> None:
        if port != self.cfg.ssh_relay.remote_port:
            self.cfg = with_remote_port(self.configured, port)
            self.request_changed()

    def start(self, timeout: float) -> None:
        try:
            self._start(timeout)
        except TunnelError as err:
            raise self._after_refusal(err) from None
        self._held_since = None
        if self.cfg.mode == "public" and self.pid is not None:
            self._conn = relay_connection(self.pid, self.cfg.ssh_relay.port)

    def _after_refusal(self, err: TunnelError) -> TunnelError:
        """The relay refused our port: if our own previous connection holds it (its ssh ended
        during an outage, and the kernel still retransmits its FIN on a backed-off timer),
        abort that connection so the relay lets go now. Either way ask again soon (1 s)
        for a while: the port comes free the moment the relay lets go, and an `ssh -R`
        sends nothing to the stale listener."""
        conn, self._conn = self._conn, None
        if self._refused is None or self._refused != self.cfg.ssh_relay.remote_port:
            return err
        now = time.monotonic()
        if self._held_since is None:
            self._held_since = now
        if conn is not None and reset_connection(conn):
            log.info(
                "reset the previous tunnel connection %s:%d -> %s:%d so the relay frees port %d",
                *conn,
                self._refused,
            )
            return TunnelError(str(err), permanent=err.permanent, retry_after=0.3)
        if now - self._held_since < HELD_FAST_RETRY:
            return TunnelError(str(err), permanent=err.permanent, retry_after=PORT_WAIT_RETRY)
        return err

    def _start(self, timeout: float) -> None:
        if not self.allocating:
            self._start_fixed(timeout)
            return
        deadline = time.monotonic() + timeout
        try:
            self._start_asking(timeout)
        except TunnelError:
            if not self._give_up_port():
                raise
            log.warning(
                "relay refused port %d; asking it for any free port",
                self.cfg.ssh_relay.remote_port,
            )
            self._ask(0)
            self._start_asking(max(1.0, deadline - time.monotonic()))
        self._first_start = False
        self._refused_since = None

    def _start_fixed(self, timeout: float) -> None:
        """A fixed port (or a socket). On the first start (`up`, maybe on a new VM while
        the relay still holds the old one's listener) a refused port is asked for again until
        ``timeout``, saying so through ``on_wait`` (and ``on_wait("")`` once granted); later
        starts are the supervisor's reconnects, which retry on their own."""
        asked = self.cfg.ssh_relay.remote_port
        if self.cfg.mode != "public" or not self._first_start:
            super().start(timeout)
            return
        deadline = time.monotonic() + timeout
        waiting_since: float | None = None
        while True:
            attempt = time.monotonic()
            self._refused = None  # a start that times out says nothing of the port
            try:
                super().start(max(1.0, deadline - attempt))
                break
            except TunnelError:
                if self._refused != asked:
                    raise
                now = time.monotonic()
                if waiting_since is None:
                    waiting_since = now
                    log.warning("relay refused port %d; waiting for it to let go", asked)
                if now + PORT_WAIT_RETRY >= deadline:
                    raise self._held_error(asked, timeout) from None
                if self.on_wait is not None:
                    self.on_wait(
                        f"waiting for the relay to release port {asked} (held by a previous "
                        f"runtime's tunnel it has not dropped yet, or by another program); "
                        f"asking again every {PORT_WAIT_RETRY:.0f}s for up to "
                        f"{deadline - now:.0f}s more"
                    )
                time.sleep(max(0.0, PORT_WAIT_RETRY - (now - attempt)))
        self._first_start = False
        if waiting_since is not None:
            log.info("relay let go of port %d after %.1fs", asked, time.monotonic() - waiting_since)
            if self.on_wait is not None:
                self.on_wait("")

    def _held_error(self, port: int, waited: float) -> TunnelError:
        # `waited` is the start's whole timeout (not a measured time): the line must read the
        # same whichever client ran and however the attempts fell.
        relay = self.cfg.ssh_relay
        return TunnelError(
            f"relay {relay.host} refused to listen on port {port} throughout the {waited:.0f}s "
            f"`up` waited: it is taken, by a previous runtime's tunnel the relay has not "
            f"dropped (it keeps a vanished client's port until its keepalive gives up: hours "
            f"when its sshd sets no ClientAliveInterval) or by another program. Fix: run "
            f"`handy-colab relay-setup` on the relay (ClientAliveInterval 5 / "
            f"ClientAliveCountMax 2 free a dead tunnel's port within ~30 s) and run `up` "
            f"again, or choose another 'relay.remote_port'"
        )

    def _start_asking(self, timeout: float) -> None:
        asked = self.cfg.ssh_relay.remote_port
        self._refused = None  # a start that times out says nothing of the port
        # Port 0: ssh confirms the forward before it says which port the relay chose.
        self.ready = ALLOCATED if asked == 0 else type(self).ready
        super().start(timeout)
        if asked != 0:
            self._refuse_if_foreign(asked)
            return
        port = allocated_port(self.last_lines(500))
        if port is None:  # the ready line matched, so only a bug gets here
            self.stop()
            raise TunnelError(
                f"relay {self.cfg.ssh_relay.host} accepted the forward but did not say which "
                f"port it allocated. Fix: set a fixed 'relay.remote_port'"
            )
        log.info("relay allocated port %d", port)
        self._ask(port)

    def _refuse_if_foreign(self, port: int) -> None:
        """A port the relay granted that another program answers on counts as refused.

        Seen for real: sshd binds [::]:PORT when another program holds 0.0.0.0:PORT and
        reports success, yet IPv4 clients reach that program. Probing is safe here: our own
        forward was just granted, so this connection cannot keep a stale listener alive.
        """
        relay = self.cfg.ssh_relay
        connected, banner = tcp_banner(relay.public_host, port, 5.0)
        if connected and not banner.startswith("SSH-"):
            log.warning("relay port %d answers with %r, not the runtime", port, banner[:40])
            self.stop()
            self._refused = port
            raise self._refused_error(port)

    def _refused_error(self, port: int) -> TunnelError:
        waited = time.monotonic() - (self._refused_since or time.monotonic())
        return TunnelError(
            f"relay {self.cfg.ssh_relay.host} port {port} is not ours for now (a dropped "
            f"tunnel of this runtime, or another program, holds it); asking for it again for "
            f"up to {max(0.0, STICKY_GRACE - waited):.0f}s more, then for any free port (the "
            f"descriptor then names the new one). Fix: none needed; to keep the port, free it "
            f"on the relay"
        )

    def _give_up_port(self) -> bool:
        """After a refused start: True when the next try should ask for any port."""
        asked = self.cfg.ssh_relay.remote_port
        if self._refused is None or self._refused != asked or asked == 0:
            return False
        if self._first_start:
            # `up`: the port of an earlier run may be held by that run's stale tunnel for
            # as long as the relay keeps it (hours on a stock sshd): `up` does not wait.
            return True
        now = time.monotonic()
        if self._refused_since is None:
            self._refused_since = now
        return now - self._refused_since >= STICKY_GRACE

    def failure(self) -> TunnelError:
        err = super().failure()
        self._refused = refused_port(self.last_lines(30))
        if not self.allocating:
            return err
        relay = self.cfg.ssh_relay
        if self._refused == 0:
            return TunnelError(
                f"relay {relay.host} refused to allocate a port for {relay.user} "
                f"('relay.remote_port' 0). Fix: allow any port for that key on the relay "
                f'(authorized_keys permitlisten="*"; `handy-colab relay-setup --remote-port 0` '
                f"writes it), or set a fixed 'relay.remote_port'"
            )
        if self._refused is not None and not self._first_start:
            return self._refused_error(self._refused)
        return err

    def details(self) -> dict[str, Any]:
        if not self.allocating:
            return super().details()
        return {"remote_port": self.cfg.ssh_relay.remote_port, "allocated_by": "relay"}
