"""The supervisor never blocks, and tells a slow check from a broken tunnel.

In the NAT rig with a stock OpenSSH relay:

- eight busy sessions while every end-to-end check is made slow by a real slow hop on the
  check's own connection cause no reconnect, and the sessions complete;
- a child that dies while a check is still running is restarted at once, before that check
  ends (the check's verdict, about a tunnel that is gone, is ignored);
- a replaced runtime (the relay still holds the old VM's listener) makes `up` wait, say what
  it waits for, and take the port once the relay lets go; with too short a timeout it fails
  naming the relay's keepalives as the fix.

The frozen tunnel that must still be caught is test_recovery.py's
test_frozen_tunnel_found_by_health_check.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import REMOTE_PORT, Runtime
from tests.e2e.test_recovery import _tunnel_sport, status
from tests.rig import RELAY_IP, RUNTIME_IP, wait_until

# Longer than the supervisor's HEALTH_TIMEOUT (8 s): every check through the relay's port
# times out while it is in place.
CHECK_DELAY_S = 12


def logs(rt: Runtime, n: int = 2000) -> str:
    out: str = rt.rig.handy("rt", "logs", "-n", str(n)).stdout
    return out


def log_mark() -> str:
    """Now, as the supervisor's log lines start (to the second; taken a second early)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() - 1))


def logs_since(rt: Runtime, mark: str) -> str:
    """The log's lines from ``mark`` on. By time, not by line count: the tunnel's ssh -v lines
    make the log longer than any tail, and the file rotates at 1 MB."""
    folder = rt.rig.state_dir / "colab"
    lines = []
    for name in ("supervisor.log.2", "supervisor.log.1", "supervisor.log"):
        if (folder / name).exists():
            lines += (folder / name).read_text(errors="replace").splitlines()
    start = next((i for i, ln in enumerate(lines) if ln[:19] >= mark), len(lines))
    return "\n".join(lines[start:])


# A slow middlebox: holds each connection silent for `delay` seconds, then closes it.
_SLOW_HOP = """
import socket, sys, threading, time
lst = socket.socket()
lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
lst.bind(("0.0.0.0", int(sys.argv[1])))
lst.listen(64)
print("ready", flush=True)
def hold(conn):
    time.sleep(float(sys.argv[2]))
    conn.close()
while True:
    conn, _ = lst.accept()
    threading.Thread(target=hold, args=(conn,), daemon=True).start()
"""
SLOW_HOP_PORT = 2399


@contextlib.contextmanager
def slow_checks(rt: Runtime) -> Iterator[None]:
    """Route only the runtime's own connections to the relay's forwarded port (the public
    check's) through a hop that answers nothing for CHECK_DELAY_S. The tunnel's connection to
    the relay's port 22 and the laptop's sessions are untouched. (This kernel has no
    netem/prio qdisc, so the delay is a real slow hop rather than tc.)"""
    hop = rt.rig.popen(
        "rt",
        ["python3", "-c", _SLOW_HOP, str(SLOW_HOP_PORT), str(CHECK_DELAY_S)],
        stdout=subprocess.PIPE,
        text=True,
    )
    rule = ["OUTPUT", "-p", "tcp", "-d", RELAY_IP, "--dport", str(REMOTE_PORT), "-j", "DNAT"]
    rule += ["--to-destination", f"{RUNTIME_IP}:{SLOW_HOP_PORT}"]
    try:
        assert hop.stdout is not None and hop.stdout.readline().strip() == "ready"
        rt.rig.run("rt", ["iptables", "-t", "nat", "-I", *rule], check=True)
        yield
    finally:
        rt.rig.run("rt", ["iptables", "-t", "nat", "-D", *rule])
        hop.kill()
        hop.wait()


def test_busy_sessions_and_slow_checks_cause_no_reconnect(runtime: Runtime) -> None:
    rt = runtime
    if rt.mode != "public":
        pytest.skip(
            "private mode's check rides the tunnel's own connection: no delay can slow it "
            "alone without slowing the sessions too"
        )
    before = status(rt)["tunnel"]
    mark = log_mark()
    streams = 8
    # Long enough for at least two checks at the 10 s cadence (each then takes its 8 s
    # timeout): two counted failures in a row would force a reconnect.
    seconds = 45
    results: list[Any] = [None] * streams

    def one(i: int) -> None:
        # Data flows the whole time: the laptop counts what it got.
        cmd = f"{' '.join(rt.ssh_base())} colab 'timeout {seconds} cat /dev/zero; true' | wc -c"
        results[i] = rt.rig.run("laptop", ["bash", "-o", "pipefail", "-c", cmd], timeout=120)

    with slow_checks(rt):
        threads = [threading.Thread(target=one, args=(i,)) for i in range(streams)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for res in results:
        assert res.returncode == 0, res.stderr
        assert int(res.stdout.split()[0]) > 1024 * 1024, res.stdout
    new = logs_since(rt, mark)
    # The checks really were slow (timed out) during the load, and none of them counted.
    busy = re.findall(r"check #\d+ timed out, but the tunnel read (\d+) KiB", new)
    assert len(busy) >= 2, new
    after = status(rt)["tunnel"]
    assert after["reconnects"] == before["reconnects"], new
    assert after["state"] == "up" and not after.get("checks_failed"), after
    assert "end-to-end check" not in str(after.get("last_error") or ""), after
    assert rt.ssh("true").returncode == 0


def _check_running(rt: Runtime) -> bool:
    return bool(status(rt)["tunnel"].get("check_running_since"))


def test_child_death_during_a_check_is_acted_on_at_once(runtime: Runtime) -> None:
    """The tunnel's ssh is frozen, so the check hangs (until its 8 s timeout); meanwhile the
    runtime's sshd and then the frozen ssh are killed: both come back before that check ends."""
    rt = runtime
    st = status(rt)
    before_server, before_tunnel = st["server"], st["tunnel"]
    mark = log_mark()
    os.kill(before_tunnel["pid"], signal.SIGSTOP)
    try:
        assert wait_until(lambda: _check_running(rt), 30, interval=0.2), status(rt)
        started = status(rt)["tunnel"]["check_running_since"]
        os.kill(before_server["pid"], signal.SIGKILL)
        # Restarted while that same check is still running.
        assert wait_until(
            lambda: status(rt)["server"]["restarts"] > before_server["restarts"], 10, 0.1
        ), status(rt)
        assert status(rt)["tunnel"]["check_running_since"] == started, status(rt)
        os.kill(before_tunnel["pid"], signal.SIGKILL)
        assert wait_until(
            lambda: status(rt)["tunnel"]["reconnects"] > before_tunnel["reconnects"], 30, 0.1
        ), status(rt)
    finally:
        with contextlib.suppress(ProcessLookupError):  # SIGKILL ends a stopped process too
            os.kill(before_tunnel["pid"], signal.SIGKILL)
    assert wait_until(lambda: not _check_running(rt), 30), status(rt)
    new = logs_since(rt, mark)
    reopened = re.search(r"^(\S+ \S+) INFO \S+: tunnel re-opened", new, re.M)
    ignored = re.search(r"end-to-end check #\d+ ignored: the tunnel was restarted", new)
    assert reopened is not None and ignored is not None, new
    # Re-opened before that check's own timeout (HEALTH_TIMEOUT 8 s) could have ended it,
    # and the check's verdict, about the dead tunnel, was dropped.
    at = time.mktime(time.strptime(reopened.group(1).split(",")[0], "%Y-%m-%d %H:%M:%S"))
    assert at < started + 8, (at, started, new)
    assert reopened.start() < ignored.start(), new
    # The dead tunnel's check never counted as a failure.
    assert "end-to-end check failed" not in new, new
    assert wait_until(lambda: status(rt)["healthy"], 20), status(rt)
    assert rt.ssh("true").returncode == 0


def _vanish(rt: Runtime) -> tuple[list[list[str]], int]:
    """The runtime's VM is recycled: its processes die and the relay hears nothing (no FIN,
    no RST), so it keeps the old tunnel's listener until its own keepalive gives up."""
    st = status(rt)
    sport = _tunnel_sport(rt, st["tunnel"]["pid"])
    rules = [["OUTPUT", "--sport"], ["INPUT", "--dport"]]
    for chain, opt in rules:
        rt.rig.run(
            "rt", ["iptables", "-I", chain, "-p", "tcp", opt, str(sport), "-j", "DROP"], check=True
        )
    os.killpg(int(st["pgid"]), signal.SIGKILL)
    assert wait_until(lambda: rt.rig.handy("rt", "status").returncode != 0, 10)
    return [["iptables", "-D", chain, "-p", "tcp", opt, str(sport), "-j", "DROP"]
            for chain, opt in rules], sport  # fmt: skip


def test_replaced_runtime_up_waits_for_the_relay(runtime: Runtime) -> None:
    rt = runtime
    cleanup, sport = _vanish(rt)
    try:
        if rt.mode == "private":
            # The socket is replaced at once (StreamLocalBindUnlink): nothing to wait for.
            res = rt.up()
            assert res.returncode == 0, res.stderr
            assert "waiting for the relay" not in res.stdout + res.stderr
            assert rt.ssh("true").returncode == 0

            # The relay's sshd still serves the vanished runtime's session until its
            # keepalives give up (30 s in the rig): the rig's teardown must not find it. (The
            # socket itself may linger, owned by no process, while TCP retries its FIN.)
            def held() -> bool:
                out = rt.rig.run("relay", ["ss", "-tnp"]).stdout
                return any(f":{sport} " in ln and "users:" in ln for ln in out.splitlines())

            assert wait_until(lambda: not held(), 90)
            return
        # Too short a timeout: fails, naming what holds the port and the keepalive fix.
        res = rt.rig.handy("rt", "up", str(rt.folder), "--timeout", "15", timeout=60)
        assert res.returncode != 0
        assert f"refused to listen on port {REMOTE_PORT} throughout" in res.stderr, res.stderr
        assert "relay-setup" in res.stderr and "ClientAliveInterval" in res.stderr, res.stderr
        assert "waiting for the relay to release port" in res.stdout, res.stdout

        # Long enough: waits (and says so in status), then takes the port. Nothing here
        # connects to the relay's port until then: that would keep the stale listener alive.
        out: dict[str, Any] = {}
        t = threading.Thread(
            target=lambda: out.update(
                res=rt.rig.handy("rt", "up", str(rt.folder), "--timeout", "150", timeout=200)
            )
        )
        t.start()
        seen: list[str] = []

        def waiting() -> bool:
            st = json.loads(rt.rig.handy("rt", "status", "colab", "--json").stdout or "{}")
            tun = st.get("tunnel") or {}
            if tun.get("state") == "waiting":
                seen.append(str(tun.get("last_error")))
            return bool(seen)

        assert wait_until(waiting, 30, interval=0.5)
        assert f"waiting for the relay to release port {REMOTE_PORT}" in seen[0], seen
        t.join(200)
        res = out["res"]
        assert res.returncode == 0, res.stderr
        assert f"waiting for the relay to release port {REMOTE_PORT}" in res.stdout
        st = status(rt)
        assert st["healthy"] and st["tunnel"]["endpoint"].endswith(f":{REMOTE_PORT}"), st
        assert rt.ssh("true").returncode == 0
        assert "relay let go of port" in logs(rt)
    finally:
        for argv in cleanup:
            rt.rig.run("rt", argv)
