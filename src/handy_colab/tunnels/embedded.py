"""Reverse tunnel with the embedded asyncssh client, for runtimes without an ``ssh`` binary.

Behaves as `tunnels.openssh.OpenSSHTunnel` does: the same relay settings, the same pinned and
trust-on-first-use host-key files (switching backends keeps the pin), keepalives 5 s x 3,
connect timeout 5 s, and the same one-line errors. The tunnel runs in a child process
(`tunnels.asyncssh_client`) so the supervisor watches, kills and restarts it exactly like
``ssh``; only the private-mode health check runs here, on a fresh event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import re
import sys
from collections.abc import Coroutine, Iterator
from typing import Any

import asyncssh

from ..config import RuntimeConfig
from ..errors import TunnelError
from ..fsutil import atomic_write
from ..state import RuntimeDir
from .asyncssh_client import READY_PREFIX, ClientSettings, Failed, open_relay, openssh_bind_host
from .common import (
    RELAY_ALIAS,
    check_public,
    prepare_relay_files,
    private_banner_error,
    state_write_error,
)
from .relayport import RelayTunnel

log = logging.getLogger(__name__)

MODULE = "handy_colab.tunnels.asyncssh_client"
_READY = re.compile("^" + re.escape(READY_PREFIX))


class EmbeddedTunnel(RelayTunnel):
    kind = "embedded"
    # No fail pattern: the client always exits after saying why, so "exited" is the failure
    # signal and every line it printed is there for classify().
    ready = _READY
    program = "the embedded tunnel client"

    def __init__(self, cfg: RuntimeConfig, rd: RuntimeDir, local_port: int) -> None:
        super().__init__(cfg, local_port)
        self.rd = rd
        self.settings_path = rd.path / "embedded_tunnel.json"
        self._check_key()
        try:
            known, strict = prepare_relay_files(cfg, rd)
        except OSError as exc:
            raise state_write_error(rd, "the tunnel", exc) from None
        self.settings = self._settings(str(known), strict)
        self._write_settings()

    def _write_settings(self) -> None:
        try:
            atomic_write(self.settings_path, self.settings.to_json(), mode=0o600)
        except OSError as exc:
            raise state_write_error(self.rd, "the tunnel", exc) from None

    def request_changed(self) -> None:
        # The child reads the port to ask the relay for from this file at each start.
        self.settings = dataclasses.replace(
            self.settings, listen_port=self.cfg.ssh_relay.remote_port
        )
        self._write_settings()

    def _check_key(self) -> None:
        # Refuse now, once, a key asyncssh cannot use, rather than fail every reconnect.
        try:
            asyncssh.import_private_key(self.cfg.ssh_relay.key.data)
        except (asyncssh.KeyImportError, ValueError) as exc:
            raise TunnelError(
                f"{self.cfg.ssh_relay.key.path}: the embedded tunnel client cannot use this key "
                f"({exc}). Fix: use an ed25519, ECDSA or RSA key, or install openssh-client "
                f"and set 'relay.client' to \"openssh\"",
                permanent=True,
            ) from None

    def _settings(self, known_hosts: str, strict: bool) -> ClientSettings:
        relay = self.cfg.ssh_relay
        return ClientSettings(
            host=relay.host,
            port=relay.port,
            user=relay.user,
            key_path=str(self.rd.relay_key),
            known_hosts=known_hosts,
            strict=strict,
            mode=self.cfg.mode,
            listen_host=openssh_bind_host(relay.bind_address),
            listen_port=relay.remote_port,
            socket_path=relay.socket_path,
            local_port=self.local_port,
        )

    def argv(self) -> list[str]:
        return [sys.executable or "python3", "-m", MODULE, "--config", str(self.settings_path)]

    def forward_desc(self) -> str:
        return f"{self.cfg.mode} {self.settings.listen}"

    def check(self, timeout: float) -> None:
        # The Tunnel contract is TunnelError only, whatever asyncssh or the OS raise.
        try:
            if self.cfg.mode == "private":
                with _quiet_asyncssh():
                    banner = _run_fresh_loop(self._private_banner(timeout), 2 * timeout + 2)
                err = private_banner_error(self.cfg, banner)
                if err is not None:
                    raise err
                return
            check_public(self.cfg, self.endpoint, timeout)
        except TunnelError:
            raise
        except Failed as exc:
            raise TunnelError(
                f"ssh to {RELAY_ALIAS} could not forward {self.cfg.ssh_relay.socket_path}: "
                f"{exc.line or 'exited'}"
            ) from None
        except (TimeoutError, asyncio.TimeoutError, concurrent.futures.TimeoutError):
            raise TunnelError(
                f"ssh to {RELAY_ALIAS} did not set up a forward to "
                f"{self.cfg.ssh_relay.socket_path} within {timeout:.0f}s"
            ) from None
        except (OSError, asyncssh.Error) as exc:
            raise TunnelError(f"end-to-end check could not run: {exc}") from None
        except Exception as exc:  # a library surprise is a failed check, not a dead supervisor
            log.exception("end-to-end check crashed")
            raise TunnelError(f"end-to-end check could not run: {exc!r}") from None

    async def _private_banner(self, timeout: float) -> str:
        """The first line the relay's socket answers with, through a new relay connection.

        What ``ssh -L local:socket relay`` + a read gives the OpenSSH backend, without an
        ssh binary. An unopenable socket reads as "" (ssh would close the local end too).
        """
        said: list[str] = []

        def collect(line: str) -> None:
            said.append(line)
            log.debug("check: %s", line)

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            conn, _ = await asyncio.wait_for(open_relay(self.settings, collect), timeout)
        except Failed as exc:
            # The policy's own lines (host key changed) come first, then the reason.
            raise Failed(exc.line or (said[-1] if said else None)) from None
        try:
            return await _socket_first_line(conn, self.settings.socket_path, deadline - loop.time())
        finally:
            # Not `async with`: waiting for a clean close of a relay that stopped answering
            # would hold the supervisor past the check's deadline.
            conn.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.wait_closed(), 1)


@contextlib.contextmanager
def _quiet_asyncssh() -> Iterator[None]:
    """asyncssh logs ~15 INFO lines per connection: every 10 s check would flood the
    supervisor's log with them. Its warnings and errors still get through."""
    logger = logging.getLogger("asyncssh")
    before = logger.level
    if before < logging.WARNING:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(before)


async def _socket_first_line(conn: asyncssh.SSHClientConnection, path: str, timeout: float) -> str:
    """What comes back first from ``path`` on the relay; "" if it cannot be opened or says
    nothing in time (what reading through ssh's forwarded local socket gives)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(timeout, 0.1)
    try:
        reader, writer = await asyncio.wait_for(conn.open_unix_connection(path), timeout)
    except (asyncssh.ChannelOpenError, asyncio.TimeoutError, TimeoutError):
        return ""
    data = b""
    with contextlib.suppress(asyncssh.Error, OSError, asyncio.TimeoutError, TimeoutError):
        while b"\n" not in data and len(data) < 256:
            chunk = await asyncio.wait_for(reader.read(256), deadline - loop.time())
            if not chunk:
                break
            data += chunk
    writer.close()
    return data.decode(errors="replace")


def _run_fresh_loop(coro: Coroutine[Any, Any, str], timeout: float) -> str:
    """Run ``coro`` to completion on a new event loop from synchronous code.

    In the calling thread (the supervisor's loop is synchronous); should that thread already
    run a loop (a notebook calling in), on a short-lived worker thread instead.
    """

    async def bounded() -> str:
        return await asyncio.wait_for(coro, timeout)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(bounded())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, bounded()).result(timeout + 1)
