"""A real frps on the relay host of the NAT rig, for the frp route's tests.

frps (built from frp's Go module at the pinned version by `scripts/build-test-peers.sh`) runs
in the relay namespace with token auth, TLS forced with a certificate from a test CA (the
runtime's config pins that CA), allowed ports restricted, and its dashboard API on the relay's
loopback (the tests read its proxy list and traffic counters there).
"""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path
from typing import Any

from tests.cfrig import PEERS_BIN, make_ca_and_leaf
from tests.rig import RELAY_IP, Rig, stop_process

FRPS_BIN = PEERS_BIN / "frps"
FRPC_BIN = PEERS_BIN / "frpc"
FRPS_PORT = 7000
FRPS_NAME = "frps.handy-colab.test"
ALLOWED = (6000, 6100)
DASHBOARD = 7500


def prerequisites() -> list[str]:
    return [str(p) for p in (FRPS_BIN, FRPC_BIN) if not p.exists()]


class Frps:
    def __init__(
        self, rig: Rig, token: str | None = None, *, extra: list[str] | None = None
    ) -> None:
        self.rig = rig
        self.dir = rig.work / "frps"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.token = token if token is not None else secrets.token_urlsafe(24)
        self.ca, cert, key = make_ca_and_leaf(self.dir / "tls", [FRPS_NAME])
        self.dash_password = secrets.token_urlsafe(12)
        lines = [
            f'bindAddr = "{RELAY_IP}"',
            f"bindPort = {FRPS_PORT}",
            "transport.tls.force = true",
            f'transport.tls.certFile = "{cert}"',
            f'transport.tls.keyFile = "{key}"',
            f"allowPorts = [{{ start = {ALLOWED[0]}, end = {ALLOWED[1]} }}]",
            'webServer.addr = "127.0.0.1"',
            f"webServer.port = {DASHBOARD}",
            'webServer.user = "admin"',
            f'webServer.password = "{self.dash_password}"',
            'log.to = "console"',
            "log.disablePrintColor = true",
            *(extra or []),
        ]
        if self.token:
            lines.append(f'auth.token = "{self.token}"')
        self.config = self.dir / "frps.toml"
        self.config.write_text("\n".join(lines) + "\n")
        self.log = self.dir / "frps.log"
        self.proc: subprocess.Popen[Any] | None = None
        self.start()
        rig.cleanups.append(self.stop)

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = self.rig.popen(
                "relay",
                [str(FRPS_BIN), "-c", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.rig.wait_tcp("relay", RELAY_IP, FRPS_PORT)

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def api(self, path: str) -> Any:
        code = (
            "import base64,sys,urllib.request as u\n"
            f"r=u.Request('http://127.0.0.1:{DASHBOARD}{path}')\n"
            f"r.add_header('Authorization','Basic '+base64.b64encode(b'admin:{self.dash_password}')"
            ".decode())\n"
            "sys.stdout.write(u.urlopen(r,timeout=5).read().decode())\n"
        )
        res = self.rig.run("relay", ["python3", "-c", code], check=True)
        return json.loads(res.stdout)

    def folder_config(self, folder: Path, mode: str, **extra: Any) -> dict[str, Any]:
        """The runtime's frp section (and its token and CA files) for this frps."""
        (folder / "frp_token").write_text(self.token + "\n")
        (folder / "frps_ca.pem").write_bytes(self.ca.read_bytes())
        section: dict[str, Any] = {
            "server": RELAY_IP,
            "port": FRPS_PORT,
            "token_file": "frp_token",
            "ca_file": "frps_ca.pem",
            "server_name": FRPS_NAME,
            "mode": mode,
        }
        if mode == "public":
            section["remote_port"] = 6022
        section.update(extra)
        return section
