"""The embedded server's remote forwards listen on loopback, like sshd's `GatewayPorts no`,
whatever address the client asks for; `server.gateway_ports: "clientspecified"` binds what
was asked.

The server runs in the rig's runtime namespace (192.168.77.2); the router namespace
(192.168.77.1, on the runtime's LAN) stands for another host that must not reach a forwarded
port. The ssh client is the real OpenSSH one, in the runtime namespace.
"""

from __future__ import annotations

import getpass
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from handy_colab.server.embedded import MODULE
from tests.e2e.conftest import need_rig
from tests.rig import RUNTIME_IP, Rig, keygen, stop_process, wait_until

SERVER_PORT = 2299
SERVICE_PORT = 7001

# Prints the first line a TCP service sends, or REFUSED/ERROR.
_READ = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), 3) as s:
        print(s.makefile("rb").readline().decode().strip())
except ConnectionRefusedError:
    print("REFUSED")
except OSError as exc:
    print("ERROR", exc)
"""

_SERVICE = f"""
import socket
srv = socket.create_server(("127.0.0.1", {SERVICE_PORT}))
while True:
    c, _ = srv.accept()
    c.sendall(b"from-runtime-service\\n")
    c.close()
"""


class Gw:
    def __init__(self, rig: Rig, tmp: Path) -> None:
        self.rig = rig
        self.tmp = tmp
        self.key = keygen(tmp / "laptop")
        host_key = keygen(tmp / "host_key")
        (tmp / "authorized_keys").write_text(Path(f"{self.key}.pub").read_text())
        (tmp / "known_hosts").write_text(
            f"[127.0.0.1]:{SERVER_PORT} {Path(f'{host_key}.pub').read_text()}"
        )
        self.host_key = host_key
        self.server: subprocess.Popen[bytes] | None = None

    def start_server(self, gateway_ports: str) -> None:
        stop_process(self.server)
        settings = self.tmp / f"server-{gateway_ports}.json"
        settings.write_text(
            json.dumps(
                {
                    "port": SERVER_PORT,
                    "host_key": str(self.host_key),
                    "authorized_keys": str(self.tmp / "authorized_keys"),
                    "login_user": getpass.getuser(),
                    "cwd": str(self.tmp),
                    "gateway_ports": gateway_ports,
                }
            )
        )
        self.log = self.tmp / f"server-{gateway_ports}.log"
        self.server = self.rig.popen(
            "rt",
            [sys.executable, "-m", MODULE, "--config", str(settings)],
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        self.rig.wait_tcp("rt", "127.0.0.1", SERVER_PORT, timeout=20)

    def forward(self, spec: str) -> subprocess.Popen[bytes]:
        argv = ["ssh", "-N", "-F", "/dev/null", "-p", str(SERVER_PORT), "-i", str(self.key)]
        for opt in (
            "IdentitiesOnly=yes",
            f"UserKnownHostsFile={self.tmp / 'known_hosts'}",
            "GlobalKnownHostsFile=/dev/null",
            "StrictHostKeyChecking=yes",
            "BatchMode=yes",
            "ExitOnForwardFailure=yes",
        ):
            argv += ["-o", opt]
        return self.rig.popen("rt", [*argv, "-R", spec, f"{getpass.getuser()}@127.0.0.1"])

    def read(self, role: str, host: str, port: int) -> str:
        res = self.rig.run(role, [sys.executable, "-c", _READ, host, str(port)], timeout=30)
        return str(res.stdout).strip()

    def listening(self, port: int) -> set[str]:
        """The runtime's listening addresses for ``port`` (hex, from its own /proc/net)."""
        found = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            rows = str(self.rig.run("rt", ["cat", table]).stdout).splitlines()[1:]
            for row in rows:
                local, state = row.split()[1], row.split()[3]
                addr, hexport = local.rsplit(":", 1)
                if state == "0A" and int(hexport, 16) == port:
                    found.add(addr)
        return found


LOOPBACK = {"0100007F", "00000000000000000000000001000000"}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gw]:
    need_rig()
    tmp = tmp_path_factory.mktemp("gwports")
    rig = Rig(tmp / "rig")
    try:
        g = Gw(rig, tmp)
        rig.popen("rt", [sys.executable, "-c", _SERVICE])
        rig.wait_tcp("rt", "127.0.0.1", SERVICE_PORT)
        yield g
    finally:
        leftovers = rig.close()
    assert leftovers == []


@pytest.mark.parametrize(
    "spec_host", ["*", "0.0.0.0", RUNTIME_IP], ids=["star", "any4", "lan-address"]
)
def test_remote_forward_asking_for_every_interface_listens_on_loopback(
    gw: Gw, spec_host: str
) -> None:
    gw.start_server("no")
    port = 7100 + ["*", "0.0.0.0", RUNTIME_IP].index(spec_host)
    fwd = gw.forward(f"{spec_host}:{port}:127.0.0.1:{SERVICE_PORT}")
    try:
        assert wait_until(lambda: gw.listening(port), 15), gw.log.read_text()
        # The runtime itself reaches it on loopback; another host on its LAN does not.
        assert gw.read("rt", "127.0.0.1", port) == "from-runtime-service"
        assert gw.read("router", RUNTIME_IP, port) == "REFUSED"
        addrs = gw.listening(port)
        assert addrs and addrs <= LOOPBACK, addrs
        assert fwd.poll() is None
    finally:
        stop_process(fwd)
    log = gw.log.read_text()
    assert f"bound to localhost:{port} instead" in log, log
    assert wait_until(lambda: not gw.listening(port), 10)


def test_clientspecified_binds_what_the_client_asked(gw: Gw) -> None:
    gw.start_server("clientspecified")
    port = 7200
    fwd = gw.forward(f"*:{port}:127.0.0.1:{SERVICE_PORT}")
    try:
        assert wait_until(lambda: gw.listening(port), 15), gw.log.read_text()
        assert gw.read("router", RUNTIME_IP, port) == "from-runtime-service"
        assert gw.read("rt", "127.0.0.1", port) == "from-runtime-service"
    finally:
        stop_process(fwd)
        stop_process(gw.server)
