"""The embedded server's settings: the JSON file its parent writes, read and checked once.

EmbeddedServer.prepare() (embedded.py) and the demo's relay (demo.py) write the file; the
server process reads it at start-up (asyncssh_server.py). A bad file is reported as one
"fatal: " line instead of a traceback, so the parent can show why the server did not start.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .embedded import login_defaults


@dataclass(frozen=True)
class Settings:
    """The JSON config written by EmbeddedServer.prepare()."""

    port: int
    host_key: str
    authorized_keys: str
    login_user: str
    cwd: str
    shell: str
    # Set by a runtime (not the demo's relay): sessions start through handy-colab's
    # launcher, and the notebook's directory is read from session.json at each session.
    launcher: str = ""
    session_info: str = ""
    # sshd's GatewayPorts: "no" binds every -R on loopback; "clientspecified" what was asked.
    gateway_ports: str = "no"

    @classmethod
    def load(cls, path: Path) -> Settings:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError("the config must be a JSON object")
        missing = [
            k for k in ("port", "host_key", "authorized_keys", "login_user") if k not in data
        ]
        if missing:
            raise ValueError(f"missing field(s): {', '.join(missing)}")
        port = data["port"]
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be 0-65535, not {port!r}")
        home, shell = login_defaults()
        return cls(
            port=port,
            host_key=str(data["host_key"]),
            authorized_keys=str(data["authorized_keys"]),
            login_user=str(data["login_user"]),
            cwd=str(data.get("cwd") or home),
            shell=str(data.get("shell") or shell),
            launcher=str(data.get("launcher") or ""),
            session_info=str(data.get("session_info") or ""),
            gateway_ports=_gateway_ports(data.get("gateway_ports", "no")),
        )


def _gateway_ports(value: object) -> str:
    if value not in ("no", "clientspecified"):
        raise ValueError(f'gateway_ports must be "no" or "clientspecified", not {value!r}')
    return str(value)
