"""The tunnel heals itself: each fault, in the NAT rig with a stock OpenSSH relay.

After every fault a *new* `ssh NAME` from the laptop must work and a transfer must check
out. Public mode depends on the relay letting go of a dead tunnel's TCP listener; private
mode (a Unix socket with StreamLocalBindUnlink) must not.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from tests.e2e.conftest import Runtime
from tests.rig import wait_until

# The rig relay runs ClientAliveInterval 10 / CountMax 3; measured here, it lets go of a dead
# session's listener ~75-80 s after the client vanished (shared/notes/sandbox-facts.md).
RELAY_LETS_GO = 80


def status(rt: Runtime) -> dict[str, Any]:
    res = rt.rig.handy("rt", "status", "colab", "--json")
    data: dict[str, Any] = json.loads(res.stdout)
    return data


def time_to_ssh(rt: Runtime, deadline: float) -> float:
    """Seconds until a new `ssh colab true` from the laptop succeeds (inf if never)."""
    start = time.monotonic()
    while time.monotonic() - start < deadline:
        res = rt.rig.run(
            "laptop", [*rt.ssh_base(), "-o", "ConnectTimeout=3", "colab", "true"], timeout=20
        )
        if res.returncode == 0:
            return time.monotonic() - start
        time.sleep(0.3)
    return float("inf")


def assert_transfer_ok(rt: Runtime, tmp_path: Path) -> None:
    src = tmp_path / f"payload-{time.monotonic_ns()}"
    src.write_bytes(os.urandom(2 * 1024 * 1024))
    dest = tmp_path / (src.name + ".remote")
    res = rt.rig.run(
        "laptop",
        ["scp", "-F", str(rt.ssh_config), "-o", "BatchMode=yes", "-q", str(src), f"colab:{dest}"],
    )
    assert res.returncode == 0, res.stderr
    out = rt.ssh(f"sha256sum {dest}").stdout.split()[0]
    assert out == hashlib.sha256(src.read_bytes()).hexdigest()


def reconnected(rt: Runtime, reconnects: int, deadline: float) -> float:
    """Wait for the supervisor to report a new tunnel, WITHOUT touching the relay's port.

    A connection to a dead tunnel's listener is activity for the relay's dead session, so
    probing it keeps the stale listener alive (shared/notes/sandbox-facts.md). A user who
    keeps retrying does the same; that is what private mode is for.
    """
    start = time.monotonic()
    ok = wait_until(
        lambda: status(rt)["tunnel"]["reconnects"] > reconnects and status(rt)["healthy"],
        deadline,
        interval=0.25,
    )
    assert ok, f"supervisor did not reconnect within {deadline}s: {status(rt)}"
    return time.monotonic() - start


def healed(rt: Runtime, tmp_path: Path, deadline: float) -> float:
    took = time_to_ssh(rt, deadline)
    assert took < deadline, f"no recovery within {deadline}s: {status(rt)}"
    assert wait_until(lambda: status(rt)["healthy"], 20), status(rt)
    assert_transfer_ok(rt, tmp_path)
    return took


def test_tunnel_client_sigkill(runtime: Runtime, tmp_path: Path) -> None:
    before = status(runtime)["tunnel"]
    os.kill(before["pid"], signal.SIGKILL)
    took = healed(runtime, tmp_path, 20)
    assert status(runtime)["tunnel"]["reconnects"] == before["reconnects"] + 1
    assert took < 10


def test_tunnel_client_exits_zero(runtime: Runtime, tmp_path: Path) -> None:
    # `ssh -N` exits with status 0 on SIGTERM: plain autossh gives up for good on that.
    before = status(runtime)["tunnel"]
    os.kill(before["pid"], signal.SIGTERM)
    healed(runtime, tmp_path, 20)
    assert status(runtime)["tunnel"]["reconnects"] == before["reconnects"] + 1


def test_runtime_sshd_killed(runtime: Runtime, tmp_path: Path) -> None:
    before = status(runtime)["server"]
    os.kill(before["pid"], signal.SIGKILL)
    assert wait_until(lambda: status(runtime)["server"]["restarts"] == before["restarts"] + 1, 20)
    after = status(runtime)["server"]
    assert after["pid"] != before["pid"] and after["port"] == before["port"]
    healed(runtime, tmp_path, 20)


def test_relay_sshd_restarts(runtime: Runtime, tmp_path: Path) -> None:
    runtime.rig.restart_relay(down_seconds=3)
    took = healed(runtime, tmp_path, 30)
    assert took < 15


def test_relay_down_for_seconds_is_asked_again_twice_a_second(
    runtime: Runtime, tmp_path: Path
) -> None:
    """For the first minute after a drop a failed attempt is retried within 0.5 s (not on the
    0.5-1-2-3-5 s back-off), so a relay that was down 8 s is back in use within ~1 s."""
    log = runtime.rig.state_dir / "colab" / "supervisor.log"
    offset = log.stat().st_size
    runtime.rig.restart_relay(down_seconds=8)
    healed(runtime, tmp_path, 30)
    text = log.read_text(errors="replace")[offset:]
    waits = [float(w) for w in re.findall(r"reconnect failed .*; next try in ([0-9.]+)s", text)]
    assert len(waits) >= 8, text[-2000:]
    assert max(waits) <= 0.5, waits


def _drop(runtime: Runtime, tmp_path: Path, seconds: float) -> float:
    reconnects = status(runtime)["tunnel"]["reconnects"]
    runtime.rig.block_runtime()
    try:
        time.sleep(seconds)
    finally:
        runtime.rig.unblock_runtime()
    took = reconnected(runtime, reconnects, 90)
    healed(runtime, tmp_path, 20)
    return took


def test_network_drop_20s(runtime: Runtime, tmp_path: Path) -> None:
    _drop(runtime, tmp_path, 20)


def test_network_drop_90s(runtime: Runtime, tmp_path: Path) -> None:
    _drop(runtime, tmp_path, 90)


def _tunnel_sport(rt: Runtime, pid: int) -> int:
    out = rt.rig.run("rt", ["ss", "-Htnp", "state", "established"]).stdout
    for line in out.splitlines():
        if f"pid={pid}," in line:
            return int(line.split()[2].rsplit(":", 1)[1])
    raise AssertionError(f"no TCP connection of pid {pid} in: {out}")


def _relay_sessions(rt: Runtime) -> set[str]:
    """The relay's established TCP connections, as "local peer" pairs."""
    out = rt.rig.run("relay", ["ss", "-Htn", "state", "established"]).stdout
    return {" ".join(line.split()[2:4]) for line in out.splitlines() if line.strip()}


def test_stale_listener_on_relay(runtime: Runtime, tmp_path: Path) -> None:
    """The runtime vanishes for the relay: no FIN or RST of the old tunnel ever arrives.

    The relay keeps the dead session (and its listener) until its ClientAlive gives up.
    Public mode must take the port the moment the relay lets go; private mode must not
    wait for the relay at all.
    """
    rt = runtime
    pid = status(rt)["tunnel"]["pid"]
    sport = _tunnel_sport(rt, pid)
    relay_before = _relay_sessions(rt)
    rules = [["OUTPUT", "--sport"], ["INPUT", "--dport"]]
    for chain, opt in rules:
        rt.rig.run(
            "rt", ["iptables", "-I", chain, "-p", "tcp", opt, str(sport), "-j", "DROP"], check=True
        )
    try:
        reconnects = status(rt)["tunnel"]["reconnects"]
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        took = reconnected(rt, reconnects, 120)
        healed(rt, tmp_path, 20)
        if rt.mode == "private":
            # Long before the relay could have dropped the old session: not waited for.
            assert took < 15, took
        else:
            logs = rt.rig.handy("rt", "logs", "-n", "1000").stdout
            tries = len(
                re.findall(
                    r"reconnect failed \(relay \S+ refused to listen on port "
                    r"\d+: it is taken",
                    logs,
                )
            )
            # Retried all along with short pauses (<= 5 s back-off + the attempt itself), so
            # the port is taken within seconds of the relay letting go.
            assert tries >= (took - 15) / 7, (tries, took)
            assert took < RELAY_LETS_GO + 30, took
        assert time.monotonic() - killed < 150
    finally:
        for chain, opt in rules:
            rt.rig.run("rt", ["iptables", "-D", chain, "-p", "tcp", opt, str(sport), "-j", "DROP"])
        # Private mode ends long before the relay gives the dead session up; its next
        # keepalive now meets a RST (within ClientAliveInterval, 10 s). Waited for here so
        # the teardown does not find the relay's half of the old tunnel still running.
        wait_until(lambda: not relay_before & _relay_sessions(rt), 30, 0.5)


def test_frozen_tunnel_found_by_health_check(runtime: Runtime, tmp_path: Path) -> None:
    """A live but frozen ssh passes every "is the process there" test; the end-to-end check
    through the relay does not."""
    before = status(runtime)["tunnel"]
    os.kill(before["pid"], signal.SIGSTOP)
    assert wait_until(
        lambda: (
            status(runtime)["tunnel"]["reconnects"] > before["reconnects"]
            or "end-to-end check failed" in str(status(runtime)["tunnel"]["last_error"])
        ),
        60,
    )
    healed(runtime, tmp_path, 120)
    logs = runtime.rig.handy("rt", "logs", "-n", "400").stdout
    assert "end-to-end check" in logs and "failed" in logs
    # A check that timed out counts only because the frozen client read nothing meanwhile
    # (a busy one would have: test_supervisor_load.py).
    assert "moved no data meanwhile" in logs, logs


def test_concurrent_sessions_then_forced_reconnect(runtime: Runtime, tmp_path: Path) -> None:
    rt = runtime
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(8 * 1024 * 1024))
    digest = hashlib.sha256(big.read_bytes()).hexdigest()
    scp = ["scp", "-F", str(rt.ssh_config), "-o", "BatchMode=yes", "-q"]

    def jobs(tag: str) -> list[list[str]]:
        out = []
        for i in range(3):
            out.append([*scp, str(big), f"colab:{tmp_path}/up-{tag}-{i}.bin"])
        for _ in range(3):
            out.append([*rt.ssh_base(), "colab", f"cat {big}"])
        out += [[*rt.ssh_base(), "colab", "sleep 2; echo done"]] * 2
        return out

    def run_all(tag: str) -> list[subprocess.CompletedProcess[Any]]:
        results: list[Any] = [None] * 8

        def one(i: int, argv: list[str]) -> None:
            results[i] = rt.rig.run("laptop", argv, text=False, timeout=180)

        threads = [threading.Thread(target=one, args=(i, a)) for i, a in enumerate(jobs(tag))]
        for t in threads:
            t.start()
        # While 8 sessions and transfers run, a new session still gets in promptly.
        start = time.monotonic()
        probe = rt.rig.run("laptop", [*rt.ssh_base(), "colab", "echo probe"], timeout=60)
        assert probe.stdout == "probe\n", probe.stderr
        assert time.monotonic() - start < 30
        for t in threads:
            t.join()
        return results

    def check(results: list[subprocess.CompletedProcess[Any]], tag: str) -> None:
        for res in results:
            assert res.returncode == 0, res.stderr
        for i in range(3):
            remote = tmp_path / f"up-{tag}-{i}.bin"
            assert hashlib.sha256(remote.read_bytes()).hexdigest() == digest
        for res in results[3:6]:
            assert hashlib.sha256(res.stdout).hexdigest() == digest
        assert [r.stdout for r in results[6:]] == [b"done\n", b"done\n"]

    check(run_all("a"), "a")
    before = status(rt)["tunnel"]
    os.kill(before["pid"], signal.SIGKILL)
    assert wait_until(lambda: status(rt)["tunnel"]["reconnects"] > before["reconnects"], 30)
    # "At once": the first new session after the reconnect works, no warm-up needed.
    assert rt.ssh("true").returncode == 0
    check(run_all("b"), "b")


def test_down_after_supervisor_was_killed(runtime: Runtime) -> None:
    """Runs last: kills the supervisor itself; `down` must still leave nothing."""
    rt = runtime
    st = status(rt)
    os.kill(st["pid"], signal.SIGKILL)
    assert wait_until(lambda: rt.rig.handy("rt", "status").returncode != 0, 10)
    assert "dead" in rt.rig.handy("rt", "status").stdout
    # sshd and the tunnel outlived it (same process group): down must find them.
    assert rt.rig.ns_pids("rt")
    assert rt.rig.handy("rt", "down").returncode == 0
    assert rt.rig.ns_pids("rt") == []
    # And `up` after such a crash starts cleanly.
    assert rt.up().returncode == 0
    assert rt.ssh("true").returncode == 0
