"""The frp route's bad input and faults against a real frps: each a one-line error with the
fix and nothing left running; recovery from frpc killed, frps restarted, a silent drop and a
replaced runtime whose old proxy frps still holds."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.cfrig import make_ca_and_leaf, wait_for
from tests.e2e.cfhelpers import RouteRuntime, finish, one_line_error
from tests.e2e.test_frp import make_frp_runtime, need_frp
from tests.frprig import FRPS_BIN, FRPS_NAME


@pytest.fixture
def frp_fresh(tmp_path: Path) -> Any:
    made: list[RouteRuntime] = []

    def factory(mode: str = "public", **kw: Any) -> RouteRuntime:
        need_frp()
        rt = make_frp_runtime(tmp_path / f"r{len(made)}", mode, start=False, **kw)
        made.append(rt)
        return rt

    yield factory
    for rt in made:
        finish(rt)


def rewrite(rt: RouteRuntime, **frp: Any) -> None:
    path = rt.folder / "user_config.json"
    data = json.loads(path.read_text())
    data["frp"].update(frp)
    path.write_text(json.dumps(data))


def test_wrong_token(frp_fresh: Any) -> None:
    rt = frp_fresh()
    (rt.folder / "frp_token").write_text("not-the-token\n")
    started = time.monotonic()
    line = one_line_error(rt.up())
    assert "refused the token" in line and "not-the-token" not in line
    assert time.monotonic() - started < 20, "a refused token is not worth waiting for"
    rt.assert_nothing_runs()


def test_certificate_not_matching_the_pin(frp_fresh: Any, tmp_path: Path) -> None:
    rt = frp_fresh()
    other_ca, _, _ = make_ca_and_leaf(tmp_path / "other", [FRPS_NAME])
    (rt.folder / "frps_ca.pem").write_bytes(other_ca.read_bytes())
    line = one_line_error(rt.up())
    assert "certificate" in line and "pinned CA" in line
    rt.assert_nothing_runs()


@pytest.mark.parametrize(
    ("remote_port", "needle"), [(7001, "does not allow remote port 7001"), (6050, "is taken")]
)
def test_port_not_allowed_or_taken(frp_fresh: Any, remote_port: int, needle: str) -> None:
    rt = frp_fresh(remote_port=remote_port)
    if needle == "is taken":
        rt.rig.popen("relay", ["python3", "-m", "http.server", "6050", "--bind", "10.99.0.1"])
        rt.rig.wait_tcp("relay", "10.99.0.1", 6050)
    line = one_line_error(rt.up())
    assert needle in line, line
    rt.assert_nothing_runs()


def test_frps_unreachable(frp_fresh: Any) -> None:
    rt = frp_fresh(port=7999)
    line = one_line_error(rt.up())
    assert "is unreachable" in line and "connection refused" in line, line
    rt.assert_nothing_runs()


def test_seed_format_warns_unverified(frp_fresh: Any) -> None:
    """The seed's format has no pin: it still connects (token-less frps), with one warning."""
    rt = frp_fresh()
    assert rt.frps is not None
    rt.frps.stop()
    rt.frps.token = ""
    rt.frps.config.write_text(
        "\n".join(ln for ln in rt.frps.config.read_text().splitlines() if "auth.token" not in ln)
    )
    rt.frps.start()
    seed = {
        "tunnel_options": {"service_url": "10.99.0.1", "service_port": 7000, "local_port": 6033}
    }
    (rt.folder / "user_config.json").write_text(json.dumps(seed))
    res = rt.up("--route", "frp")
    assert res.returncode == 0, res.stderr
    assert "not verified" in res.stderr and res.stderr.count("\n") == 1, res.stderr
    assert rt.connect_to(rt.ssh_config, rt.known_hosts, str(rt.folder)).returncode == 0
    res = rt.ssh("echo seed-frp")
    assert (res.returncode, res.stdout) == (0, "seed-frp\n"), res.stderr
    assert "Port 6033" in rt.ssh_config.read_text()


def _pid(rt: RouteRuntime) -> int:
    _, st = rt.status()
    return int(st["tunnel"]["pid"])


def test_recovers_from_frpc_killed_and_frps_restart(frp_fresh: Any) -> None:
    rt = frp_fresh("private")
    assert rt.up().returncode == 0
    assert rt.connect_to(rt.ssh_config, rt.known_hosts, str(rt.folder)).returncode == 0
    os.kill(_pid(rt), signal.SIGKILL)
    t0 = time.monotonic()
    assert wait_for(lambda: rt.ssh("true", timeout=20).returncode == 0, 60), rt.status()
    healed_kill = time.monotonic() - t0
    rt.frps.stop()
    time.sleep(2)
    rt.frps.start()
    t0 = time.monotonic()
    assert wait_for(lambda: rt.ssh("true", timeout=20).returncode == 0, 60), rt.status()
    print(f"healed: frpc killed {healed_kill:.1f}s, frps restarted {time.monotonic() - t0:.1f}s")


def test_silent_drop_then_heals(frp_fresh: Any) -> None:
    rt = frp_fresh("public")
    assert rt.up().returncode == 0
    assert rt.connect_to(rt.ssh_config, rt.known_hosts, str(rt.folder)).returncode == 0
    rt.rig.block_runtime()
    time.sleep(20)
    rt.rig.unblock_runtime()
    t0 = time.monotonic()
    assert wait_for(lambda: rt.ssh("true", timeout=20).returncode == 0, 90), rt.status()
    print(f"healed {time.monotonic() - t0:.1f}s after a 20 s silent drop")


def test_frps_setup_output_runs_for_real(frp_fresh: Any, tmp_path: Path) -> None:
    """frps-setup's files, as written, run a real frps that a runtime reaches verified."""
    rt = frp_fresh()
    assert rt.frps is not None
    rt.frps.stop()
    out = tmp_path / "frps-setup"
    res = rt.handy(
        "relay",
        "frps-setup",
        "--server-name",
        "10.99.0.1",
        "--bind-port",
        "7000",
        "--out",
        str(out),
    )
    assert res.returncode == 0, res.stderr
    assert (out / "server.key").stat().st_mode & 0o077 == 0
    # --out writes no unit, so the output names none.
    assert ".service" not in res.stdout and "systemd" not in res.stdout
    assert "auth.token" not in res.stdout.split("Written:")[0].replace("auth.token and", "")
    rt.frps.config = out / "frps.toml"
    rt.frps.start()
    for name in ("frps_ca.pem", "frp_token"):
        (rt.folder / name).write_bytes((out / "runtime" / name).read_bytes())
    section = json.loads((out / "runtime" / "user_config.frp.json").read_text())
    (rt.folder / "user_config.json").write_text(json.dumps(section))
    res = rt.up()
    assert res.returncode == 0, res.stderr
    assert "not verified" not in res.stderr
    assert rt.connect_to(rt.ssh_config, rt.known_hosts, str(rt.folder)).returncode == 0
    res = rt.ssh("echo via-frps-setup")
    assert (res.returncode, res.stdout) == (0, "via-frps-setup\n"), res.stderr


@pytest.mark.parametrize("keepalive", [None, 5])
def test_replaced_runtime_takes_its_proxy_back(frp_fresh: Any, keepalive: int | None) -> None:
    """A notebook VM recycled: the old runtime vanishes without a word while frps still holds
    its proxy; `up` on the new one waits for frps to let go (frp's default keepalive, then
    frps-setup's 5 s) and takes the proxy back."""
    rt = frp_fresh()
    assert rt.frps is not None
    if keepalive:
        rt.frps.stop()
        with open(rt.frps.config, "a") as fh:
            fh.write(f"transport.tcpMuxKeepaliveInterval = {keepalive}\n")
        rt.frps.start()
    assert rt.up().returncode == 0
    # The old VM stops answering, everything on it at once (frozen: no FIN, no RST, no
    # keepalive answer), while the new one comes up with fresh state.
    old = rt.rig.ns_pids("rt")
    for pid in old:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    rt.env_extra["HANDY_COLAB_STATE_DIR"] = str(rt.rig.work / "new-vm-state")
    started = time.monotonic()
    res = rt.up(timeout=150)
    took = time.monotonic() - started
    assert res.returncode == 0, res.stderr
    assert rt.connect_to(rt.ssh_config, rt.known_hosts, str(rt.folder)).returncode == 0
    assert rt.ssh("true").returncode == 0
    print(f"replaced runtime ready after {took:.1f}s (frps keepalive {keepalive or 30}s)")
    rt.handy("rt", "down")
    for pid in old:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            os.kill(pid, signal.SIGCONT)


def test_frps_setup_apply_runs_as_its_service_user(frp_fresh: Any) -> None:
    """--apply's layout: frps's config and key 0600, owned by the unit's own system user
    (made when missing), which can run frps from them; the output lists the unit it wrote."""
    import pwd
    import stat
    import tempfile

    rt = frp_fresh()
    assert rt.frps is not None
    rt.frps.stop()
    base = Path(tempfile.mkdtemp(prefix="hc-frps-apply-", dir="/var/tmp"))
    base.chmod(0o755)
    out = base / "etc"
    try:
        res = rt.handy(
            "relay", "frps-setup", "--server-name", "10.99.0.1", "--out", str(out), "--apply"
        )
        assert res.returncode == 0, res.stderr
        user = pwd.getpwnam("handy-colab-frps")
        for name in ("frps.toml", "server.key"):
            st = (out / name).stat()
            assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (
                user.pw_uid,
                user.pw_gid,
                0o600,
            )
        unit = (out / "handy-colab-frps.service").read_text()
        assert "User=handy-colab-frps" in unit and f"-c {out / 'frps.toml'}" in unit
        assert f"4. {out / 'handy-colab-frps.service'}: runs frps" in res.stdout
        assert f"- {out / 'handy-colab-frps.service'}" in res.stdout
        frps = rt.frps
        with open(frps.log, "ab") as log:
            frps.proc = rt.rig.popen(
                "relay",
                ["runuser", "-u", user.pw_name, "--", str(FRPS_BIN), "-c", str(out / "frps.toml")],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        rt.rig.wait_tcp("relay", "10.99.0.1", 7000)
        for name in ("frps_ca.pem", "frp_token"):
            (rt.folder / name).write_bytes((out / "runtime" / name).read_bytes())
        section = (out / "runtime" / "user_config.frp.json").read_text()
        (rt.folder / "user_config.json").write_text(section)
        assert rt.up().returncode == 0
        assert rt.connect_to(rt.ssh_config, rt.known_hosts, str(rt.folder)).returncode == 0
        assert rt.ssh("true").returncode == 0
    finally:
        rt.handy("rt", "down")
        rt.frps.stop()
        shutil.rmtree(base, ignore_errors=True)
