"""The embedded reverse-tunnel client: ``ssh -N -R`` done with asyncssh, for runtimes
without an OpenSSH client.

Run as its own process by `tunnels.embedded.EmbeddedTunnel` (so a frozen or crashed
tunnel is a process the supervisor can see and kill, exactly like ``ssh``)::

    python -m handy_colab.tunnels.asyncssh_client --config /state/NAME/embedded_tunnel.json

It prints its progress and, on failure, the reason in OpenSSH's own wording, so that one
`tunnels.common.classify` turns either client's last words into the same one-line error.
It prints ``remote forward success for: listen ...`` once the relay confirmed the forward,
then stays up; any drop ends it with exit status 255, a SIGTERM with 0 (as ``ssh -N``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import asyncssh

from .common import HostKeyPolicy, preferred_host_key_algs

log = logging.getLogger(__name__)

READY_PREFIX = "remote forward success for: listen"
EXIT_DROPPED = 255  # what ssh exits with when the connection fails or drops

Say = Callable[[str], None]

# Every byte of the tunnel is encrypted here in Python: asyncssh's default first choice,
# chacha20-poly1305, costs three cipher calls and a Poly1305 per packet (a third to a half of
# the client's CPU in a transfer, measured: docs/embedded.md), AES-GCM one AESGCM call. OpenSSH
# relays offer both by default; the rest of asyncssh's list stays as the fallback for a relay
# that allows only those. Compression off: the tunnel carries SSH, already encrypted.
ENCRYPTION_ALGS = [
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
]


@dataclass(frozen=True)
class ClientSettings:
    """Everything the tunnel process needs; written 0600 as JSON by EmbeddedTunnel."""

    host: str
    port: int
    user: str
    key_path: str  # the 0600 copy of the relay key in the runtime's state directory
    known_hosts: str
    strict: bool  # True: StrictHostKeyChecking yes; False: accept-new
    mode: str  # "public" | "private"
    listen_host: str  # public: what the tcpip-forward request carries as bind address
    listen_port: int  # public
    socket_path: str  # private
    local_port: int  # the runtime's SSH server on 127.0.0.1
    connect_timeout: float = 5.0
    keepalive_interval: float = 5.0
    keepalive_count_max: int = 3
    login_timeout: float = 20.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ClientSettings:
        data: dict[str, Any] = json.loads(text)
        return cls(**data)

    @property
    def listen(self) -> str:
        return f"path {self.socket_path}" if self.mode == "private" else f"port {self.listen_port}"


def openssh_bind_host(bind_address: str | None) -> str:
    """The listen address ``ssh -R`` puts in its tcpip-forward request.

    OpenSSH's channel_rfwd_bind_host: no bind address -> "localhost" (the relay's
    GatewayPorts then decides; a bare ``permitlisten="PORT"`` matches any host), "" or "*"
    -> "" (all addresses, if GatewayPorts clientspecified), else the address as given.
    Sending the same keeps relay-side rules written for ``ssh -R`` (relay-setup's) valid.
    """
    if bind_address is None:
        return "localhost"
    if bind_address in ("", "*"):
        return ""
    return bind_address


class Failed(Exception):
    """A failure already worded as OpenSSH would (``line``), or already reported (None)."""

    def __init__(self, line: str | None) -> None:
        super().__init__(line or "")
        self.line = line


class _RelayClient(asyncssh.SSHClient):
    """Host-key decision (ours, not asyncssh's known_hosts) and the reason a link ended."""

    def __init__(self, policy: HostKeyPolicy, say: Say) -> None:
        self.policy = policy
        self.say = say
        self.conn: asyncssh.SSHClientConnection | None = None
        self.lost: Exception | None = None
        self.banner_timed_out = False
        self.authenticated = False

    def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
        self.conn = conn

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc

    def auth_completed(self) -> None:
        self.authenticated = True

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        blob = " ".join(key.export_public_key("openssh").decode().split()[:2])
        verdict = self.policy.verify(blob)
        for line in verdict.lines:
            self.say(line)
        return verdict.ok

    def server_version(self) -> str | None:
        if self.conn is None:
            return None
        version: str | None = self.conn.get_extra_info("server_version")
        return version


def _no_known_hosts(_host: str, _addr: str, _port: int | None) -> tuple[list[Any], ...]:
    # An empty trust list (not None, which would skip validation) sends every key to
    # validate_host_public_key; a callable keeps asyncssh off ~/.ssh/known_hosts.
    return [], [], []


async def _tcp_connect(s: ClientSettings) -> socket.socket:
    """TCP to the relay with ssh's ConnectTimeout semantics and wording."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(s.host, s.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise Failed(f"ssh: Could not resolve hostname {s.host}: {exc.strerror}") from None
    reason = "no address"
    for family, kind, proto, _, addr in infos:
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, addr), s.connect_timeout)
        except (asyncio.TimeoutError, TimeoutError):
            # Before OSError: on 3.11 TimeoutError is an OSError without strerror.
            sock.close()
            reason = "Connection timed out"
            continue
        except OSError as exc:
            sock.close()
            # asyncio words it "Connect call failed (addr)"; ssh names the errno.
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            continue
        return sock
    raise Failed(f"ssh: connect to host {s.host} port {s.port}: {reason}")


async def open_relay(s: ClientSettings, say: Say) -> tuple[asyncssh.SSHClientConnection, Any]:
    """An authenticated connection to the relay (the relay key only), or Failed."""
    try:
        key = asyncssh.read_private_key(s.key_path)
    except (OSError, asyncssh.KeyImportError) as exc:
        raise Failed(f'Load key "{s.key_path}": {exc}') from None
    policy = HostKeyPolicy(Path(s.known_hosts), s.strict, s.host, s.port)
    supported = [a.decode() for a in asyncssh.public_key.get_public_key_algs()]
    algs = preferred_host_key_algs(policy.known().types, supported)
    sock = await _tcp_connect(s)
    client = _RelayClient(policy, say)

    async def banner_watch() -> None:
        # ssh applies ConnectTimeout to the banner exchange too: a relay that accepts TCP
        # and says nothing (a stuck sshd, a middlebox) fails within it, not after minutes.
        await asyncio.sleep(s.connect_timeout)
        if client.conn is not None and client.server_version() is None:
            client.banner_timed_out = True
            # Not abort(): a close without an error completes connect() "successfully".
            client.conn.connection_lost(asyncssh.ConnectionLost("banner exchange timed out"))

    watch = asyncio.create_task(banner_watch())
    try:
        conn = await asyncio.wait_for(
            asyncssh.connect(
                s.host,
                s.port,
                sock=sock,
                config=None,  # no ~/.ssh/config: nothing but these settings applies
                client_factory=lambda: client,
                username=s.user,
                client_keys=[key],
                agent_path=None,
                known_hosts=_no_known_hosts,
                x509_trusted_certs=None,
                server_host_key_algs=algs,
                public_key_auth=True,
                password_auth=False,
                kbdint_auth=False,
                gss_auth=False,
                gss_kex=False,
                host_based_auth=False,
                encryption_algs=ENCRYPTION_ALGS,
                compression_algs=["none"],
                keepalive_interval=s.keepalive_interval,
                keepalive_count_max=s.keepalive_count_max,
                login_timeout=s.login_timeout,
            ),
            s.login_timeout + 1,
        )
    except asyncssh.HostKeyNotVerifiable:
        raise Failed(None) from None  # the policy has said why
    except asyncssh.PermissionDenied:
        raise Failed(f"{s.user}@{s.host}: Permission denied (publickey).") from None
    except asyncssh.KeyExchangeFailed as exc:
        raise Failed(f"Unable to negotiate with {s.host} port {s.port}: {exc.reason}") from None
    except (asyncio.TimeoutError, TimeoutError):
        stage = "banner exchange" if client.server_version() is None else "authentication"
        raise Failed(f"Connection timed out during {stage}") from None
    except (asyncssh.Error, OSError) as exc:
        sock.close()
        if client.banner_timed_out:
            raise Failed("Connection timed out during banner exchange") from None
        if client.server_version() is None:
            raise Failed("kex_exchange_identification: Connection closed by remote host") from None
        if isinstance(exc, asyncssh.DisconnectError) and not isinstance(
            exc, asyncssh.ConnectionLost
        ):
            raise Failed(
                f"Received disconnect from {s.host} port {s.port}:{exc.code}: {exc.reason}"
            ) from None
        raise Failed(f"Connection closed by {s.host} port {s.port}") from None
    finally:
        watch.cancel()
    if not client.authenticated:
        # Belt and braces: never go on (and never claim success) over a connection that
        # closed before authentication completed.
        conn.abort()
        if client.banner_timed_out:
            raise Failed("Connection timed out during banner exchange")
        raise Failed(f"Connection closed by {s.host} port {s.port}")
    return conn, client


def drop_reason(s: ClientSettings, exc: Exception | None) -> str:
    """Why an established tunnel ended, as ssh words it."""
    if isinstance(exc, asyncssh.ConnectionLost) and "keepalive" in str(exc.reason):
        return f"Timeout, server {s.host} not responding."
    if isinstance(exc, asyncssh.DisconnectError) and not isinstance(exc, asyncssh.ConnectionLost):
        return f"Received disconnect from {s.host} port {s.port}:{exc.code}: {exc.reason}"
    if isinstance(exc, OSError):
        return f"Connection to {s.host} closed: {exc.strerror or exc}"
    return f"Connection to {s.host} closed by remote host."


async def tunnel(s: ClientSettings, say: Say) -> int:
    """Open the forward and hold it; return the exit status once it is gone."""
    try:
        conn, client = await open_relay(s, say)
    except Failed as exc:
        if exc.line:
            say(exc.line)
        return EXIT_DROPPED
    async with conn:
        say(f"Authenticated to {s.host} port {s.port} as {s.user} using publickey.")
        # What ssh -v says as "kex: client->server cipher: ...": the cipher decides this
        # client's throughput, so the log shows which one the relay agreed to.
        say(
            f"kex: cipher: {conn.get_extra_info('send_cipher')} "
            f"compression: {conn.get_extra_info('send_compression')}"
        )
        listen = s.listen
        try:
            if s.mode == "private":
                await conn.forward_remote_path_to_port(s.socket_path, "127.0.0.1", s.local_port)
            else:
                listener = await conn.forward_remote_port(
                    s.listen_host, s.listen_port, "127.0.0.1", s.local_port
                )
                if s.listen_port == 0:
                    # ssh's own line for a relay-allocated port, which the supervisor reads.
                    listen = f"port {listener.get_port()}"
                    say(
                        f"Allocated port {listener.get_port()} for remote forward to "
                        f"127.0.0.1:{s.local_port}"
                    )
        except asyncssh.ChannelListenError:
            say(f"Error: remote port forwarding failed for listen {s.listen}")
            return EXIT_DROPPED
        except (asyncssh.Error, OSError) as exc:
            say(drop_reason(s, exc))
            return EXIT_DROPPED
        say(f"{READY_PREFIX} {listen}, connect 127.0.0.1:{s.local_port}")
        await conn.wait_closed()
        say(drop_reason(s, client.lost))
    return EXIT_DROPPED


async def _main(s: ClientSettings, say: Say) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    work = asyncio.create_task(tunnel(s, say))
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if work in done:
        stopper.cancel()
        return work.result()
    # Asked to stop: closing the connection (async with) lets the relay free the port or
    # socket at once instead of after its keepalive gives up.
    work.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await work
    say("stopped")
    return 0


def _say(line: str) -> None:
    # The supervisor reads these lines; if it is gone, keep the tunnel up rather than die on
    # a closed pipe (`down` still finds this process in the supervisor's group).
    with contextlib.suppress(OSError, ValueError):
        print(line, file=sys.stdout, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="handy_colab.tunnels.asyncssh_client",
        description="reverse tunnel to an OpenSSH relay with asyncssh (ssh -N -R)",
    )
    parser.add_argument("--config", required=True, help="JSON written by EmbeddedTunnel")
    args = parser.parse_args(argv)
    # asyncssh's own log is chatty at INFO; its warnings still reach the supervisor's log.
    logging.basicConfig(level=logging.WARNING, format="asyncssh: %(message)s")
    try:
        with open(args.config, encoding="utf-8") as fh:
            settings = ClientSettings.from_json(fh.read())
    except (OSError, ValueError, TypeError) as exc:
        _say(f"cannot read the tunnel settings {args.config}: {exc}")
        return 2
    try:
        return asyncio.run(_main(settings, _say))
    except Exception as exc:  # a bug must still leave a reason, not a bare traceback
        _say(f"tunnel to {settings.host} ended: internal error: {exc!r}")
        return EXIT_DROPPED


if __name__ == "__main__":
    sys.exit(main())
