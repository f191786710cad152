"""The cloudflared route end to end: the real cloudflared on the runtime behind the NAT, the
stand-in edge and quick-tunnel API (tests/cfrig.py), and the laptop's real OpenSSH clients
through handy-colab's WebSocket ProxyCommand, with StrictHostKeyChecking yes throughout."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cfrig import CLOUDFLARED_BIN, wait_for
from tests.clients import check_local_forward, check_pty, socks5_script
from tests.e2e.cfhelpers import CfRuntime, cf_fresh, finish, make_cf_runtime, need_peers
from tests.rig import RELAY_IP, ROUTER_OUT_IP, RUNTIME_IP, keygen

__all__ = ["cf_fresh"]  # the fixture, for the tests below


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module", params=["openssh", "embedded"])
def cfrt(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CfRuntime]:
    need_peers()
    rt = make_cf_runtime(tmp_path_factory.mktemp(f"cf-{request.param}"), server=request.param)
    try:
        yield rt
    finally:
        finish(rt)


def cloudflared_pid(rt: CfRuntime) -> int:
    _, st = rt.status()
    return int(st["tunnel"]["pid"])


# --------------------------------------------------------------------------- up and status


def test_up_picks_a_quick_tunnel_and_says_so(cfrt: CfRuntime) -> None:
    res = cfrt.up()  # already running: reports, starts nothing
    assert res.returncode == 0, res.stderr
    assert "tunnel: cloudflared (the config names no relay: a quick tunnel" in res.stdout
    code, st = cfrt.status()
    assert code == 0 and st["healthy"], st
    details = st["tunnel"]["details"]
    assert details["tunnel"] == "quick"
    assert details["hostname"] in cfrt.cf.pool
    assert details["edge_connections"] == 1
    assert details["protocol"] == "quic" or details["protocol"] == "http2"
    assert "2026.3.0" in details["binary"]
    desc = cfrt.descriptor_data()
    assert (desc["route"], desc["mode"], desc["hostname"]) == (
        "cloudflared",
        "quick",
        details["hostname"],
    )
    assert desc["format"] == 2
    # The stand-in edge saw the real cloudflared register that very hostname.
    edge = cfrt.cf.state()
    assert edge["tunnels"][details["hostname"]]["connections"] >= 1
    text = cfrt.handy("rt", "status", "colab").stdout
    assert f"https://{details['hostname']}" in text and "edge connection" in text


def test_generated_config_pins_the_runtime_key_under_an_alias(cfrt: CfRuntime) -> None:
    text = cfrt.ssh_config.read_text()
    assert "StrictHostKeyChecking yes" in text and "StrictHostKeyChecking no" not in text
    assert "HostKeyAlias colab" in text
    assert "handy_colab.tunnels.websocket" in text and "--descriptor" in text
    # No cloudflared is needed on the laptop.
    assert "cloudflared access" not in text
    known = cfrt.known_hosts.read_text().split()
    assert known[0] == "colab"


# --------------------------------------------------------------------------- the client matrix


def test_exec_exit_code_and_streams(cfrt: CfRuntime) -> None:
    res = cfrt.ssh("echo out; echo err >&2; exit 42")
    assert res.returncode == 42, res.stderr
    assert res.stdout == "out\n" and "err" in res.stderr
    res = cfrt.ssh("cat", input="through cloudflare\n")
    assert res.stdout == "through cloudflare\n"


def test_pty_session(cfrt: CfRuntime) -> None:
    argv = ["ip", "netns", "exec", cfrt.rig.ns["laptop"], *cfrt.ssh_base()]
    check_pty(argv, cfrt.env())


def test_scp_both_ways_both_protocols(cfrt: CfRuntime, tmp_path: Path) -> None:
    # 3 MiB: hundreds of messages, each of which must stay within the edge's 16 KiB limit.
    src = tmp_path / "up.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    remote = tmp_path / "on-runtime.bin"
    back = tmp_path / "down.bin"
    scp = ["scp", "-F", str(cfrt.ssh_config), "-o", "BatchMode=yes", "-q"]
    env = cfrt.env()
    assert cfrt.rig.run("laptop", [*scp, str(src), f"colab:{remote}"], env=env).returncode == 0
    assert cfrt.rig.run("laptop", [*scp, f"colab:{remote}", str(back)], env=env).returncode == 0
    assert sha256(remote) == sha256(src) == sha256(back)
    res = cfrt.rig.run("laptop", [*scp, "-O", str(src), f"colab:{remote}.O"], env=env)
    assert res.returncode == 0, res.stderr
    res = cfrt.rig.run("laptop", [*scp, "-O", f"colab:{remote}.O", f"{back}.O"], env=env)
    assert res.returncode == 0, res.stderr
    assert sha256(Path(f"{remote}.O")) == sha256(src) == sha256(Path(f"{back}.O"))


def test_sftp_and_rsync(cfrt: CfRuntime, tmp_path: Path) -> None:
    local = tmp_path / "local.txt"
    local.write_text("sftp payload\n")
    work = tmp_path / "sftp-dir"
    batch = tmp_path / "batch"
    batch.write_text(f"mkdir {work}\ncd {work}\nput {local} a.txt\nrename a.txt b.txt\nls\n")
    res = cfrt.rig.run(
        "laptop",
        ["sftp", "-F", str(cfrt.ssh_config), "-o", "BatchMode=yes", "-b", str(batch), "colab"],
        env=cfrt.env(),
    )
    assert res.returncode == 0, res.stderr
    assert (work / "b.txt").read_text() == "sftp payload\n"
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    for i in range(12):
        (tree / ("sub" if i % 2 else "") / f"f{i}.bin").write_bytes(os.urandom(7000 * (i + 1)))
    rsh = f"ssh -F {cfrt.ssh_config} -o BatchMode=yes"
    dest = tmp_path / "mirror"
    res = cfrt.rig.run(
        "laptop",
        ["rsync", "-a", "--checksum", "-e", rsh, f"{tree}/", f"colab:{dest}/"],
        env=cfrt.env(),
    )
    assert res.returncode == 0, res.stderr
    for f in tree.rglob("*.bin"):
        assert sha256(f) == sha256(dest / f.relative_to(tree))


def test_local_forward(cfrt: CfRuntime, tmp_path: Path) -> None:
    check_local_forward(cfrt.rig, cfrt.ssh_base(), tmp_path, cfrt.env())


def test_vscode_style_socks(cfrt: CfRuntime) -> None:
    # VS Code's own invocation: `ssh -T -D PORT -o ConnectTimeout=15 NAME bash`, then a SOCKS
    # CONNECT to a port on the runtime (here its SSH server, which answers with a banner).
    vsc = cfrt.rig.popen(
        "laptop",
        [*cfrt.ssh_base(), "-T", "-D", "17070", "-o", "ConnectTimeout=15", "colab", "bash"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=cfrt.env(),
    )
    try:
        _, st = cfrt.status()
        port = st["server"]["port"]
        cfrt.rig.wait_tcp("laptop", "127.0.0.1", 17070, timeout=20)
        res = cfrt.rig.run("laptop", ["python3", "-c", socks5_script(17070, "127.0.0.1", port)])
        assert res.stdout.startswith("SSH-2.0-"), res.stderr
        assert vsc.stdin is not None and vsc.stdout is not None
        vsc.stdin.write(b"echo vscode-probe-$((40+2))\nexit\n")
        vsc.stdin.close()
        assert b"vscode-probe-42" in vsc.stdout.read()
    finally:
        vsc.send_signal(signal.SIGTERM)
        vsc.wait(10)


def test_laptop_cannot_reach_runtime_directly(cfrt: CfRuntime) -> None:
    res = cfrt.rig.run(
        "laptop",
        ["python3", "-c", f"import socket; socket.create_connection(('{RUNTIME_IP}', 22), 2)"],
    )
    assert res.returncode != 0


# --------------------------------------------------------------------------- restarts


def test_new_hostname_after_tunnel_and_runtime_restart_laptop_unchanged(cfrt: CfRuntime) -> None:
    before = cfrt.descriptor_data()["hostname"]
    config_before = cfrt.ssh_config.read_bytes()
    known_before = cfrt.known_hosts.read_bytes()
    os.kill(cloudflared_pid(cfrt), signal.SIGKILL)

    def moved() -> Any:
        code, st = cfrt.status()
        host = cfrt.descriptor_data()["hostname"]
        return code == 0 and st["tunnel"]["reconnects"] >= 1 and host != before and host

    after = wait_for(moved, 40)
    assert after and after in cfrt.cf.pool, cfrt.status()
    res = cfrt.ssh("echo again")
    assert (res.returncode, res.stdout) == (0, "again\n"), res.stderr
    # A whole runtime restart: another hostname again, same host key, same laptop files.
    assert cfrt.handy("rt", "down").returncode == 0
    res = cfrt.up()
    assert res.returncode == 0, res.stderr
    third = cfrt.descriptor_data()["hostname"]
    assert third not in (before, after)
    res = cfrt.ssh("echo third")
    assert (res.returncode, res.stdout) == (0, "third\n"), res.stderr
    assert cfrt.ssh_config.read_bytes() == config_before
    assert cfrt.known_hosts.read_bytes() == known_before


def test_edge_drop_heals(cfrt: CfRuntime) -> None:
    host = cfrt.descriptor_data()["hostname"]
    cfrt.cf.drop(host)

    def works() -> bool:
        res = cfrt.ssh("true", timeout=30)
        return bool(res.returncode == 0)

    # cloudflared waits up to 1 s + a random 0-20 s (doubling on repeats) before it dials
    # again; the supervisor's check replaces it after two misses (about 12 s) if need be.
    assert wait_for(works, 60), cfrt.status()


def test_connect_via_cloudflared_access(cfrt: CfRuntime, tmp_path: Path) -> None:
    """The option to keep using `cloudflared access ssh` on the laptop (real binary)."""
    cfg, known = tmp_path / "cfg", tmp_path / "known"
    res = cfrt.connect_to(cfg, known, str(cfrt.descriptor), "--cloudflared-access")
    assert res.returncode == 0, res.stderr
    assert "--cloudflared-access" in cfg.read_text()
    res = cfrt.rig.run(
        "laptop",
        ["ssh", "-F", str(cfg), "-o", "BatchMode=yes", "colab", "echo via-cloudflared"],
        env=cfrt.env(),
    )
    assert (res.returncode, res.stdout) == (0, "via-cloudflared\n"), res.stderr


def test_impostor_key_is_refused(cfrt: CfRuntime, tmp_path: Path) -> None:
    """A hostname the laptop follows cannot swap the runtime's key: ssh refuses, no prompt."""
    data = cfrt.descriptor_data()
    fake = tmp_path / "fake.json"
    other = keygen(tmp_path / "other")
    data["host_keys"] = [" ".join(Path(f"{other}.pub").read_text().split()[:2])]
    fake.write_text(json.dumps(data))
    cfg, known = tmp_path / "cfg", tmp_path / "known"
    res = cfrt.connect_to(cfg, known, str(fake))
    assert res.returncode == 0, res.stderr
    res = cfrt.rig.run(
        "laptop", ["ssh", "-F", str(cfg), "-o", "BatchMode=yes", "colab", "true"], env=cfrt.env()
    )
    assert res.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in res.stderr or "verification failed" in (
        res.stderr
    )


def test_supervisor_log_and_files_hold_no_secrets(cfrt: CfRuntime) -> None:
    log = cfrt.handy("rt", "logs", "colab", "-n", "2000").stdout
    assert "cloudflared" in log
    assert "PRIVATE KEY" not in log
    # cloudflared's own lines reach the log (what `logs` and errors quote)...
    assert "Registered tunnel connection" in log


def test_laptop_honours_https_proxy(cfrt: CfRuntime, tmp_path: Path) -> None:
    """A laptop that reaches the internet only through an HTTP proxy (a real tinyproxy on the
    router): https_proxy alone makes the ProxyCommand tunnel its WebSocket through it."""
    conf_dir = tmp_path / "tinyproxy"
    conf_dir.mkdir()
    conf_dir.chmod(0o777)
    conf = conf_dir / "tinyproxy.conf"
    conf.write_text(
        "\n".join(
            [
                "User nobody",
                "Group nogroup",
                "Port 8888",
                f"Listen {ROUTER_OUT_IP}",
                "Timeout 600",
                "Allow 10.99.0.0/24",
                "ConnectPort 443",
                "LogLevel Connect",
                "",
            ]
        )
    )
    log = conf_dir / "log"
    with open(log, "wb") as out:
        cfrt.rig.popen(
            "router", ["tinyproxy", "-d", "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT
        )
    cfrt.rig.wait_tcp("laptop", ROUTER_OUT_IP, 8888)
    block = ["OUTPUT", "-d", RELAY_IP, "-p", "tcp", "--dport", "443", "-j", "REJECT"]
    cfrt.rig.run("laptop", ["iptables", "-I", *block], check=True)
    try:
        res = cfrt.ssh("echo direct", timeout=60)
        assert res.returncode == 255, "the laptop must not reach the edge directly here"
        proxied = {**cfrt.env(), "https_proxy": f"http://{ROUTER_OUT_IP}:8888"}
        res = cfrt.ssh("echo via-proxy", env=proxied, timeout=60)
        assert (res.returncode, res.stdout) == (0, "via-proxy\n"), res.stderr
        assert "CONNECT" in log.read_text(), log.read_text()
    finally:
        cfrt.rig.run("laptop", ["iptables", "-D", *block], check=True)


def test_the_edge_path_cuts_messages_over_16_kib(cfrt: CfRuntime, tmp_path: Path) -> None:
    """Why the ProxyCommand never sends more than 16 KiB at once: through the real cloudflared,
    a bigger WebSocket message reaches the origin cut to its first 16 KiB, silently."""
    counter = tmp_path / "received"
    origin = (
        "import socket,sys\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)"
        "\ns.bind(('127.0.0.1',18999));s.listen()\nwhile True:\n c,_=s.accept();n=0\n"
        " while True:\n  d=c.recv(65536)\n  if not d: break\n  n+=len(d)\n"
        f" open({str(counter)!r},'a').write(f'{{n}}\\n')\n"
    )
    cfrt.rig.popen("rt", ["python3", "-c", origin], stderr=subprocess.DEVNULL)
    cfrt.rig.wait_tcp("rt", "127.0.0.1", 18999)
    tunnel = cfrt.rig.popen(
        "rt",
        [
            str(CLOUDFLARED_BIN),
            "tunnel",
            "--no-autoupdate",
            "--config",
            str(cfrt.rig.state_dir / "colab" / "cloudflared.yml"),
            "--protocol",
            "http2",
            "--metrics",
            "127.0.0.1:18998",
            "--url",
            "tcp://127.0.0.1:18999",
            *cfrt.cf.extra_args(),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=cfrt.env(),
    )
    host_code = (
        "import json,time,urllib.request as u\nd=time.time()+20\nwhile True:\n try:\n"
        "  r=u.urlopen('http://127.0.0.1:18998/ready',timeout=2)\n  h=json.load("
        "u.urlopen('http://127.0.0.1:18998/quicktunnel',timeout=2))['hostname']\n"
        "  print(h);break\n except Exception:\n  assert time.time()<d\n  time.sleep(0.1)\n"
    )
    host = cfrt.rig.run("rt", ["python3", "-c", host_code], check=True).stdout.strip()
    client = (
        "from websockets.sync.client import connect\nimport time\n"
        f"c=connect('wss://{host}/',compression=None,open_timeout=30)\n"
        "c.send(b'a'*40000);c.send(b'b'*100);time.sleep(1);c.close()\n"
    )
    res = cfrt.rig.run("laptop", [sys.executable, "-c", client], env=cfrt.env())
    assert res.returncode == 0, res.stderr
    # (The "0" is wait_tcp's probe connection.)
    assert wait_for(lambda: counter.exists() and len(counter.read_text().split()) == 2, 10)
    assert counter.read_text().split() == ["0", str(16384 + 100)]
    tunnel.terminate()
    tunnel.wait(10)


def test_the_pasted_line_from_up_connects(cfrt: CfRuntime, tmp_path: Path) -> None:
    out = cfrt.up().stdout
    line = next(ln for ln in out.splitlines() if "handy-colab connect 'hc1:" in ln)
    pasted = line.split("'")[1]
    cfg, known = tmp_path / "cfg", tmp_path / "known"
    res = cfrt.connect_to(cfg, known, pasted)
    assert res.returncode == 0, res.stderr
    assert "cannot follow" in res.stdout
    res = cfrt.rig.run(
        "laptop",
        ["ssh", "-F", str(cfg), "-o", "BatchMode=yes", "colab", "echo pasted"],
        env=cfrt.env(),
    )
    assert (res.returncode, res.stdout) == (0, "pasted\n"), res.stderr
