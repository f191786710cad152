"""The cloudflared route: both halves.

Runtime: ``cloudflared tunnel --url ssh://127.0.0.1:PORT`` in front of the runtime's SSH
server, as a quick tunnel (no account: a random ``*.trycloudflare.com`` name per start) or a
named tunnel (``tunnel run`` with a token file, a fixed hostname). It counts as up only when
cloudflared's metrics say an edge connection is ready, the hostname resolves, and the
runtime's SSH banner comes back over the same WebSocket path the laptop uses.

Laptop: a ProxyCommand (`tunnels.websocket`) that opens ``wss://HOSTNAME/`` itself, so the
laptop needs no cloudflared; it reads the current hostname from the descriptor at each
connection, and ``HostKeyAlias`` keeps the runtime's key pinned whatever the name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import time
from pathlib import Path
from typing import Any

from ..binaries import Asset, BinarySpec, Installer
from ..config import RuntimeConfig
from ..connection import CloudflaredEndpoint
from ..errors import TunnelError
from ..fsutil import atomic_write
from ..proc import WatchedProcess
from ..state import RuntimeDir
from .base import Tunnel, check_program
from .cloudflared_log import classify, last_error, short
from .common import free_port, local_json, state_write_error
from .websocket import read_banner

log = logging.getLogger(__name__)

# Pinned release; digests of the official assets (two public projects pin the same ones).
CLOUDFLARED = BinarySpec(
    name="cloudflared",
    version="2026.3.0",
    base_url="https://github.com/cloudflare/cloudflared/releases/download",
    assets={
        "linux-amd64": Asset(
            "cloudflared-linux-amd64",
            "4a9e50e6d6d798e90fcd01933151a90bf7edd99a0a55c28ad18f2e16263a5c30",
        ),
        "linux-arm64": Asset(
            "cloudflared-linux-arm64",
            "0755ba4cbab59980e6148367fcf53a8f3ec85a97deefd63c2420cf7850769bee",
        ),
    },
    url_env="HANDY_COLAB_CLOUDFLARED_URL",
    bin_env="HANDY_COLAB_CLOUDFLARED_BINARY",
    config_hint="cloudflared",
)

# A quick tunnel forces QUIC and never falls back by itself (cloudflared's static protocol
# selector): seeing this, we start it again with HTTP/2.
_QUIC_FAILED = re.compile(r"Failed to dial a quic connection|failed to dial to edge with quic")
_REGISTERED = re.compile(r"Registered tunnel connection .*?location=(\S+).*?protocol=(\S+)")
_POLL = 0.1
QUIC_VERDICT_TTL = 24 * 3600.0


def installer(cfg: RuntimeConfig) -> Installer:
    return Installer(
        CLOUDFLARED, explicit=cfg.cloudflared.binary, base_url=cfg.cloudflared.download_url
    )


def _recent(path: Path, ttl: float) -> bool:
    try:
        return time.time() - path.stat().st_mtime < ttl
    except OSError:
        return False


def _child_env() -> dict[str, str]:
    """Our environment without cloudflared's TUNNEL_* settings: a TUNNEL_URL or
    TUNNEL_ORIGIN_CERT the user exported for something else must not steer this tunnel."""
    return {k: v for k, v in os.environ.items() if not k.startswith("TUNNEL_")}


class CloudflaredTunnel(Tunnel):
    kind = "cloudflared"
    program = "cloudflared"

    def __init__(self, cfg: RuntimeConfig, rd: RuntimeDir, local_port: int) -> None:
        super().__init__(cfg, local_port)
        self.rd = rd
        self.settings = cfg.cloudflared
        # The pinned download, verified (or the program the config names), and checked again
        # before every start (_launch).
        self.binary = installer(cfg).resolve()
        # QUIC seen blocked on this machine lately: start with HTTP/2 rather than wait again.
        self.quic_verdict = rd.path / "quic_blocked"
        self.protocol = "http2" if self.settings.protocol == "http2" else "quic"
        if self.settings.protocol == "auto" and _recent(self.quic_verdict, QUIC_VERDICT_TTL):
            self.protocol = "http2"
        self.hostname: str | None = self.settings.hostname
        self.metrics_port = 0
        self.locations: list[str] = []
        self.ready_seconds: float | None = None  # the last start: launch -> ready
        # An explicit config file of ours: a ~/.cloudflared/config.yml (whose ingress rules
        # would override --url) is then never read.
        self.config_file = rd.path / "cloudflared.yml"
        self.token_file = rd.path / "cloudflared_token"
        try:
            atomic_write(
                self.config_file, "# handy-colab: settings are on the command line\n{}\n", 0o600
            )
            if self.settings.token_file is not None:
                # A 0600 copy in the private state dir: cloudflared reads it there, so the
                # token is on no command line and in no environment.
                atomic_write(self.token_file, self.settings.token_file.read_bytes(), 0o600)
        except OSError as exc:
            raise state_write_error(rd, "cloudflared", exc) from None

    # -- the child ----------------------------------------------------------------------------
    def argv(self) -> list[str]:
        argv = [
            str(self.binary.path),
            "tunnel",
            "--no-autoupdate",
            "--config",
            str(self.config_file),
            "--metrics",
            f"127.0.0.1:{self.metrics_port}",
            "--loglevel",
            "info",
            "--protocol",
            self.protocol,
            "--url",
            f"ssh://127.0.0.1:{self.local_port}",
            *self.settings.extra_args,
        ]
        if self.settings.named:
            argv += ["run", "--token-file", str(self.token_file)]
        return argv

    def forward_desc(self) -> str:
        return f"{self.endpoint} -> 127.0.0.1:{self.local_port}"

    @property
    def endpoint(self) -> str:
        kind = "named tunnel" if self.settings.named else "quick tunnel"
        return f"https://{self.hostname or '(pending)'} ({kind})"

    def _launch(self) -> None:
        self.stop()
        self.metrics_port = free_port()
        self.locations = []
        if not self.settings.named:
            self.hostname = None
        check_program(self.binary)
        try:
            self.proc = WatchedProcess(
                self.argv(), label="cloudflared", on_exit=self.on_exit, env=_child_env()
            )
        except OSError as exc:
            raise TunnelError(
                f"cannot run {self.binary.path}: {exc.strerror or exc}", permanent=True
            ) from None

    def start(self, timeout: float) -> None:
        """Start cloudflared; return once an edge connection is ready and the name resolves."""
        started = time.monotonic()
        deadline = started + timeout
        self._launch()
        while True:
            assert self.proc is not None
            if not self.proc.alive():
                err = self.failure()
                self.stop()
                raise err
            if self._quic_blocked():
                log.warning("QUIC to Cloudflare's edge (UDP 7844) looks blocked: using HTTP/2")
                self.protocol = "http2"
                with contextlib.suppress(OSError):
                    atomic_write(self.quic_verdict, f"{time.time():.0f}\n", 0o600)
                self._launch()
                continue
            if self._ready() and self._hostname():
                break
            if time.monotonic() > deadline:
                err = self._timeout_error(timeout)
                self.stop()
                raise err
            time.sleep(_POLL)
        self._wait_resolvable(deadline)
        self.ready_seconds = round(time.monotonic() - started, 3)
        log.info(
            "cloudflared ready: %s (pid %d) after %.2fs",
            self.endpoint,
            self.proc.pid,
            self.ready_seconds,
        )

    def _quic_blocked(self) -> bool:
        if self.protocol != "quic" or self.settings.protocol != "auto" or self.proc is None:
            return False
        return any(_QUIC_FAILED.search(line) for line in self.proc.last_lines(200))

    # -- cloudflared's metrics server ---------------------------------------------------------
    def _metrics(self, path: str) -> tuple[int, Any]:
        return local_json(self.metrics_port, path)

    def edge_connections(self) -> int:
        status, body = self._metrics("/ready")
        if status != 200 or not isinstance(body, dict):
            return 0
        count = body.get("readyConnections")
        return count if isinstance(count, int) else 0

    def _ready(self) -> bool:
        return self.edge_connections() > 0

    def _hostname(self) -> str | None:
        if self.hostname:
            return self.hostname
        _, body = self._metrics("/quicktunnel")
        name = body.get("hostname") if isinstance(body, dict) else None
        if isinstance(name, str) and name:
            from .cloudflared_config import valid_hostname

            self.hostname = valid_hostname(name)
            if self.hostname is None:
                raise TunnelError(f"cloudflared reported an invalid hostname {name[:60]!r}")
        return self.hostname

    def _wait_resolvable(self, deadline: float) -> None:
        """A new name can take a moment to reach DNS; asking before /ready said so would
        only have cached a negative answer."""
        assert self.hostname is not None
        while True:
            try:
                socket.getaddrinfo(self.hostname, 443, proto=socket.IPPROTO_TCP)
                return
            except OSError as exc:
                if time.monotonic() > deadline:
                    self.stop()
                    raise TunnelError(
                        f"{self.hostname} does not resolve from the runtime "
                        f"({getattr(exc, 'strerror', None) or exc}). Fix: check the runtime's "
                        f"DNS; the supervisor keeps retrying"
                    ) from None
            time.sleep(0.25)

    # -- health and failure -------------------------------------------------------------------
    def check(self, timeout: float) -> None:
        if not self._ready():
            raise TunnelError("cloudflared has no ready connection to Cloudflare's edge")
        host = self._hostname()
        if host is None:
            raise TunnelError("cloudflared has not reported its quick tunnel's hostname")
        try:
            banner = read_banner(host, timeout)
        except OSError as exc:
            raise TunnelError(f"end-to-end check could not run: {exc}") from None
        except TunnelError as exc:
            if self.settings.named and "HTTP 502" in str(exc):
                # A dashboard-managed tunnel routes by its own settings, not by our --url.
                raise TunnelError(
                    f"https://{host} reaches the tunnel, but its route does not lead to the "
                    f"runtime's SSH server on port {self.local_port}. Fix: route the hostname "
                    f"to ssh://localhost:PORT in the tunnel's settings and set server.port to "
                    f"that PORT"
                ) from None
            raise
        if not banner.startswith("SSH-"):
            raise TunnelError(
                f"wss://{host}/ answered, but not with the runtime's SSH banner (got "
                f"{banner[:40]!r}). Fix: check that cloudflared's ingress is not overridden"
            )

    def route_endpoint(self) -> CloudflaredEndpoint | None:
        return CloudflaredEndpoint(self.hostname, self.settings.named) if self.hostname else None

    def details(self) -> dict[str, Any]:
        """What `status` shows about the tunnel beyond its state."""
        if self.proc is not None:
            self.locations = [
                m.group(1)
                for line in self.proc.last_lines(400)
                if (m := _REGISTERED.search(line)) is not None
            ]
        return {
            "hostname": self.hostname,
            "tunnel": "named" if self.settings.named else "quick",
            "protocol": self.protocol,
            "edge_connections": self.edge_connections() if self.alive() else 0,
            "locations": sorted(set(self.locations)),
            "binary": f"{self.binary.path} {self.binary.version} ({self.binary.source})",
            "ready_seconds": self.ready_seconds,
        }

    def failure(self) -> TunnelError:
        if self.proc is None:
            return TunnelError("cloudflared is not running")
        self.proc.settle()
        lines = self.proc.last_lines(60)
        return classify(lines, self._token_desc()) or TunnelError(
            f"cloudflared ended: {short(last_error(lines))}"
        )

    def _token_desc(self) -> str:
        return str(self.settings.token_file or "the token file")

    def _timeout_error(self, timeout: float) -> TunnelError:
        assert self.proc is not None
        lines = self.proc.last_lines(60)
        return classify(lines, self._token_desc()) or TunnelError(
            f"cloudflared did not get a ready connection to Cloudflare's edge within "
            f"{timeout:.0f}s (last: {short(last_error(lines))}). Fix: allow outbound TCP and "
            f"UDP port 7844 from the runtime"
        )
