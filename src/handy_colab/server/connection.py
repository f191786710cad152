"""The embedded server's connections: who may log in, and which channels they may open.

Authentication is public-key only, for the one login user, against the runtime's
authorized_keys (re-read at each login, so a rewritten file applies without a restart);
asyncssh offers no method this class does not enable, so no password or keyboard-interactive
prompt is ever shown. Local, dynamic and remote forwards (TCP and Unix sockets) are allowed
as sshd allows them for the same user; sessions are handed to shell.py.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import stat
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING

import asyncssh

from .shell import SessionProcess, run_session

if TYPE_CHECKING:
    from .daemon import Daemon

log = logging.getLogger(__name__)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Connection(asyncssh.SSHServer):
    """One client connection: key-only auth for the one login user, sessions, forwards."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.conn: asyncssh.SSHServerConnection | None = None
        self.peer: tuple[str, int] = ("?", 0)
        self.local: tuple[str, int] = ("127.0.0.1", daemon.settings.port)
        self.user = ""
        self.allowed: set[bytes] = set()
        self.accepted_key = ""

    def where(self) -> str:
        return f"{self.peer[0]} port {self.peer[1]}"

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        self.daemon.connections.add(conn)
        peer = conn.get_extra_info("peername")
        sock = conn.get_extra_info("sockname")
        if isinstance(peer, tuple):
            self.peer = (str(peer[0]), int(peer[1]))
        if isinstance(sock, tuple):
            self.local = (str(sock[0]), int(sock[1]))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None:
            self.daemon.connections.discard(self.conn)
        if self.accepted_key:
            reason = f": {exc}" if exc else ""
            log.info("Disconnected from user %s %s%s", self.user, self.where(), reason)

    # Auth: public keys only (asyncssh offers no method this class does not enable).

    def begin_auth(self, username: str) -> bool:
        self.user = username
        if username != self.daemon.settings.login_user:
            log.info(
                "Refused user %s from %s: only %s may log in",
                username,
                self.where(),
                self.daemon.settings.login_user,
            )
            return True
        # Read per connection so a rewritten authorized_keys applies without a restart.
        self.allowed = read_authorized_keys(self.daemon.settings.authorized_keys)
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        fp = f"{key.get_algorithm()} {key.get_fingerprint('sha256')}"
        if username == self.daemon.settings.login_user and key.public_data in self.allowed:
            self.accepted_key = fp
            return True
        if username == self.daemon.settings.login_user:
            log.info("Refused publickey for %s from %s: %s", username, self.where(), fp)
        return False

    def auth_completed(self) -> None:
        log.info(
            "Accepted publickey for %s from %s: %s", self.user, self.where(), self.accepted_key
        )

    # Sessions and forwards.

    def session_requested(self) -> SessionProcess:
        return SessionProcess(self.run_session, self.daemon.session_cwd())

    async def run_session(self, process: SessionProcess) -> None:
        await run_session(self.daemon, self, process)

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> bool:
        return True  # -L and -D: asyncssh opens the connection and pipes it

    def server_requested(
        self, listen_host: str, listen_port: int
    ) -> bool | Awaitable[asyncssh.SSHListener]:
        # ssh sends "localhost" for -R PORT:... and "" for -R *:PORT. sshd's default
        # (GatewayPorts no) binds loopback whatever was asked: a client must not be able to
        # open a port on the runtime's other interfaces (its LAN, a public address).
        asked = listen_host or "*"
        if self.daemon.settings.gateway_ports == "clientspecified" or _is_loopback(listen_host):
            log.info("Remote forward for %s on %s:%d", self.user, asked, listen_port)
            return True
        log.info(
            "Remote forward for %s on %s:%d bound to localhost:%d instead "
            '(server.gateway_ports is "no")',
            self.user,
            asked,
            listen_port,
            listen_port,
        )
        return self._listen_on_loopback(listen_host, listen_port)

    async def _listen_on_loopback(self, listen_host: str, listen_port: int) -> asyncssh.SSHListener:
        assert self.conn is not None
        # The channels still name the address the client asked for: ssh matches incoming
        # forwarded-tcpip channels to its -R by that address and port.
        return await self.conn.forward_local_port(
            "localhost", listen_port, listen_host, listen_port
        )

    def unix_connection_requested(self, dest_path: str) -> bool:
        return True

    def unix_server_requested(self, listen_path: str) -> bool:
        log.info("Remote forward for %s on socket %s", self.user, listen_path)
        # sshd's StreamLocalBindUnlink yes: a socket left by a dead forward is replaced at
        # once instead of refusing the new one. Only sockets: never a regular file.
        with contextlib.suppress(OSError):
            if stat.S_ISSOCK(os.lstat(listen_path).st_mode):
                os.unlink(listen_path)
        return True


def read_authorized_keys(path: str) -> set[bytes]:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as exc:
        log.error("cannot read authorized keys %s: %s", path, exc.strerror)
        return set()
    keys: set[bytes] = set()
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            keys.add(asyncssh.import_public_key(line).public_data)
        except (asyncssh.KeyImportError, ValueError):
            # A line with options (from=, command=, ...) lands here: ignoring the line is
            # safe, accepting its key without honouring the options would not be.
            log.warning("%s line %d: not a plain public key line; ignored", path, number)
    return keys
