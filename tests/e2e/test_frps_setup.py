"""frps-setup's frps.toml run by the real frps 0.71.0 enforces what it says: a real frpc
asking for a second port, or a port outside allowPorts, is refused by frps; the one allowed
port works. In a network namespace of its own (nothing of it on this machine's network)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from handy_colab import frps_setup
from tests.e2e.cfhelpers import need_peers
from tests.frprig import FRPC_BIN, FRPS_BIN
from tests.rig import sh, stop_process, wait_until

LOW, HIGH = 6000, 6001
# A TCP service in the namespace for the proxies to point at, and a check from inside it.
_SERVICE = """
import socket
srv = socket.create_server(("127.0.0.1", 7100))
while True:
    c, _ = srv.accept()
    c.sendall(b"through-frps\\n")
    c.close()
"""
_READ = """
import socket, sys
try:
    with socket.create_connection(("127.0.0.1", int(sys.argv[1])), 3) as s:
        print(s.makefile("rb").readline().decode().strip())
except OSError as exc:
    print("ERROR", exc)
"""


@pytest.fixture
def ns() -> Iterator[str]:
    need_peers()
    name = f"hcfrps{os.getpid() % 100000}"
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        # The test stops what it started; anything still here is a leak.
        pids = sh("ip", "netns", "pids", name, check=False).stdout.split()
        sh("ip", "netns", "del", name, check=False)
        assert pids == [], f"left running in {name}: {pids}"


def popen(ns: str, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["ip", "netns", "exec", ns, *argv], stdout=log.open("wb"), stderr=subprocess.STDOUT
    )


def frpc_toml(out: Path, plan: frps_setup.FrpsPlan, ports: list[int]) -> str:
    lines = [
        'serverAddr = "127.0.0.1"',
        f"serverPort = {plan.bind_port}",
        f'auth.token = "{plan.token}"',
        f'transport.tls.trustedCaFile = "{out / "runtime" / "frps_ca.pem"}"',
        "loginFailExit = true",
        'log.to = "console"',
        "log.disablePrintColor = true",
    ]
    for i, port in enumerate(ports):
        lines += [
            "[[proxies]]",
            f'name = "p{i}-{port}"',
            'type = "tcp"',
            'localIP = "127.0.0.1"',
            "localPort = 7100",
            f"remotePort = {port}",
        ]
    return "\n".join(lines) + "\n"


def test_rendered_frps_toml_limits_ports_per_client_and_range(ns: str, tmp_path: Path) -> None:
    out = tmp_path / "frps"
    plan = frps_setup.make_plan("127.0.0.1", bind_port=7000, ports=f"{LOW}-{HIGH}")
    frps_setup.write(plan, out)
    toml = (out / "frps.toml").read_text()
    assert f"allowPorts = [{{ start = {LOW}, end = {HIGH} }}]" in toml
    assert "maxPortsPerClient = 1" in toml
    for name in ("frps.toml", "server.key", "runtime/frp_token"):
        assert (out / name).stat().st_mode & 0o777 == 0o600, name
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(popen(ns, [str(FRPS_BIN), "-c", str(out / "frps.toml")], tmp_path / "s.log"))
        procs.append(popen(ns, ["python3", "-c", _SERVICE], tmp_path / "svc.log"))
        wait = "import socket,time\nfor _ in range(100):\n try:\n  socket.create_connection("
        wait += "('127.0.0.1',7000),1).close()\n  break\n except OSError:\n  time.sleep(0.1)\n"
        sh("ip", "netns", "exec", ns, "python3", "-c", wait)
        # Client a asks for both ports of the range (one too many), client b for one outside.
        logs = {}
        for client, ports in (("a", [LOW, HIGH]), ("b", [6500])):
            conf = tmp_path / f"frpc-{client}.toml"
            conf.write_text(frpc_toml(out, plan, ports))
            logs[client] = tmp_path / f"c-{client}.log"
            procs.append(popen(ns, [str(FRPC_BIN), "-c", str(conf)], logs[client]))

        def settled(client: str, n: int) -> bool:
            text = logs[client].read_text()
            return text.count("start error") + text.count("start proxy success") >= n

        assert wait_until(lambda: settled("a", 2) and settled("b", 1), 20), [
            p.read_text() for p in logs.values()
        ]
        a, b = logs["a"].read_text(), logs["b"].read_text()
        assert a.count("start proxy success") == 1, a
        assert a.count("start error: exceed the max_ports_per_client") == 1, a
        assert "[p0-6500] start error: port not allowed" in b, b
        served = LOW if f"-{LOW}] start proxy success" in a else HIGH
        read = ["ip", "netns", "exec", ns, "python3", "-c", _READ]
        assert sh(*read, str(served)).stdout.strip() == "through-frps"
        for port in ({LOW, HIGH} - {served}) | {6500}:
            assert sh(*read, str(port)).stdout.startswith("ERROR"), port
    finally:
        for p in reversed(procs):
            stop_process(p)
