"""Issue 4's "done when": a normal user with no OpenSSH binaries gets a working `ssh NAME`,
scp (both modes), sftp, rsync, port forwards and paramiko, through the relay, behind NAT.

The runtime runs as the unprivileged `hcuser` with a PATH that holds no ssh/sshd/scp/sftp,
so `up` has to pick the embedded server and the embedded tunnel client by itself. The laptop
uses the stock OpenSSH client, rsync and paramiko; the relay is a stock OpenSSH sshd.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.clients import PtySession, rsync_tree, socks5_script
from tests.e2e.conftest import Runtime, _etc_ssh_digest, need, need_rig, rig_runtime
from tests.nonroot import NonRoot
from tests.nonroot import prerequisites as nonroot_prerequisites
from tests.rig import Rig, wait_until

pytestmark = pytest.mark.e2e


def need_nonroot() -> None:
    need(nonroot_prerequisites(), "non-root prerequisites")


@pytest.fixture(scope="module", params=["public", "private"])
def nr_runtime(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Runtime]:
    need_rig()
    need_nonroot()
    mode = request.param
    tmp = tmp_path_factory.mktemp(f"nr-{mode}")
    nr = NonRoot()
    rig = Rig(tmp / "rig", gateway_ports="yes" if mode == "public" else "no")
    try:
        drive = nr.root / "drive"
        rt = rig_runtime(rig, tmp, mode, drive / "colab_data", extra={"nr": nr})
        nr.own(drive)
        drive.chmod(0o700)
        res = rig.run("rt", nr.argv("up", str(rt.folder), "--timeout", "40"), timeout=90)
        rt.extra["up"] = res
        assert res.returncode == 0, res.stderr + res.stdout
        res = rt.connect()
        assert res.returncode == 0, res.stderr + res.stdout
        yield rt
    finally:
        down = rig.run("rt", nr.argv("down"), timeout=60)
        leftovers = rig.close()
        nr.close()
    assert down.returncode == 0, down.stderr
    assert leftovers == [], f"processes left running: {leftovers}"


def _status(rt: Runtime) -> dict[str, Any]:
    nr: NonRoot = rt.extra["nr"]
    res = rt.rig.run("rt", nr.argv("status", "colab", "--json"))
    assert res.returncode == 0, res.stdout + res.stderr
    data: dict[str, Any] = json.loads(res.stdout)
    return data


def test_up_picks_embedded_parts_and_says_so(nr_runtime: Runtime) -> None:
    out = nr_runtime.extra["up"].stdout
    assert "server: embedded (not root" in out, out
    assert "tunnel: embedded (no `ssh` client on PATH)" in out, out
    st = _status(nr_runtime)
    assert st["server"]["kind"] == "embedded" and st["tunnel"]["kind"] == "embedded"
    nr: NonRoot = nr_runtime.extra["nr"]
    # Everything runs as the normal user; nothing of OpenSSH runs on the runtime.
    for pid in nr_runtime.rig.ns_pids("rt"):
        status = Path(f"/proc/{pid}/status").read_text()
        uid = int(next(ln for ln in status.splitlines() if ln.startswith("Uid:")).split()[1])
        assert uid == nr.pw.pw_uid, status.splitlines()[0]
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        assert not cmd.endswith((b"/ssh", b"/sshd")), cmd
    assert _etc_ssh_digest() == nr_runtime.extra["etc_ssh"]


def test_exec_exit_code_and_streams(nr_runtime: Runtime) -> None:
    res = nr_runtime.ssh("id -un; pwd; echo out; echo err >&2; exit 7")
    assert res.returncode == 7, res.stderr
    nr: NonRoot = nr_runtime.extra["nr"]
    assert res.stdout.splitlines()[0] == nr.pw.pw_name
    assert res.stdout.splitlines()[-1] == "out"
    assert "err" in res.stderr and "err" not in res.stdout


def test_pty_login_shell_with_resize(nr_runtime: Runtime) -> None:
    rig = nr_runtime.rig
    sess = PtySession(
        ["ip", "netns", "exec", rig.ns["laptop"], *nr_runtime.ssh_base(), "-tt", "colab"],
        rows=24,
        cols=80,
    )
    try:
        sess.send("stty size; tty; echo MARK-$((6*7))\r")
        m = sess.expect(r"(\d+) (\d+)\r\n(/dev/pts/\d+)\r\nMARK-42")
        assert m.group(1, 2) == (b"24", b"80")
        sess.resize(40, 132)
        time.sleep(0.5)
        sess.send("stty size; echo MARK-$((6*8))\r")
        m = sess.expect(r"(\d+) (\d+)\r\nMARK-48")
        assert m.group(1, 2) == (b"40", b"132")
        sess.send("exit 3\r")
        assert sess.close() == 3
    finally:
        if sess.proc.poll() is None:
            sess.proc.kill()


def _blob(tmp: Path, size: int = 3 << 20) -> tuple[Path, str]:
    p = tmp / "blob.bin"
    p.write_bytes(os.urandom(size))
    return p, hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.mark.parametrize("legacy", [False, True], ids=["sftp-mode", "scp-O"])
def test_scp_both_ways(nr_runtime: Runtime, tmp_path: Path, legacy: bool) -> None:
    blob, digest = _blob(tmp_path)
    scp = ["scp", "-F", str(nr_runtime.ssh_config), "-o", "BatchMode=yes", "-q"]
    if legacy:
        scp.append("-O")
    name = f"up-{int(legacy)}.bin"
    res = nr_runtime.rig.run("laptop", [*scp, str(blob), f"colab:{name}"])
    assert res.returncode == 0, res.stderr
    res = nr_runtime.ssh(f"sha256sum {name}")
    assert res.stdout.split()[0] == digest
    back = tmp_path / "back.bin"
    res = nr_runtime.rig.run("laptop", [*scp, f"colab:{name}", str(back)])
    assert res.returncode == 0, res.stderr
    assert hashlib.sha256(back.read_bytes()).hexdigest() == digest


def test_sftp_batch(nr_runtime: Runtime, tmp_path: Path) -> None:
    blob, digest = _blob(tmp_path, 1 << 20)
    batch = tmp_path / "batch"
    got = tmp_path / "got.bin"
    batch.write_text(
        f"-rm sftpdir/moved.bin\n-rmdir sftpdir\nmkdir sftpdir\nput {blob} sftpdir/a.bin\n"
        f"rename sftpdir/a.bin sftpdir/moved.bin\nls sftpdir\nget sftpdir/moved.bin {got}\n"
    )
    res = nr_runtime.rig.run(
        "laptop",
        [
            "sftp",
            "-F",
            str(nr_runtime.ssh_config),
            "-o",
            "BatchMode=yes",
            "-b",
            str(batch),
            "colab",
        ],
    )
    assert res.returncode == 0, res.stderr
    assert "moved.bin" in res.stdout
    assert hashlib.sha256(got.read_bytes()).hexdigest() == digest
    # Relative paths land in the session's start directory, as with OpenSSH.
    res = nr_runtime.ssh("sha256sum sftpdir/moved.bin")
    assert res.stdout.split()[0] == digest


def test_rsync_over_ssh(nr_runtime: Runtime, tmp_path: Path) -> None:
    src = rsync_tree(tmp_path / "tree", 1 << 20)
    ssh = f"ssh -F {nr_runtime.ssh_config} -o BatchMode=yes"
    res = nr_runtime.rig.run("laptop", ["rsync", "-a", "-e", ssh, f"{src}/", "colab:rsynced/"])
    assert res.returncode == 0, res.stderr
    local = nr_runtime.rig.run(
        "laptop", ["sh", "-c", f"cd {src} && find . -type f | sort | xargs sha256sum"]
    )
    remote = nr_runtime.ssh("cd rsynced && find . -type f | sort | xargs sha256sum")
    assert remote.returncode == 0 and remote.stdout == local.stdout
    # A second run transfers nothing: rsync's delta protocol works through the server.
    res = nr_runtime.rig.run(
        "laptop", ["rsync", "-a", "--stats", "-e", ssh, f"{src}/", "colab:rsynced/"]
    )
    assert "Number of regular files transferred: 0" in res.stdout, res.stdout


def _server_port(rt: Runtime) -> int:
    return int(_status(rt)["server"]["port"])


def test_local_forward(nr_runtime: Runtime) -> None:
    port = _server_port(nr_runtime)
    # -L to a service on the runtime's loopback (its own SSH server): its banner comes back.
    code = (
        "import socket,sys,time\n"
        "for _ in range(100):\n"
        "  try:\n   s=socket.create_connection(('127.0.0.1',47011),1);break\n"
        "  except OSError: time.sleep(0.1)\n"
        "print(s.makefile('rb').readline().decode().strip())\n"
    )
    res = nr_runtime.rig.run(
        "laptop",
        [
            "sh",
            "-c",
            " ".join(
                [
                    *nr_runtime.ssh_base(),
                    "-o",
                    "ExitOnForwardFailure=yes",
                    "-f",
                    "-L",
                    f"47011:127.0.0.1:{port}",
                    "colab",
                    "sleep",
                    "8",
                ]
            )
            + f' && {sys.executable} -c "{code}"',
        ],
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().startswith("SSH-2.0-"), res.stdout


LINE_SERVER = """
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 47012))
s.listen()
while True:
    c, _ = s.accept()
    c.sendall(b"from-laptop\\n")
    c.close()
"""
PROBE = "import socket; socket.create_connection(('127.0.0.1', 47012), 1).close()"


def test_remote_forward(nr_runtime: Runtime) -> None:
    # The laptop serves a line; a command on the runtime reads it back through -R.
    rig = nr_runtime.rig
    server = rig.popen("laptop", [sys.executable, "-c", LINE_SERVER])
    try:
        assert wait_until(
            lambda: rig.run("laptop", [sys.executable, "-c", PROBE]).returncode == 0, 10
        )
        res = nr_runtime.ssh(
            "-o",
            "ExitOnForwardFailure=yes",
            "-R",
            "127.0.0.1:47013:127.0.0.1:47012",
            "--",
            "python3 -c \"import socket;s=socket.create_connection(('127.0.0.1',47013),5);"
            "print(s.makefile('rb').readline().decode().strip())\"",
        )
    finally:
        server.kill()
        server.wait(5)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "from-laptop"


def test_dynamic_forward(nr_runtime: Runtime) -> None:
    port = _server_port(nr_runtime)
    proxy = nr_runtime.rig.popen(
        "laptop",
        [
            *nr_runtime.ssh_base(),
            "-o",
            "ExitOnForwardFailure=yes",
            "-N",
            "-D",
            "127.0.0.1:47014",
            "colab",
        ],
    )
    try:
        script = socks5_script(47014, "127.0.0.1", port)
        ok = wait_until(
            lambda: nr_runtime.rig.run("laptop", [sys.executable, "-c", script]).returncode == 0,
            15,
            0.3,
        )
        assert ok, "SOCKS5 through -D never answered"
        res = nr_runtime.rig.run("laptop", [sys.executable, "-c", script])
        # 127.0.0.1 is resolved on the runtime's side of -D: its own SSH server answers.
        assert res.stdout.strip().startswith("SSH-2.0-"), res.stdout + res.stderr
    finally:
        proxy.terminate()
        proxy.wait(10)


PARAMIKO = """
import hashlib, os, socket, sys
import paramiko
cfg_path, known, key, mode = sys.argv[1:5]
host = paramiko.SSHConfig.from_path(cfg_path).lookup("colab")
if mode == "private":
    sock = paramiko.ProxyCommand(host["proxycommand"])
else:
    sock = socket.create_connection((host["hostname"], int(host["port"])), 10)
client = paramiko.SSHClient()
client.load_host_keys(known)  # pinned under the alias (HostKeyAlias colab)
client.set_missing_host_key_policy(paramiko.RejectPolicy())
client.connect("colab", username=host["user"], key_filename=key, sock=sock,
               look_for_keys=False, allow_agent=False, timeout=15)
_, out, err = client.exec_command("echo paramiko-$((2+3)); echo e >&2; exit 4")
print(out.read().decode().strip(), err.read().decode().strip(), out.channel.recv_exit_status())
data = os.urandom(300000)
sftp = client.open_sftp()
with sftp.open("pm.bin", "wb") as f:
    f.write(data)
with sftp.open("pm.bin", "rb") as f:
    back = f.read()
print(hashlib.sha256(back).hexdigest() == hashlib.sha256(data).hexdigest(),
      sftp.stat("pm.bin").st_size)
client.close()
"""


def test_paramiko_exec_and_sftp(nr_runtime: Runtime) -> None:
    res = nr_runtime.rig.run(
        "laptop",
        [
            sys.executable,
            "-c",
            PARAMIKO,
            str(nr_runtime.ssh_config),
            str(nr_runtime.known_hosts),
            str(nr_runtime.laptop_key),
            nr_runtime.mode,
        ],
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["paramiko-5 e 4", "True 300000"], res.stdout
