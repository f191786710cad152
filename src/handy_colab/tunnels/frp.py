"""The frp route, runtime half: frpc in front of the runtime's SSH server, to the user's frps.

Three modes: public (a ``tcp`` proxy: frps exposes ``remote_port``), private (``stcp``:
nothing exposed; the laptop is a visitor holding the shared secret) and p2p (``xtcp``: the
laptop's visitor punches through to the runtime when the NATs allow it, with an ``stcp``
proxy of the same secret as its fallback through frps).

frpc's config is generated 0600 in the private state dir (token, secret and the admin
password never on a command line or in a log); frps's certificate is verified against the CA
the config pins (frpc does not verify by default). Readiness comes from frpc's admin API on
127.0.0.1 (with generated credentials), then the runtime's SSH banner through frps: from the
public port, or in the private modes through a visitor of the runtime's own frpc.
"""

from __future__ import annotations

import base64
import logging
import re
import secrets
import socket
import ssl
import time
from typing import Any

from ..config import RuntimeConfig
from ..connection import FrpEndpoint
from ..errors import TunnelError
from ..fsutil import atomic_write
from ..proc import WatchedProcess
from ..state import RuntimeDir
from .base import Tunnel, check_program
from .common import free_port, local_json, state_write_error, tcp_banner
from .frp_common import FRP_VERSION, FRPC, common_lines, installer, read_secret, toml_str
from .frp_config import ensure_secret
from .frp_log import classify

log = logging.getLogger(__name__)

# Still importable from here (runtime.py, client/connect.py, tests).
__all__ = [
    "FRPC",
    "FRP_VERSION",
    "STALE_RETRY",
    "FrpTunnel",
    "common_lines",
    "installer",
    "read_secret",
    "toml_str",
]

_POLL = 0.1
STALE_RETRY = 2.0
_HOLE_FAILED = re.compile(r"(make hole error.*|nathole \w+ error.*)")
# frpc logs every admin API request it serves (ours, each poll).
_API_CHATTER = re.compile(r"\] http (request|response)\b|\[D\] (?!.*join connections, )")


class FrpTunnel(Tunnel):
    kind = "frp"
    program = "frpc"

    def __init__(self, cfg: RuntimeConfig, rd: RuntimeDir, local_port: int) -> None:
        super().__init__(cfg, local_port)
        self.rd = rd
        self.settings = cfg.frp_settings
        self.binary = installer(self.settings).resolve()
        self.config_file = rd.path / "frpc.toml"
        self.ca_copy = rd.path / "frps_ca.pem"
        self.admin_port = 0
        self.check_port = 0
        self.admin_password = secrets.token_urlsafe(24)
        self._tls_checked = False
        self.token = (
            read_secret(self.settings.token_file, "token") if self.settings.token_file else None
        )
        self.secret = None
        if self.settings.mode != "public":
            assert self.settings.secret_file is not None
            self.secret = read_secret(ensure_secret(self.settings.secret_file), "secret")
        if self.settings.ca_file is not None:
            try:
                atomic_write(self.ca_copy, self.settings.ca_file.read_bytes(), 0o600)
            except OSError as exc:
                raise state_write_error(rd, "frpc", exc) from None
        if not self.settings.verified:
            self.warnings.append(
                f"frps {self.settings.server}:{self.settings.port} is not verified: the config "
                f"pins no certificate (the seed's format has no such field; add an frp section "
                f"with ca_file: `handy-colab help frp`)"
            )
            log.warning("%s", self.warnings[-1])

    # -- names ---------------------------------------------------------------------------------
    @property
    def stcp_name(self) -> str:
        """The proxy reached through frps (private mode's only one; p2p mode's fallback)."""
        name = self.settings.proxy_name
        return name if self.settings.mode == "private" else f"{name}-relay"

    @property
    def check_name(self) -> str:
        """The stcp proxy the runtime's own check visits: in p2p mode one of its own, so
        the laptop's fallback sessions on the relay proxy are told apart from the checks."""
        if self.settings.mode == "p2p":
            return f"{self.settings.proxy_name}-check"
        return self.stcp_name

    @property
    def endpoint(self) -> str:
        s = self.settings
        if s.mode == "public":
            return f"{s.server}:{s.remote_port} (frp public)"
        return f"frps {s.server}:{s.port} proxy {s.proxy_name} (frp {s.mode})"

    def forward_desc(self) -> str:
        return f"{self.endpoint} -> 127.0.0.1:{self.local_port}"

    def route_endpoint(self) -> FrpEndpoint:
        s = self.settings
        return FrpEndpoint(
            server=s.server,
            port=s.port,
            mode=s.mode,
            proxy=s.proxy_name,
            remote_port=s.remote_port,
            server_name=s.server_name or s.server,
            verified=s.verified,
            stun=s.stun_server,
        )

    # -- the child -----------------------------------------------------------------------------
    def render_config(self) -> str:
        s = self.settings
        lines = common_lines(s, self.token, str(self.ca_copy) if s.verified else None)
        if s.mode == "p2p":
            lines.insert(0, f"natHoleStunServer = {toml_str(s.stun_server)}")
            # Debug lines name the proxy each session joins (how status tells the laptop's
            # direct sessions from its fallbacks); the rest of the debug chatter is dropped.
            lines[lines.index('log.level = "info"')] = 'log.level = "debug"'
        lines += [
            'webServer.addr = "127.0.0.1"',
            f"webServer.port = {self.admin_port}",
            'webServer.user = "handy-colab"',
            f"webServer.password = {toml_str(self.admin_password)}",
            "",
        ]

        def proxy(name: str, kind: str, extra: list[str]) -> list[str]:
            return [
                "[[proxies]]",
                f"name = {toml_str(name)}",
                f'type = "{kind}"',
                'localIP = "127.0.0.1"',
                f"localPort = {self.local_port}",
                *extra,
                "",
            ]

        if s.mode == "public":
            lines += proxy(s.proxy_name, "tcp", [f"remotePort = {s.remote_port}"])
            return "\n".join(lines)
        assert self.secret is not None
        secret = [f"secretKey = {toml_str(self.secret)}"]
        if s.mode == "p2p":
            # Data bypasses frps here: encrypt it end to end as well as SSH does.
            lines += proxy(s.proxy_name, "xtcp", [*secret, "transport.useEncryption = true"])
        lines += proxy(self.stcp_name, "stcp", secret)
        if self.check_name != self.stcp_name:
            lines += proxy(self.check_name, "stcp", secret)
        # Our own visitor of an stcp proxy: the end-to-end check goes through frps.
        lines += [
            "[[visitors]]",
            'name = "handy-colab-check"',
            'type = "stcp"',
            f"serverName = {toml_str(self.check_name)}",
            *secret,
            'bindAddr = "127.0.0.1"',
            f"bindPort = {self.check_port}",
            "",
        ]
        return "\n".join(lines)

    def argv(self) -> list[str]:
        return [str(self.binary.path), "-c", str(self.config_file)]

    def _launch(self) -> None:
        self.stop()
        self._tls_checked = False
        self.admin_port = free_port()
        self.check_port = free_port() if self.settings.mode != "public" else 0
        check_program(self.binary)
        try:
            atomic_write(self.config_file, self.render_config(), 0o600)
            self.proc = WatchedProcess(
                self.argv(), label="frpc", on_exit=self.on_exit, quiet=_API_CHATTER
            )
        except OSError as exc:
            raise TunnelError(f"cannot run {self.binary.path}: {exc.strerror or exc}") from None

    def start(self, timeout: float) -> None:
        """Start frpc; return once frps accepted every proxy.

        A replaced runtime finds its proxy still held by the old session until frps notices
        that session is gone; frpc itself would ask again only every 30 s, so a new frpc
        asks every ``STALE_RETRY`` seconds until then (or the deadline).
        """
        deadline = time.monotonic() + timeout
        self._launch()
        want = {self.settings.proxy_name}
        if self.settings.mode != "public":
            want |= {self.stcp_name, self.check_name}
        while True:
            assert self.proc is not None
            if not self.proc.alive():
                err = self.failure()
                self.stop()
                raise err
            # What waiting cannot fix (a refused token, an unpinned certificate) ends it now.
            early = self._diagnose()
            if early is not None and early.permanent:
                self.stop()
                raise early
            states = self.proxy_states()
            errors = [
                f"[{n}] {e}" for n, (st, e) in states.items() if n in want and st == "start error"
            ]
            if errors:
                err = classify([*self.proc.last_lines(40), *errors], self.settings) or TunnelError(
                    f"frps refused the proxy: {errors[0]}"
                )
                if err.permanent or time.monotonic() + STALE_RETRY > deadline:
                    self.stop()
                    raise err
                log.info("%s; asking again in %.0fs", err, STALE_RETRY)
                self.stop()
                time.sleep(STALE_RETRY)
                self._launch()
                continue
            if all(states.get(n, ("", ""))[0] == "running" for n in want):
                log.info("frps accepted %s (pid %d)", ", ".join(sorted(want)), self.proc.pid)
                return
            if time.monotonic() > deadline:
                found = self._diagnose()
                self.stop()
                raise found or TunnelError(
                    f"frps {self.settings.server}:{self.settings.port} did not accept the proxy "
                    f"within {timeout:.0f}s. Fix: check frps is reachable from the runtime"
                )
            time.sleep(_POLL)

    def _diagnose(self) -> TunnelError | None:
        """Why frpc is not getting anywhere, if its lines (or a look at frps's certificate)
        tell; the certificate first, since frpc may report it as a lost session."""
        assert self.proc is not None
        return self._tls_verdict() or classify(self.proc.last_lines(40), self.settings)

    def _tls_verdict(self) -> TunnelError | None:
        """frpc over a multiplexed session often reports a certificate it refused only as
        "session shutdown" (measured: 7 times in 9); then check frps's certificate against
        the pin ourselves, once, to name the real cause."""
        if self._tls_checked or not self.settings.verified or self.proc is None:
            return None
        if not any("session shutdown" in ln for ln in self.proc.last_lines(40)):
            return None
        self._tls_checked = True
        s = self.settings
        ctx = ssl.create_default_context(cafile=str(self.ca_copy))
        try:
            with (
                socket.create_connection((s.server, s.port), timeout=5) as raw,
                ctx.wrap_socket(raw, server_hostname=s.server_name or s.server),
            ):
                return None
        except ssl.SSLCertVerificationError as exc:
            return classify([f"x509: {exc.verify_message}"], s)
        except (OSError, ssl.SSLError):
            return None

    def proxy_states(self) -> dict[str, tuple[str, str]]:
        """name -> (status, error) from frpc's admin API ({} before the first login)."""
        auth = base64.b64encode(f"handy-colab:{self.admin_password}".encode()).decode()
        _, data = local_json(self.admin_port, "/api/status", {"Authorization": f"Basic {auth}"})
        out: dict[str, tuple[str, str]] = {}
        if isinstance(data, dict):
            for group in data.values():
                for p in group if isinstance(group, list) else []:
                    if isinstance(p, dict) and isinstance(p.get("name"), str):
                        out[p["name"]] = (str(p.get("status", "")), str(p.get("err", "")))
        return out

    def failure(self) -> TunnelError:
        if self.proc is None:
            return TunnelError("frpc is not running")
        self.proc.settle()
        lines = self.proc.last_lines(40)
        return classify(lines, self.settings) or TunnelError(
            f"frpc ended: {lines[-1] if lines else 'no output'}"
        )

    def check(self, timeout: float) -> None:
        s = self.settings
        if s.mode == "public":
            connected, banner = tcp_banner(s.server, s.remote_port, timeout)
            where = f"{s.server}:{s.remote_port}"
        else:
            connected, banner = tcp_banner("127.0.0.1", self.check_port, timeout)
            where = f"proxy {self.check_name} through frps"
        if banner.startswith("SSH-"):
            return
        raise TunnelError(
            f"{where} does not answer with the runtime's SSH banner "
            f"({'got ' + repr(banner[:40]) if connected else banner}). Fix: check frps and its "
            f"firewall (port {s.remote_port or s.port})"
        )

    def p2p_path(self) -> str | None:
        """p2p mode: which path the laptop's last session took, from frpc's own lines."""
        if self.settings.mode != "p2p" or self.proc is None:
            return None
        relay = f"[{self.stcp_name}]"
        for line in reversed(self.proc.last_lines(600)):
            if "establishing nat hole connection successful" in line:
                return "direct (hole punched, data bypasses frps)"
            if relay in line and "join connections" in line:
                return "through frps (stcp fallback)"
            m = _HOLE_FAILED.search(line)
            if m:
                return f"through frps (stcp fallback: {m.group(1).strip()[:80]})"
        return "no session yet"

    def details(self) -> dict[str, Any]:
        states = self.proxy_states() if self.alive() else {}
        return {
            "p2p_path": self.p2p_path(),
            "mode": self.settings.mode,
            "server": f"{self.settings.server}:{self.settings.port}",
            "verified": self.settings.verified,
            "proxies": {n: st for n, (st, _) in states.items()},
            "binary": f"{self.binary.path} {self.binary.version} ({self.binary.source})",
        }
