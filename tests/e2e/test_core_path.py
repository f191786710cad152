"""The core path through a real NAT and a stock OpenSSH relay, in public and private mode.

Every client here is the real thing (ssh, scp, sftp, rsync, a PTY) run from the laptop
namespace, which has no route to the runtime: all traffic crosses the relay.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pty
import select
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.clients import check_local_forward
from tests.e2e.conftest import REMOTE_PORT, Runtime, _etc_ssh_digest
from tests.rig import RUNTIME_IP, wait_until


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_laptop_cannot_reach_runtime_directly(runtime: Runtime) -> None:
    res = runtime.rig.run(
        "laptop",
        ["python3", "-c", f"import socket; socket.create_connection(('{RUNTIME_IP}', 22), 2)"],
    )
    assert res.returncode != 0
    assert "unreachable" in res.stderr or "timed out" in res.stderr


def test_exec_keeps_exit_code_and_streams(runtime: Runtime) -> None:
    res = runtime.ssh("echo out; echo err >&2; exit 42")
    assert res.returncode == 42, res.stderr
    assert res.stdout == "out\n"
    assert "err" in res.stderr
    res = runtime.ssh("cat", input="through the relay\n")
    assert res.stdout == "through the relay\n"


def test_the_pasted_line_from_up_connects(runtime: Runtime) -> None:
    """The one line `up` showed, pasted into `connect` on the laptop (no folder, no file):
    the same Host block as from the descriptor file, and ssh gets in."""
    shown = next(
        ln for ln in runtime.extra["up_stdout"].splitlines() if "handy-colab connect 'hc1:" in ln
    )
    pasted = shown.split("'")[1]
    assert len(pasted) < 700, len(pasted)
    # A short folder: private mode's held-connection sockets must fit in sockaddr_un (a
    # long pytest path, pytest-123/test_the_pasted_..., would get the asyncssh proxy).
    short = Path(tempfile.mkdtemp(prefix="hc-paste-", dir="/tmp"))
    runtime.rig.cleanups.append(lambda: shutil.rmtree(short, ignore_errors=True))
    cfg, known = short / "config", short / "known_hosts"
    args = ["--ssh-config", str(cfg), "--known-hosts", str(known)]
    res = runtime.rig.handy(
        "laptop", "connect", pasted, "--identity", str(runtime.laptop_key), *args
    )
    assert res.returncode == 0, res.stderr + res.stdout
    # The same Host block as from the file, but for where the files are.
    ours = cfg.read_text().replace(str(short), "DIR")
    theirs = runtime.ssh_config.read_text().replace(str(runtime.ssh_config.parent), "DIR")
    assert ours == theirs
    ssh = ["ssh", "-F", str(cfg), "-o", "BatchMode=yes", "colab"]
    res = runtime.rig.run("laptop", [*ssh, "true"])
    assert res.returncode == 0, res.stderr
    res = runtime.rig.run("laptop", [*ssh, "echo pasted; exit 5"])
    assert (res.returncode, res.stdout) == (5, "pasted\n"), res.stderr


def test_generated_config_pins_host_keys(runtime: Runtime) -> None:
    text = runtime.ssh_config.read_text()
    assert "StrictHostKeyChecking yes" in text
    assert "StrictHostKeyChecking no" not in text
    assert ("ProxyCommand" in text) == (runtime.mode == "private")
    res = runtime.rig.run("laptop", ["ssh", "-G", "-F", str(runtime.ssh_config), "colab"])
    assert "stricthostkeychecking true" in res.stdout


def test_interactive_pty_session(runtime: Runtime) -> None:
    primary, secondary = pty.openpty()
    argv = ["ip", "netns", "exec", runtime.rig.ns["laptop"], *runtime.ssh_base(), "-tt", "colab"]
    proc = subprocess.Popen(
        argv,
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        env=runtime.rig.env(),
        start_new_session=True,
    )
    os.close(secondary)
    out = b""

    def read_until(token: bytes, timeout: float = 20) -> bool:
        nonlocal out
        deadline = time.monotonic() + timeout
        while token not in out and time.monotonic() < deadline:
            r, _, _ = select.select([primary], [], [], 0.2)
            if r:
                try:
                    out += os.read(primary, 4096)
                except OSError:
                    break
        return token in out

    try:
        os.write(primary, b"stty -echo; tty; echo SUM=$((6*7))\n")
        assert read_until(b"SUM=42"), out
        assert b"/dev/pts/" in out
        os.write(primary, b"exit 3\n")
        assert proc.wait(20) == 3
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(primary)


def test_scp_both_ways(runtime: Runtime, tmp_path: Path) -> None:
    src = tmp_path / "up.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    remote = tmp_path / "on-runtime.bin"
    back = tmp_path / "down.bin"
    scp = ["scp", "-F", str(runtime.ssh_config), "-o", "BatchMode=yes", "-q"]
    res = runtime.rig.run("laptop", [*scp, str(src), f"colab:{remote}"])
    assert res.returncode == 0, res.stderr
    res = runtime.rig.run("laptop", [*scp, f"colab:{remote}", str(back)])
    assert res.returncode == 0, res.stderr
    assert sha256(remote) == sha256(src) == sha256(back)
    # Legacy protocol too (scp -O), as older laptops use it.
    res = runtime.rig.run("laptop", [*scp, "-O", f"colab:{remote}", str(back) + ".O"])
    assert res.returncode == 0, res.stderr
    assert sha256(Path(str(back) + ".O")) == sha256(src)


def test_rsync_with_checksums(runtime: Runtime, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    for i in range(20):
        (tree / ("sub" if i % 2 else "") / f"f{i}.bin").write_bytes(os.urandom(4096 * (i + 1)))
    dest = tmp_path / "mirror"
    rsh = f"ssh -F {runtime.ssh_config} -o BatchMode=yes"
    res = runtime.rig.run(
        "laptop", ["rsync", "-a", "--checksum", "-e", rsh, f"{tree}/", f"colab:{dest}/"]
    )
    assert res.returncode == 0, res.stderr
    for f in tree.rglob("*.bin"):
        assert sha256(f) == sha256(dest / f.relative_to(tree))
    # And back: a second, incremental run that transfers nothing new must still succeed.
    back = tmp_path / "back"
    res = runtime.rig.run(
        "laptop", ["rsync", "-a", "--checksum", "-e", rsh, f"colab:{dest}/", f"{back}/"]
    )
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in back.rglob("*.bin")) == sorted(
        p.name for p in tree.rglob("*.bin")
    )


def test_sftp_batch(runtime: Runtime, tmp_path: Path) -> None:
    local = tmp_path / "local.txt"
    local.write_text("sftp payload\n")
    work = tmp_path / "sftp-dir"
    batch = tmp_path / "batch"
    batch.write_text(
        f"mkdir {work}\ncd {work}\nput {local} a.txt\nrename a.txt b.txt\n"
        f"ls\nget b.txt {tmp_path / 'got.txt'}\n"
    )
    res = runtime.rig.run(
        "laptop",
        ["sftp", "-F", str(runtime.ssh_config), "-o", "BatchMode=yes", "-b", str(batch), "colab"],
    )
    assert res.returncode == 0, res.stderr
    assert (work / "b.txt").read_text() == "sftp payload\n"
    assert (tmp_path / "got.txt").read_text() == "sftp payload\n"


def test_local_forward_to_http_server_in_runtime(runtime: Runtime, tmp_path: Path) -> None:
    check_local_forward(runtime.rig, runtime.ssh_base(), tmp_path)


def test_status_descriptor_and_no_second_copy(runtime: Runtime) -> None:
    res = runtime.rig.handy("rt", "status", "colab", "--json")
    assert res.returncode == 0, res.stdout
    st = json.loads(res.stdout)
    assert st["healthy"] and st["phase"] == "ready"
    assert st["tunnel"]["state"] == "up" and st["server"]["state"] == "up"
    desc = json.loads((runtime.folder / "connections" / "colab.json").read_text())
    assert desc["mode"] == runtime.mode
    if runtime.mode == "public":
        assert desc["remote_port"] == REMOTE_PORT
    else:
        assert desc["socket_path"] == runtime.rig.relay_socket
    assert "PRIVATE KEY" not in json.dumps(desc)

    # The long-lived processes (the health check's short-lived ssh comes and goes).
    def long_lived() -> tuple[int, int, int]:
        st = json.loads(runtime.rig.handy("rt", "status", "colab", "--json").stdout)
        return st["pid"], st["server"]["pid"], st["tunnel"]["pid"]

    before = long_lived()
    res = runtime.up()
    assert res.returncode == 0, res.stderr
    assert "already running" in res.stdout
    assert long_lived() == before
    assert runtime.rig.supervisors() == [before[0]]
    res = runtime.ssh("true")
    assert res.returncode == 0


def test_cli_supervisor_is_forked_and_detached(runtime: Runtime) -> None:
    """`up` on the command line forks its supervisor (launch.ForkLaunch): it must be as
    detached as the exec'd one, in a session of its own (a terminal's or a cell's interrupt
    does not reach it), in /, with none of `up`'s files open (its stdout pipe would keep a
    caller waiting; its up.lock would stay open)."""
    st = json.loads(runtime.rig.handy("rt", "status", "colab", "--json").stdout)
    pid = st["pid"]
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "hc-supervisor"
    assert os.getsid(pid) == pid and os.getpgid(pid) == pid
    assert os.readlink(f"/proc/{pid}/cwd") == "/"
    fds = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile
            fds[int(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
    assert fds[0] == "/dev/null"
    out = str(runtime.rig.state_dir / "colab" / "supervisor.out")
    assert fds[1] == fds[2] == out, fds
    assert not [f for f in fds.values() if f.endswith("up.lock")], fds
    # The next `up` takes that lock at once: it finds the runtime running.
    res = runtime.up()
    assert res.returncode == 0 and "already running" in res.stdout, res.stderr


def test_tunnel_login_kex_is_fast_and_sessions_keep_the_post_quantum_default(
    runtime: Runtime,
) -> None:
    """The tunnel's own relay log-in offers curve25519 first (tunnels/openssh.py TUNNEL_KEX);
    the laptop's session inside it still negotiates OpenSSH's post-quantum default."""
    log = (runtime.rig.state_dir / "colab" / "supervisor.log").read_text()
    tunnel_kex = [ln for ln in log.splitlines() if "tunnel: debug1: kex: algorithm:" in ln]
    assert tunnel_kex, log[-2000:]
    assert all(ln.endswith("kex: algorithm: curve25519-sha256") for ln in tunnel_kex)
    res = runtime.rig.run("laptop", [*runtime.ssh_base(), "-v", "colab", "true"])
    assert res.returncode == 0, res.stderr
    session_kex = [ln for ln in res.stderr.splitlines() if "kex: algorithm:" in ln]
    # The last one is the runtime's (were a relay hop logged in by this ssh, it came first).
    assert session_kex and "sntrup761x25519-sha512" in session_kex[-1], session_kex


def test_up_prints_connection_block(runtime: Runtime) -> None:
    out = runtime.up().stdout
    for needle in (
        "ssh ",
        "Host colab",
        "handy-colab connect",
        "code --remote ssh-remote+colab",
        "PyCharm",
        "interpreter ",
    ):
        assert needle in out, needle
    assert "PRIVATE KEY" not in out


def test_key_only_no_passwords(runtime: Runtime) -> None:
    res = runtime.rig.run(
        "laptop",
        [
            *runtime.ssh_base(),
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "PreferredAuthentications=password,keyboard-interactive",
            "colab",
            "true",
        ],
    )
    assert res.returncode == 255
    assert "Permission denied (publickey)" in res.stderr
    cfg = (runtime.rig.state_dir / "colab" / "sshd_config").read_text()
    assert "PasswordAuthentication no" in cfg and "KbdInteractiveAuthentication no" in cfg


def test_system_sshd_config_untouched(runtime: Runtime) -> None:
    assert _etc_ssh_digest() == runtime.extra["etc_ssh"]


def test_supervisor_reopens_a_dropped_tunnel(runtime: Runtime) -> None:
    def state() -> dict[str, Any]:
        res = runtime.rig.handy("rt", "status", "colab", "--json")
        data: dict[str, Any] = json.loads(res.stdout)
        return data

    before = state()["tunnel"]
    os.kill(before["pid"], signal.SIGKILL)
    assert wait_until(
        lambda: state()["tunnel"]["reconnects"] > before["reconnects"] and state()["healthy"], 30
    )
    assert state()["tunnel"]["pid"] != before["pid"]
    assert runtime.ssh("echo back").stdout == "back\n"
    logs = runtime.rig.handy("rt", "logs")
    assert logs.returncode == 0 and "tunnel re-opened" in logs.stdout
    assert "PRIVATE KEY" not in logs.stdout


def test_restart_keeps_host_key_then_changed_key_is_refused(runtime: Runtime) -> None:
    """Runs last in the module: it restarts the runtime twice."""
    rig = runtime.rig
    assert rig.handy("rt", "down").returncode == 0
    assert rig.ns_pids("rt") == []  # down leaves nothing running
    res = runtime.up()
    assert res.returncode == 0, res.stderr
    # A "new runtime" with the same config folder: the laptop still trusts it.
    assert runtime.ssh("true").returncode == 0
    assert rig.handy("rt", "down").returncode == 0
    for f in (runtime.folder / "host_keys").iterdir():
        f.unlink()
    res = runtime.up()
    assert res.returncode == 0, res.stderr
    res = runtime.ssh("true")
    assert res.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in res.stderr
    assert wait_until(lambda: rig.handy("rt", "status").returncode == 0, 5)
