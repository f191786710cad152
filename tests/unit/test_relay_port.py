"""Relay-allocated ports (``remote_port: 0``): parsing the clients' lines, the config, the
sticky-port policy of RelayTunnel driven through a real child process, and relay-setup's
``--remote-port 0`` checked with the real sshd."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from handy_colab import relay_setup as rs
from handy_colab.config import RuntimeConfig, load_config
from handy_colab.connection import build_descriptor, write_descriptor
from handy_colab.errors import ConfigError, TunnelError
from handy_colab.tunnels import relayport
from handy_colab.tunnels.common import free_port
from handy_colab.tunnels.relayport import (
    RelayTunnel,
    allocated_port,
    previous_port,
    refused_port,
    with_remote_port,
)
from tests.unit.conftest import SEED_CONFIG, KeyStore, write_config
from tests.unit.test_relay_setup import SSHD, _sshd_tree

# What OpenSSH 9.2's `ssh -v -N -R 0:127.0.0.1:22` printed against a stock sshd (recorded).
OPENSSH_PORT0 = """\
debug1: Remote connections from LOCALHOST:0 forwarded to local address 127.0.0.1:22
debug1: ssh_init_forwarding: expecting replies for 1 forwards
debug1: Remote: Forwarding listen address "localhost" overridden by server GatewayPorts
debug1: remote forward success for: listen 0, connect 127.0.0.1:22
Allocated port 35527 for remote forward to 127.0.0.1:22
debug1: Updating allowed port 35527 for forwarding to host 127.0.0.1 port 22
debug1: forwarding_success: all expected forwarding replies received""".splitlines()
OPENSSH_REFUSED0 = """\
debug1: Remote: port forwarding refused
debug1: remote forward failure for: listen 0, connect 127.0.0.1:22
debug1: Removing allowed port -1 for forwarding to host 127.0.0.1 port 22
Error: remote port forwarding failed for listen port 0""".splitlines()


# -- the clients' lines ----------------------------------------------------------------------
def test_allocated_port_from_openssh_and_embedded_lines() -> None:
    assert allocated_port(OPENSSH_PORT0) == 35527
    embedded = [
        "Authenticated to 10.99.0.1 port 22 as hcrelay using publickey.",
        "Allocated port 40001 for remote forward to 127.0.0.1:40123",
        "remote forward success for: listen port 40001, connect 127.0.0.1:40123",
    ]
    assert allocated_port(embedded) == 40001
    # The last allocation wins; debug chatter and impossible ports do not count.
    assert allocated_port([*OPENSSH_PORT0, "Allocated port 36000 for remote forward to x:1"]) == (
        36000
    )
    assert allocated_port(["debug1: Updating allowed port 35527 for forwarding"]) is None
    assert allocated_port(["Allocated port 70000 for remote forward to 127.0.0.1:22"]) is None
    assert allocated_port(["Allocated port 0 for remote forward to 127.0.0.1:22"]) is None
    assert allocated_port([]) is None


def test_refused_port_reads_only_the_error_line() -> None:
    assert refused_port(OPENSSH_REFUSED0) == 0
    assert refused_port(["Error: remote port forwarding failed for listen port 35527"]) == 35527
    assert refused_port(OPENSSH_PORT0) is None
    assert refused_port(["debug1: remote port forwarding failed for listen port 9"]) is None


# -- the config ------------------------------------------------------------------------------
def _relay_folder(tmp_path: Path, keys: KeyStore, relay: dict[str, Any], **top: Any) -> Path:
    folder = tmp_path / "cfg"
    folder.mkdir()
    keys.copy_private("ed25519", folder / "relay_key")
    keys.copy_public("laptop", folder)
    write_config(folder, {"relay": {"host": "relay.example.org", "user": "alice", **relay}, **top})
    return folder


@pytest.mark.parametrize("value", [0, "0", " 0 "])
def test_remote_port_zero_is_accepted(tmp_path: Path, keys: KeyStore, value: Any) -> None:
    cfg = load_config(_relay_folder(tmp_path, keys, {"remote_port": value}))
    assert cfg.mode == "public" and cfg.relay is not None and cfg.relay.remote_port == 0


def test_relay_remote_port_zero_wins_over_the_seeds_port(seed_folder: Path) -> None:
    write_config(seed_folder, {**SEED_CONFIG, "relay": {"remote_port": 0}})
    cfg = load_config(seed_folder)
    assert cfg.relay is not None
    assert (cfg.relay.host, cfg.relay.remote_port) == ("user-12345.portmap.host", 0)


@pytest.mark.parametrize(
    ("data", "needles"),
    [
        (
            {"relay": {"remote_port": -1}},
            ["'relay.remote_port'", "0-65535", "-1", "Fix:"],
        ),
        (
            {"relay": {"remote_port": 65536}},
            ["'relay.remote_port'", "0-65535", "Fix:"],
        ),
        # The seed's service_port is also frps's port in its frp reading: never 0.
        (
            {"tunnel_options": {**SEED_CONFIG["tunnel_options"], "service_port": 0}},
            ["'tunnel_options.service_port'", "1-65535", "Fix:"],
        ),
    ],
)
def test_bad_remote_ports_are_one_line(
    seed_folder: Path, data: dict[str, Any], needles: list[str]
) -> None:
    write_config(seed_folder, {**SEED_CONFIG, **data})
    with pytest.raises(ConfigError) as err:
        load_config(seed_folder)
    msg = str(err.value)
    assert "\n" not in msg and str(seed_folder / "user_config.json") in msg
    for needle in needles:
        assert needle in msg, msg


# -- the previous port (the descriptor in the folder) ----------------------------------------
@pytest.fixture
def cfg0(tmp_path: Path, keys: KeyStore) -> RuntimeConfig:
    return load_config(_relay_folder(tmp_path, keys, {"remote_port": 0, "host": "127.0.0.1"}))


def _publish(cfg: RuntimeConfig, keys: KeyStore, port: int) -> Path:
    desc = build_descriptor(with_remote_port(cfg, port), keys.public_line("ed25519_b"))
    assert desc.remote_port == port
    return write_descriptor(cfg, desc)


def test_previous_port_comes_from_this_relays_descriptor(
    cfg0: RuntimeConfig, keys: KeyStore
) -> None:
    assert previous_port(cfg0) is None  # never published
    path = _publish(cfg0, keys, 41234)
    assert previous_port(cfg0) == 41234
    # Another relay (host moved) or a damaged descriptor: no previous port.
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "relay_host": "other.example.org"}))
    assert previous_port(cfg0) is None
    path.write_text("{not json")
    assert previous_port(cfg0) is None
    path.write_text(json.dumps({**data, "remote_port": 0}))  # refused by validation
    assert previous_port(cfg0) is None


# -- the sticky-port policy, through a real child process ------------------------------------
_CHILD = """
import sys, time
asked, taken, alloc, local = (int(a) if a.isdigit() else a for a in sys.argv[1:5])
taken = {int(p) for p in str(taken).split(",") if p}
if asked in taken:
    print(f"Error: remote port forwarding failed for listen port {asked}", flush=True)
    sys.exit(255)
# OpenSSH's order: the success line first, the allocated port after it.
print(f"debug1: remote forward success for: listen {asked}, connect 127.0.0.1:{local}", flush=True)
if asked == 0:
    print(f"Allocated port {alloc} for remote forward to 127.0.0.1:{local}", flush=True)
time.sleep(60)
"""


class ScriptedRelay(RelayTunnel):
    """A RelayTunnel whose child plays the relay's answers in ssh's words (a real process,
    read by the real WatchedProcess): ``taken`` ports are refused, port 0 gets ``alloc``."""

    kind = "scripted"
    program = "python3"
    ready = re.compile(r"remote forward success for: listen")
    fail = re.compile(r"remote port forwarding failed")

    def __init__(self, cfg: RuntimeConfig, taken: set[int], alloc: int) -> None:
        super().__init__(cfg, 22)
        self.taken = taken
        self.alloc = alloc
        self.asked: list[int] = []

    def argv(self) -> list[str]:
        port = self.cfg.ssh_relay.remote_port
        self.asked.append(port)
        taken = ",".join(str(p) for p in sorted(self.taken))
        return [sys.executable, "-c", _CHILD, str(port), taken, str(self.alloc), "22"]

    def forward_desc(self) -> str:
        return str(self.cfg.ssh_relay.remote_port)

    def check(self, timeout: float) -> None:
        pass


@pytest.fixture
def tunnels() -> Iterator[list[ScriptedRelay]]:
    made: list[ScriptedRelay] = []
    yield made
    for t in made:
        t.stop()


def test_port_zero_takes_the_allocated_port_then_sticks(
    cfg0: RuntimeConfig, keys: KeyStore, tunnels: list[ScriptedRelay]
) -> None:
    t = ScriptedRelay(cfg0, set(), alloc=free_port())
    tunnels.append(t)
    t.start(10)
    assert t.asked == [0]
    assert t.cfg.ssh_relay.remote_port == t.alloc and t.endpoint == f"127.0.0.1:{t.alloc}"
    assert t.details() == {"remote_port": t.alloc, "allocated_by": "relay"}
    assert build_descriptor(t.cfg, keys.public_line("ed25519_b")).remote_port == t.alloc
    t.stop()
    t.start(10)  # a reconnect asks for the same port
    assert t.asked == [0, t.alloc] and t.cfg.ssh_relay.remote_port == t.alloc
    assert t.configured.ssh_relay.remote_port == 0


def test_refused_port_is_asked_again_until_the_grace_ends(
    cfg0: RuntimeConfig, tunnels: list[ScriptedRelay], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = free_port(), free_port()
    t = ScriptedRelay(cfg0, set(), alloc=first)
    tunnels.append(t)
    t.start(10)
    t.stop()
    t.taken.add(first)
    t.alloc = second
    monkeypatch.setattr(relayport, "STICKY_GRACE", 0.5)
    with pytest.raises(TunnelError) as err:
        t.start(10)
    msg = str(err.value)
    assert f"port {first} is not ours for now" in msg and "Fix:" in msg and "\n" not in msg
    assert t.cfg.ssh_relay.remote_port == first  # still the port to ask for
    threading.Event().wait(0.6)
    t.start(10)  # grace over: the same port once more, then any port
    assert t.asked == [0, first, first, 0]
    assert t.cfg.ssh_relay.remote_port == second


def test_first_start_does_not_wait_for_a_previous_runs_port(
    cfg0: RuntimeConfig, keys: KeyStore, tunnels: list[ScriptedRelay]
) -> None:
    old, new = free_port(), free_port()
    _publish(cfg0, keys, old)
    t = ScriptedRelay(cfg0, {old}, alloc=new)
    tunnels.append(t)
    assert t.cfg.ssh_relay.remote_port == old  # asked first
    t.start(10)
    assert t.asked == [old, 0] and t.cfg.ssh_relay.remote_port == new


def test_previous_port_granted_is_kept(
    cfg0: RuntimeConfig, keys: KeyStore, tunnels: list[ScriptedRelay]
) -> None:
    old = free_port()
    _publish(cfg0, keys, old)
    t = ScriptedRelay(cfg0, set(), alloc=free_port())
    tunnels.append(t)
    t.start(10)
    assert t.asked == [old] and t.cfg.ssh_relay.remote_port == old


def test_granted_port_that_another_program_answers_counts_as_refused(
    cfg0: RuntimeConfig, keys: KeyStore, tunnels: list[ScriptedRelay]
) -> None:
    """sshd grants [::]:PORT while a program holds 0.0.0.0:PORT: IPv4 clients reach it."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        old = other.getsockname()[1]

        def serve() -> None:
            with contextlib.suppress(OSError):
                conn, _ = other.accept()
                conn.sendall(b"HTTP/1.0 200 OK\r\n")
                conn.close()

        threading.Thread(target=serve, daemon=True).start()
        _publish(cfg0, keys, old)
        new = free_port()
        t = ScriptedRelay(cfg0, set(), alloc=new)
        tunnels.append(t)
        t.start(10)
    assert t.asked == [old, 0] and t.cfg.ssh_relay.remote_port == new


def test_relay_refusing_port_zero_says_how_to_allow_it(
    cfg0: RuntimeConfig, tunnels: list[ScriptedRelay]
) -> None:
    t = ScriptedRelay(cfg0, {0}, alloc=1)
    tunnels.append(t)
    with pytest.raises(TunnelError) as err:
        t.start(10)
    msg = str(err.value)
    assert "refused to allocate a port for alice" in msg and "\n" not in msg
    assert 'permitlisten="*"' in msg and "relay-setup --remote-port 0" in msg
    assert "Fix:" in msg


def test_fixed_port_first_start_waits_until_the_relay_lets_go(
    tmp_path: Path, keys: KeyStore
) -> None:
    """`up` on a new VM while the relay still holds the old runtime's port: it says what it
    waits for, keeps asking (ssh -R only, nothing connects to the port) and takes it."""
    cfg = load_config(_relay_folder(tmp_path, keys, {"remote_port": 2222}))
    t = ScriptedRelay(cfg, {2222}, alloc=1)
    said: list[str] = []

    def on_wait(why: str) -> None:
        said.append(why)
        if len(said) == 2:
            t.taken.clear()  # the relay's keepalive dropped the old session

    t.on_wait = on_wait
    try:
        assert not t.allocating and t.details() == {}
        t.start(20)
        assert t.alive() and t.asked == [2222, 2222, 2222]
        assert "waiting for the relay to release port 2222" in said[0]
        assert "previous runtime" in said[0] and said[-1] == ""
        # Later starts are the supervisor's reconnects: refused at once, it retries itself.
        t.taken.add(2222)
        with pytest.raises(TunnelError) as err:
            t.start(20)
        assert "refused to listen on port 2222" in str(err.value)
        assert t.asked == [2222] * 4
    finally:
        t.stop()


def test_fixed_port_wait_ends_with_the_keepalive_fix(tmp_path: Path, keys: KeyStore) -> None:
    cfg = load_config(_relay_folder(tmp_path, keys, {"remote_port": 2222}))
    t = ScriptedRelay(cfg, {2222}, alloc=1)
    try:
        with pytest.raises(TunnelError) as err:
            t.start(3)
        msg = str(err.value)
        assert "\n" not in msg and "refused to listen on port 2222 throughout the 3s" in msg
        assert "relay-setup" in msg and "ClientAliveInterval" in msg and "Fix:" in msg
        assert len(t.asked) >= 2 and not t.alive()
    finally:
        t.stop()


# -- relay-setup --remote-port 0 -------------------------------------------------------------
def test_relay_setup_port_zero_plan(keys: KeyStore) -> None:
    plan = rs.make_plan(keys.public_line("ed25519"), account="hct", remote_port=0)
    assert plan.authorized_keys[0].startswith('restrict,port-forwarding,permitlisten="*" ')
    got = {s.keyword: s.value for s in plan.settings}
    assert got["PermitListen"] == "*" and got["GatewayPorts"] == "yes"
    assert got["AllowTcpForwarding"] == "remote" and got["PermitOpen"] == "none"
    text = rs.render(plan)
    assert "a port the relay allocates for each runtime" in text
    assert '"remote_port": 0' in text and "ip_local_port_range" in text
    assert "One runtime per account" not in text
    with pytest.raises(ConfigError) as err:
        rs.make_plan(keys.public_line("ed25519"), remote_port=80)
    assert "or 0 (the relay picks one)" in str(err.value)


@pytest.mark.skipif(not Path(SSHD).exists() or shutil.which("ssh-keygen") is None, reason="sshd")
def test_relay_setup_port_zero_is_what_sshd_applies(keys: KeyStore, tmp_path: Path) -> None:
    plan = rs.make_plan(keys.public_line("ed25519"), account="hct", remote_port=0)
    main = _sshd_tree(tmp_path, plan)
    Path("/run/sshd").mkdir(exist_ok=True)
    values = rs.effective(SSHD, main, "hct")
    assert values["permitlisten"] == "*:*"
    for s in plan.settings:
        assert f"{s.keyword.lower()} {values[s.keyword.lower()]}" == s.effective
    assert rs.effective(SSHD, main, "someone")["permitlisten"] == "any"
