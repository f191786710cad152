"""`up` fails fast with the reason, and leaves nothing running, when the relay says no."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from typing import Any

from tests.e2e.conftest import REMOTE_PORT, Runtime
from tests.rig import RELAY_IP, keygen


def assert_failed_cleanly(rt: Runtime, res: Any, *needles: str) -> None:
    assert res.returncode != 0
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1, err  # one line, no traceback
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    assert "Fix:" in err
    assert rt.rig.ns_pids("rt") == [], "up left processes behind"
    st = rt.rig.handy("rt", "status")
    assert st.returncode != 0


def test_relay_refuses_key(fresh: Any) -> None:
    rt = fresh("public")
    rt.rig.start_relay([rt.laptop_key])  # the runtime's relay key is not authorized
    res = rt.up()
    assert_failed_cleanly(rt, res, "refused the key", "hcrelay.first.pem", "authorized_keys")


def test_remote_port_taken(fresh: Any) -> None:
    rt = fresh("public")
    # Only IPv4 is held: the relay still binds [::]:PORT and says yes, so only the
    # end-to-end banner check can notice that clients would reach the wrong program.
    code = (
        f"import socket,time\ns=socket.socket()\ns.bind(('0.0.0.0',{REMOTE_PORT}))\n"
        "s.listen()\ntime.sleep(120)"
    )
    holder = rt.rig.popen("relay", ["python3", "-c", code])
    rt.rig.wait_tcp("relay", RELAY_IP, REMOTE_PORT)
    res = rt.up()
    assert_failed_cleanly(rt, res, f"port {REMOTE_PORT}", "taken", "remote_port")
    holder.kill()


def test_private_socket_refused_by_relay(fresh: Any) -> None:
    rt = fresh("private")
    cfg = json.loads((rt.folder / "user_config.json").read_text())
    cfg["relay"]["socket_path"] = "/root/not-writable-for-hcrelay.sock"
    (rt.folder / "user_config.json").write_text(json.dumps(cfg))
    res = rt.up()
    assert_failed_cleanly(rt, res, "refused to create the socket", "StreamLocalBindUnlink")


def test_relay_unreachable_refused(fresh: Any) -> None:
    rt = fresh("public")
    rt.rig.stop_relay()
    start = time.monotonic()
    res = rt.up()
    assert time.monotonic() - start < 30
    assert_failed_cleanly(rt, res, "unreachable", "connection refused")


def test_relay_unreachable_blackholed(fresh: Any) -> None:
    rt = fresh("public")
    rt.rig.run("router", ["iptables", "-I", "FORWARD", "-d", RELAY_IP, "-j", "DROP"], check=True)
    res = rt.up()
    assert_failed_cleanly(rt, res, "unreachable", "timed out")


def test_pinned_relay_host_key_mismatch(fresh: Any) -> None:
    rt = fresh("private")
    other = keygen(rt.folder.parent / "otherhostkey")
    cfg = json.loads((rt.folder / "user_config.json").read_text())
    cfg["relay"]["host_key"] = " ".join(other.with_suffix(".pub").read_text().split()[:2])
    (rt.folder / "user_config.json").write_text(json.dumps(cfg))
    res = rt.up()
    assert_failed_cleanly(rt, res, "does not match", "relay.host_key")


def test_relay_host_key_recorded_on_first_use_then_pinned(fresh: Any) -> None:
    rt = fresh("public")  # seed format: no host_key in the config
    res = rt.up()
    assert res.returncode == 0, res.stderr
    recorded = (rt.folder / "relay_known_hosts").read_text()
    assert rt.relay_host_key in recorded
    assert rt.rig.handy("rt", "down").returncode == 0
    # The relay is "reinstalled" with a new host key: refuse, and do not re-pin silently.
    hostkey = rt.rig.work / "relay" / "ssh_host_ed25519_key"
    hostkey.unlink()
    hostkey.with_suffix(".pub").unlink()
    rt.rig.start_relay([rt.relay_key, rt.laptop_key])
    res = rt.up()
    assert_failed_cleanly(rt, res, "does not match", "relay_known_hosts")
    assert (rt.folder / "relay_known_hosts").read_text() == recorded


def test_seed_python_api(fresh: Any) -> None:
    rt = fresh("public")
    code = (
        "from handy_colab import start_tunnel\n"
        f"block = start_tunnel({str(rt.folder)!r})\n"
        "assert 'Host colab' in block\n"
    )
    res = rt.rig.run("rt", ["python3", "-c", code], timeout=90)
    assert res.returncode == 0, res.stderr
    assert "handy-colab connect" in res.stdout
    # The supervisor outlived the Python process that started it (as it outlives a cell).
    assert rt.connect().returncode == 0
    assert rt.ssh("echo alive").stdout == "alive\n"


def test_foreground_stops_on_interrupt(fresh: Any) -> None:
    rt = fresh("public")
    proc = rt.rig.popen(
        "rt",
        ["handy-colab", "up", str(rt.folder), "--foreground"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = ""
    deadline = time.monotonic() + 40
    while "Ctrl-C" not in line and time.monotonic() < deadline:
        line = proc.stdout.readline()
    assert "Ctrl-C" in line
    assert rt.connect().returncode == 0
    assert rt.ssh("true").returncode == 0
    proc.send_signal(signal.SIGINT)
    assert proc.wait(20) == 0
    time.sleep(0.2)
    assert rt.rig.ns_pids("rt") == []


def test_connect_default_paths_include_user_config(fresh: Any, tmp_path: Any) -> None:
    rt = fresh("public", start=True)
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    user_cfg = home / ".ssh" / "config"
    original = "Host other\n    HostName example.invalid\n"
    user_cfg.write_text(original)
    env = dict(rt.rig.env(), HOME=str(home))
    res = rt.rig.run(
        "laptop",
        ["handy-colab", "connect", str(rt.folder), "--identity", str(rt.laptop_key)],
        env=env,
    )
    assert res.returncode == 0, res.stderr
    text = user_cfg.read_text()
    assert text.startswith("Include ")
    assert text.endswith(original)
    # ssh resolves "~" from the password database, so point -F at the fake home's config.
    res = rt.rig.run(
        "laptop", ["ssh", "-F", str(user_cfg), "-o", "BatchMode=yes", "colab", "echo via-include"]
    )
    assert res.stdout == "via-include\n", res.stderr


def test_lasting_failure_is_reported_not_hammered(fresh: Any) -> None:
    """After a drop, a refused key is retried once a minute, with the reason in status."""
    rt = fresh("public", start=True)
    st = json.loads(rt.rig.handy("rt", "status", "colab", "--json").stdout)
    rt.rig.start_relay([rt.laptop_key])  # the relay no longer accepts the runtime's key
    os.kill(st["tunnel"]["pid"], signal.SIGKILL)

    def tunnel() -> dict[str, Any]:
        data: dict[str, Any] = json.loads(rt.rig.handy("rt", "status", "colab", "--json").stdout)
        return data["tunnel"]

    deadline = time.monotonic() + 20
    while "refused the key" not in str(tunnel().get("last_error")):
        assert time.monotonic() < deadline, tunnel()
        time.sleep(0.2)
    time.sleep(8)
    res = rt.rig.handy("rt", "status")
    assert res.returncode != 0 and "refused the key" in res.stdout
    logs = rt.rig.handy("rt", "logs").stdout
    assert logs.count("reconnect failed (relay hcrelay@") == 1, logs
    # 60 s, counted from the start of the failed attempt.
    assert re.search(r"next try in (59|60)\.\ds", logs), logs
