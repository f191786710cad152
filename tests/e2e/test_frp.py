"""The frp route end to end: a real frps on the relay host, the real frpc on the runtime behind
the NAT and, in the private modes, on the laptop as a visitor; real OpenSSH clients with
StrictHostKeyChecking yes."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cfrig import wait_for
from tests.clients import check_local_forward, check_pty
from tests.e2e.cfhelpers import RouteRuntime, finish, route_runtime
from tests.e2e.conftest import need, need_rig, up_and_connect
from tests.frprig import Frps, prerequisites
from tests.rig import Rig


def need_frp() -> None:
    need_rig()
    need(prerequisites(), "the frp test peers (bash scripts/build-test-peers.sh)")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_frp_runtime(
    tmp: Path, mode: str, *, server: str = "auto", start: bool = True, **frp: Any
) -> RouteRuntime:
    rig = Rig(tmp / "rig")
    try:
        frps = Frps(rig)
        rt = route_runtime(rig, tmp, frps=frps)
        section = frps.folder_config(rt.folder, mode, **frp)
        config = {"server": {"kind": server}, "frp": section}
        (rt.folder / "user_config.json").write_text(json.dumps(config, indent=2))
        if start:
            # The config folder (synced, in real use): private modes need its secret.
            up_and_connect(rt, lambda: rt.connect_to(rt.ssh_config, rt.known_hosts, str(rt.folder)))
        return rt
    except BaseException:
        rig.close()
        raise


@pytest.fixture(scope="module", params=["public", "private"])
def frt(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RouteRuntime]:
    need_frp()
    rt = make_frp_runtime(tmp_path_factory.mktemp(f"frp-{request.param}"), request.param)
    rt.env_extra["HC_MODE"] = request.param
    try:
        yield rt
    finally:
        finish(rt)


def test_up_says_frp_and_status_is_healthy(frt: RouteRuntime) -> None:
    res = frt.up()
    assert res.returncode == 0, res.stderr
    assert "tunnel: frp (the config has an frp section" in res.stdout
    code, st = frt.status()
    assert code == 0 and st["healthy"], st
    mode = frt.env_extra["HC_MODE"]
    assert st["tunnel"]["details"]["mode"] == mode and st["tunnel"]["details"]["verified"]
    desc = frt.descriptor_data()
    assert (desc["route"], desc["mode"], desc["format"]) == ("frp", mode, 2)
    for secret in ((frt.folder / "frp_token").read_text().strip(),):
        assert secret not in json.dumps(desc)
    proxies = frt.frps.api("/api/proxy/" + ("tcp" if mode == "public" else "stcp"))["proxies"]
    assert any(p["status"] == "online" for p in proxies), proxies


def test_generated_config(frt: RouteRuntime) -> None:
    text = frt.ssh_config.read_text()
    assert "StrictHostKeyChecking yes" in text and "HostKeyAlias colab" in text
    if frt.env_extra["HC_MODE"] == "public":
        assert "Port 6022" in text and "ProxyCommand" not in text
    else:
        assert "handy_colab.tunnels.frp_visitor" in text
        profile = frt.known_hosts.parent / "handy-colab-colab.frp.json"
        assert profile.stat().st_mode & 0o077 == 0


def test_exec_and_streams(frt: RouteRuntime) -> None:
    res = frt.ssh("echo out; echo err >&2; exit 42")
    assert res.returncode == 42, res.stderr
    assert res.stdout == "out\n" and "err" in res.stderr


def test_scp_sftp_rsync(frt: RouteRuntime, tmp_path: Path) -> None:
    src = tmp_path / "up.bin"
    src.write_bytes(os.urandom(2 * 1024 * 1024 + 5))
    remote = tmp_path / "remote.bin"
    back = tmp_path / "back.bin"
    scp = ["scp", "-F", str(frt.ssh_config), "-o", "BatchMode=yes", "-q"]
    env = frt.env()
    for extra in ([], ["-O"]):
        assert (
            frt.rig.run("laptop", [*scp, *extra, str(src), f"colab:{remote}"], env=env).returncode
            == 0
        )
        assert (
            frt.rig.run("laptop", [*scp, *extra, f"colab:{remote}", str(back)], env=env).returncode
            == 0
        )
        assert sha256(remote) == sha256(src) == sha256(back)
    batch = tmp_path / "batch"
    batch.write_text(f"put {src} {tmp_path}/sftp.bin\n")
    res = frt.rig.run(
        "laptop",
        ["sftp", "-F", str(frt.ssh_config), "-o", "BatchMode=yes", "-b", str(batch), "colab"],
        env=env,
    )
    assert res.returncode == 0 and sha256(tmp_path / "sftp.bin") == sha256(src), res.stderr
    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(8):
        (tree / f"f{i}").write_bytes(os.urandom(5000 * (i + 1)))
    rsh = f"ssh -F {frt.ssh_config} -o BatchMode=yes"
    res = frt.rig.run(
        "laptop",
        ["rsync", "-a", "--checksum", "-e", rsh, f"{tree}/", f"colab:{tmp_path}/m/"],
        env=env,
    )
    assert res.returncode == 0, res.stderr
    assert all(sha256(f) == sha256(tmp_path / "m" / f.name) for f in tree.iterdir())


def test_local_forward(frt: RouteRuntime, tmp_path: Path) -> None:
    check_local_forward(frt.rig, frt.ssh_base(), tmp_path, frt.env())


def test_visitor_leaves_nothing_behind(frt: RouteRuntime) -> None:
    before = set(Path("/tmp").glob("hc-frpv-*"))
    assert frt.ssh("true").returncode == 0
    # ssh hangs up on its ProxyCommand without waiting: the visitor ends on its own, soon.
    assert wait_for(lambda: frt.rig.ns_pids("laptop") == [], 15), frt.rig.ns_pids("laptop")
    assert wait_for(lambda: set(Path("/tmp").glob("hc-frpv-*")) <= before, 5)


def test_pty_session(frt: RouteRuntime) -> None:
    argv = ["ip", "netns", "exec", frt.rig.ns["laptop"], *frt.ssh_base()]
    check_pty(argv, frt.env())


def test_token_and_secret_stay_secret(frt: RouteRuntime) -> None:
    """frps's token and the proxy's secret: in no command line, environment, log or status,
    and only in files nobody else can read (besides the user's own in the config folder)."""
    secrets = [(frt.folder / "frp_token").read_text().strip().encode()]
    if (frt.folder / "frp_secret").exists():
        secrets.append((frt.folder / "frp_secret").read_text().strip().encode())
    assert frt.ssh("true").returncode == 0  # a visitor ran on the laptop too
    for role in ("rt", "laptop"):
        for pid in frt.rig.ns_pids(role):
            for what in ("cmdline", "environ"):
                try:
                    data = Path(f"/proc/{pid}/{what}").read_bytes()
                except OSError:
                    continue
                assert not any(s in data for s in secrets), f"a secret in /proc/{pid}/{what}"
    text = frt.handy("rt", "status", "colab").stdout + frt.handy("rt", "logs", "colab").stdout
    assert not any(s.decode() in text for s in secrets)
    for root in (frt.rig.state_dir, frt.known_hosts.parent):
        for p in root.rglob("*"):
            if p.is_file() and any(s in p.read_bytes() for s in secrets):
                assert p.stat().st_mode & 0o077 == 0, f"{p} is readable by others"
