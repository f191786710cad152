"""Relay-allocated ports (``remote_port: 0``) for real, in the NAT rig, with both tunnel
clients (``up --relay-client openssh`` and ``--relay-client embedded``) against the stock
OpenSSH relay.

The relay picks the port and the descriptor carries it to the laptop; the port survives a
relay restart, a tunnel killed and `down`/`up` with the laptop's files untouched; a port
taken during an outage makes the runtime publish a new one, which a re-run `connect` picks
up; two runtimes on one relay account get two ports. Last, a relay account made by
`relay-setup --remote-port 0` carries such tunnels and still nothing else.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Runtime, finish, make_runtime, need_rig
from tests.e2e.test_recovery import assert_transfer_ok, reconnected, status, time_to_ssh
from tests.e2e.test_relay_setup import ACCOUNT, DIR_ARGS, relay_setup_runtime
from tests.rig import RELAY_IP, wait_until

# The tunnels' grace for a refused port (tunnels/relayport.py STICKY_GRACE) plus back-off.
GRACE = 40
# A stand-in "other program" on the relay: answers every connection with a non-SSH line.
_SQUATTER = """
import socket, sys
family = socket.AF_INET6 if sys.argv[1] == "dual" else socket.AF_INET
s = socket.socket(family)
if family == socket.AF_INET6:
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", int(sys.argv[2])))
s.listen()
print("listening", flush=True)
while True:
    c, _ = s.accept()
    c.sendall(b"not-ssh\\r\\n")
    c.close()
"""


@dataclass
class Port0:
    rt: Runtime
    kind: str

    @property
    def rig(self) -> Any:
        return self.rt.rig

    def descriptor(self, name: str = "colab") -> dict[str, Any]:
        data: dict[str, Any] = json.loads(
            (self.rt.folder / "connections" / f"{name}.json").read_text()
        )
        return data

    def port(self) -> int:
        port: int = self.descriptor()["remote_port"]
        return port

    def up(self, *args: str, env: dict[str, str] | None = None) -> Any:
        argv = ["handy-colab", "up", str(self.rt.folder), "--timeout", "40"]
        return self.rig.run("rt", [*argv, "--relay-client", self.kind, *args], env=env, timeout=90)

    def relay_listens(self, port: int) -> bool:
        out = self.rig.run("relay", ["ss", "-Htln", f"sport = :{port}"]).stdout
        return "LISTEN" in out


def cmdlines(rig: Any, role: str) -> list[bytes]:
    found = []
    for pid in rig.ns_pids(role):
        with contextlib.suppress(OSError):  # gone meanwhile
            found.append(Path(f"/proc/{pid}/cmdline").read_bytes())
    return found


def set_relay(folder: Path, **fields: Any) -> None:
    path = folder / "user_config.json"
    cfg = json.loads(path.read_text())
    cfg.setdefault("relay", {}).update(fields)
    path.write_text(json.dumps(cfg, indent=2))


@pytest.fixture(scope="module", params=["openssh", "embedded"])
def p0(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Port0]:
    need_rig()
    kind: str = request.param
    rt = make_runtime(tmp_path_factory.mktemp(f"port0-{kind}"), "public", start=False)
    try:
        # The seed's folder (service_port 2222) plus "relay": {"remote_port": 0}, which wins.
        set_relay(rt.folder, remote_port=0)
        p = Port0(rt, kind)
        res = p.up()
        assert res.returncode == 0, res.stderr + res.stdout
        res = rt.connect()
        assert res.returncode == 0, res.stderr + res.stdout
        yield p
    finally:
        finish(rt)


def test_relay_allocates_the_port_and_the_laptop_gets_it(p0: Port0, tmp_path: Path) -> None:
    port = p0.port()
    assert port not in (0, 2222) and 1024 <= port <= 65535
    st = status(p0.rt)
    assert st["healthy"] and st["tunnel"]["kind"] == p0.kind
    assert st["tunnel"]["endpoint"] == f"{RELAY_IP}:{port}"
    assert st["tunnel"]["details"] == {"remote_port": port, "allocated_by": "relay"}
    assert p0.relay_listens(port)
    assert f"Port {port}" in p0.rt.ssh_config.read_text()
    res = p0.rt.ssh("echo allocated-$((40+2))")
    assert res.returncode == 0 and res.stdout == "allocated-42\n", res.stderr
    logs = p0.rig.handy("rt", "logs", "-n", "400").stdout
    assert f"relay allocated port {port}" in logs
    assert_transfer_ok(p0.rt, tmp_path)


def test_relay_restart_gives_the_same_port(p0: Port0, tmp_path: Path) -> None:
    port, laptop = p0.port(), p0.rt.ssh_config.read_bytes()
    before = status(p0.rt)["tunnel"]["reconnects"]
    p0.rig.restart_relay(down_seconds=3)
    reconnected(p0.rt, before, 40)
    assert p0.port() == port and status(p0.rt)["tunnel"]["details"]["remote_port"] == port
    # The laptop is not touched: its ssh config still names the port, and it works.
    assert p0.rt.ssh_config.read_bytes() == laptop
    assert time_to_ssh(p0.rt, 20) < 20
    assert_transfer_ok(p0.rt, tmp_path)


def test_silent_drop_keeps_the_port(p0: Port0) -> None:
    """20 s without a packet: the client's keepalive ends the tunnel while the relay still
    holds the dead session's listener; the grace lets the relay let go of it first."""
    rt, port = p0.rt, p0.port()
    st = status(rt)["tunnel"]
    rt.rig.block_runtime()
    try:
        time.sleep(20)
    finally:
        rt.rig.unblock_runtime()
    reconnected(rt, st["reconnects"], 60)
    assert p0.port() == port
    assert time_to_ssh(rt, 20) < 20


def test_killed_tunnel_and_down_up_keep_the_port(p0: Port0) -> None:
    port = p0.port()
    st = status(p0.rt)["tunnel"]
    os.kill(st["pid"], signal.SIGKILL)
    reconnected(p0.rt, st["reconnects"], 30)
    assert p0.port() == port
    # A new runtime (down, then up) asks first for the port its descriptor names.
    assert p0.rig.handy("rt", "down").returncode == 0
    res = p0.up()
    assert res.returncode == 0, res.stderr + res.stdout
    assert p0.port() == port
    assert time_to_ssh(p0.rt, 20) < 20


def test_port_taken_during_an_outage_moves_to_a_new_port(p0: Port0, tmp_path: Path) -> None:
    """openssh: the squatter holds IPv4 only, so sshd still "grants" [::]:PORT and the
    runtime must notice that IPv4 clients reach someone else; embedded: it holds both, and
    the relay refuses the port outright."""
    rt, rig = p0.rt, p0.rig
    port, before = p0.port(), status(rt)["tunnel"]["reconnects"]
    rig.kill_relay_sshd()
    variant = "ipv4" if p0.kind == "openssh" else "dual"
    squatter = rig.popen(
        "relay",
        ["python3", "-c", _SQUATTER, variant, str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert squatter.stdout is not None and squatter.stdout.readline() == "listening\n"
        rig.start_relay([rt.relay_key, rt.laptop_key])
        reconnected(rt, before, GRACE + 35)
        new = p0.port()
        assert new not in (0, port)
        st = status(rt)["tunnel"]
        assert st["endpoint"] == f"{RELAY_IP}:{new}" and st["details"]["remote_port"] == new
        logs = rig.handy("rt", "logs", "-n", "600").stdout
        assert f"port {port} is not ours for now" in logs
        assert f"relay refused port {port}; asking it for any free port" in logs
        assert f"relay allocated port {new}" in logs
        # The laptop's old config reaches the squatter: ssh refuses it (no banner)...
        old = rt.ssh("true", timeout=30)
        assert old.returncode == 255 and "not-ssh" not in old.stdout
        # ...and a re-run connect reads the republished descriptor.
        res = rt.connect()
        assert res.returncode == 0, res.stderr + res.stdout
        assert f"Port {new}" in rt.ssh_config.read_text()
        assert time_to_ssh(rt, 20) < 20
        assert_transfer_ok(rt, tmp_path)
    finally:
        squatter.kill()
        squatter.wait()


def test_two_runtimes_share_one_relay_account(p0: Port0, tmp_path: Path) -> None:
    """A second runtime from the same folder and relay key (its own name and state)."""
    rt, rig = p0.rt, p0.rig
    env2 = dict(rig.env(), HANDY_COLAB_STATE_DIR=str(tmp_path / "state2"))

    def down2() -> None:
        rig.run("rt", ["handy-colab", "down", "colab2"], env=env2, timeout=30)

    rig.cleanups.append(down2)
    try:
        res = p0.up("--name", "colab2", env=env2)
        assert res.returncode == 0, res.stderr + res.stdout
        one, two = p0.port(), p0.descriptor("colab2")["remote_port"]
        assert 0 not in (one, two) and one != two
        assert p0.relay_listens(one) and p0.relay_listens(two)
        res = rig.run("rt", ["handy-colab", "status", "colab2", "--json"], env=env2)
        assert json.loads(res.stdout)["tunnel"]["details"]["remote_port"] == two
        res = rt.connect(rt.folder / "connections" / "colab2.json")
        assert res.returncode == 0, res.stderr + res.stdout
        for name in ("colab", "colab2"):
            res = rig.run("laptop", [*rt.ssh_base(), name, "echo", name])
            assert res.returncode == 0 and res.stdout == f"{name}\n", res.stderr
    finally:
        down2()
        rig.cleanups.remove(down2)
    assert not [c for c in cmdlines(rig, "rt") if b"colab2" in c]
    assert time_to_ssh(rt, 10) < 10  # the first one was not disturbed


# -- relay-setup --remote-port 0 -----------------------------------------------------------


@dataclass
class Locked:
    rt: Runtime
    probe_config: Path

    def forward(self, spec: str) -> Any:
        """``ssh -N -R spec`` as the account with the runtime's relay key."""
        argv = ["ssh", "-F", str(self.probe_config), "-N", "-o", "ExitOnForwardFailure=yes"]
        return self.rt.rig.run("rt", [*argv, "-R", spec, "probe"], timeout=30)


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Locked]:
    need_rig()
    tmp = tmp_path_factory.mktemp("port0-relay-setup")
    with relay_setup_runtime(tmp, "public") as rt:
        yield _lock_down(rt, tmp)


def _lock_down(rt: Runtime, tmp: Path) -> Locked:
    rig = rt.rig
    confdir = tmp / "sshd_config.d"
    confdir.mkdir()
    host_key = rig.start_relay([], include_dir=confdir, stock=True)
    main = rig.work / "relay" / "sshd_config"
    res = rig.handy(
        "relay",
        *("relay-setup", "--account", ACCOUNT, "--key", f"{rt.relay_key}.pub"),
        *("--remote-port", "0", "--apply"),
        *("--sshd-config-dir", str(confdir), "--sshd-config", str(main)),
        *DIR_ARGS,
    )
    assert res.returncode == 0, res.stderr + res.stdout
    assert '"remote_port": 0' in res.stdout and "ip_local_port_range" in res.stdout
    log = rig.work / "relay" / "sshd.log"
    before = log.read_text(errors="replace").count("Server listening on")
    reload_cmd = res.stdout.split("Now reload sshd (open sessions stay up): ", 1)[1].strip()
    subprocess.run(["sh", "-c", reload_cmd], check=True)
    assert wait_until(
        lambda: log.read_text(errors="replace").count("Server listening on") > before, 10
    )
    rig.wait_tcp("laptop", RELAY_IP, 22)
    set_relay(rt.folder, user=ACCOUNT, remote_port=0)
    known = tmp / "probe_known_hosts"
    known.write_text(f"{RELAY_IP} {host_key}\n")
    probe = tmp / "probe_config"
    probe.write_text(
        f"Host probe\n    HostName {RELAY_IP}\n    User {ACCOUNT}\n"
        f"    IdentityFile {rt.relay_key}\n    IdentitiesOnly yes\n    BatchMode yes\n"
        f"    StrictHostKeyChecking yes\n    UserKnownHostsFile {known}\n"
        "    GlobalKnownHostsFile /dev/null\n    ConnectTimeout 10\n"
    )
    return Locked(rt, probe)


@pytest.mark.parametrize("kind", ["openssh", "embedded"])
def test_relay_setup_port_zero_account(locked: Locked, kind: str) -> None:
    p = Port0(locked.rt, kind)
    (locked.rt.folder / "connections" / "colab.json").unlink(missing_ok=True)
    res = p.up()
    assert res.returncode == 0, res.stderr + res.stdout
    try:
        port = p.port()
        assert port != 0 and status(p.rt)["tunnel"]["details"]["remote_port"] == port
        res = p.rt.connect()
        assert res.returncode == 0, res.stderr + res.stdout
        res = p.rt.ssh("echo via-$((6*7))")
        assert res.returncode == 0 and res.stdout == "via-42\n", res.stderr
        # permitlisten="*" also lets the reconnect ask for that same port again.
        st = status(p.rt)["tunnel"]
        os.kill(st["pid"], signal.SIGKILL)
        reconnected(p.rt, st["reconnects"], 30)
        assert p.port() == port
        assert time_to_ssh(p.rt, 20) < 20
    finally:
        assert p.rig.handy("rt", "down").returncode == 0
    sessions = (p.rig.work / "relay" / "sshd.log").read_text(errors="replace")
    assert f"Accepted publickey for {ACCOUNT}" in sessions


def test_relay_setup_port_zero_account_allows_nothing_else(locked: Locked) -> None:
    # Below 1024 stays root's; a session (command, shell) is still refused.
    res = locked.forward("80:127.0.0.1:22")
    assert res.returncode == 255
    assert "remote port forwarding failed for listen port 80" in res.stderr
    marker = Path("/tmp") / f"hc-port0-{os.getpid()}"
    res = locked.rt.rig.run(
        "rt", ["ssh", "-F", str(locked.probe_config), "probe", f"touch {marker}"], timeout=30
    )
    assert res.returncode == 255 and not marker.exists(), res.stderr
