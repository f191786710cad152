"""The embedded (asyncssh) SSH server on 127.0.0.1, driven by real clients.

EmbeddedServer is started directly, as the current user, from a config folder read by
load_config: no relay and no NAT rig. Clients are the real ones: OpenSSH's ssh, scp (both
protocols), sftp, rsync, a PTY driven like a terminal emulator, paramiko, and asyncssh's
client where only a library can ask for something (exit-signal details, signal requests).
The server's host key is pinned in the clients' own known_hosts; nothing is unchecked.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from handy_colab.config import load_config
from handy_colab.errors import ServerError
from handy_colab.keys import ensure_host_key, fingerprint
from handy_colab.proc import descendants, start_time
from handy_colab.server.embedded import EmbeddedServer, login_defaults
from handy_colab.server.session import capture, write_session
from handy_colab.state import RuntimeDir
from tests.clients import PtySession, rsync_tree, socks5_script
from tests.rig import wait_until

TOOLS = ("ssh", "ssh-keygen", "scp", "sftp", "rsync")


def need_tools() -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    for module in ("asyncssh", "paramiko"):
        try:
            __import__(module)
        except ImportError:
            missing.append(f"python module {module}")
    if not missing:
        return
    if os.environ.get("CI") == "true":
        # In CI a missing prerequisite is a broken install step, never a silent skip.
        pytest.fail(f"CI=true but prerequisites are missing: {', '.join(missing)}")
    pytest.skip(f"needs: {', '.join(missing)}")


def keygen(path: Path) -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Emb:
    server: EmbeddedServer
    port: int
    user: str
    cwd: Path
    key: Path
    wrong_key: Path
    ssh_config: Path
    known_hosts: Path
    tmp: Path

    def ssh_argv(self, *args: str) -> list[str]:
        return ["ssh", "-F", str(self.ssh_config), *args]

    def forward(self, *specs: str) -> subprocess.Popen[bytes]:
        """``ssh -N`` holding the forwards ``specs`` (-L/-R/-D and their arguments) open."""
        return subprocess.Popen(
            self.ssh_argv("-N", "-o", "ExitOnForwardFailure=yes", *specs, "emb")
        )

    def ssh(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        kw.setdefault("timeout", 30)
        return subprocess.run(
            self.ssh_argv(*args), capture_output=True, text=True, check=False, **kw
        )

    def ssh_as(self, key: Path, user: str, *args: str) -> subprocess.CompletedProcess[str]:
        """ssh with only ``key`` to offer, as ``user`` (the config's IdentityFile would add
        the authorized key otherwise: IdentityFile accumulates)."""
        argv = ["ssh", "-F", "/dev/null", "-p", str(self.port), "-l", user, "-i", str(key)]
        for opt in (
            "IdentitiesOnly=yes",
            f"UserKnownHostsFile={self.known_hosts}",
            "GlobalKnownHostsFile=/dev/null",
            "StrictHostKeyChecking=yes",
            "BatchMode=yes",
        ):
            argv += ["-o", opt]
        return subprocess.run(
            [*argv, *args, "127.0.0.1", "true"], capture_output=True, text=True, timeout=30
        )

    def asyncssh_connect(self) -> Any:
        """An asyncssh connection (``async with``) with the authorized key, host key pinned."""
        import asyncssh

        return asyncssh.connect(
            "127.0.0.1",
            self.port,
            username=self.user,
            client_keys=[str(self.key)],
            known_hosts=str(self.known_hosts),
            agent_path=None,
            config=[],
        )

    def log(self) -> str:
        return "\n".join(self.server.last_lines(2000))


def make_folder(tmp: Path, laptop_pub: Path, server: dict[str, Any]) -> Path:
    folder = tmp / "cfg"
    folder.mkdir()
    keygen(tmp / "relay_key")
    shutil.copy(tmp / "relay_key", folder / "relay_key")
    shutil.copy(laptop_pub, folder / "laptop.pub")
    (folder / "user_config.json").write_text(
        json.dumps(
            {
                "name": "emb",
                "relay": {"host": "relay.invalid", "remote_port": 2222, "key": "relay_key"},
                "server": server,
            }
        )
    )
    return folder


def start_server(tmp: Path, name: str) -> Emb:
    keys = tmp / "keys"
    keys.mkdir()
    key = keygen(keys / "laptop")
    wrong_key = keygen(keys / "stranger")
    folder = make_folder(tmp, Path(f"{key}.pub"), {"kind": "embedded", "port": 0})
    cfg = load_config(folder, name=name)
    rd = RuntimeDir.for_name(cfg.name).ensure()
    host_key = ensure_host_key(folder)
    server = EmbeddedServer(cfg, rd, host_key)
    cwd = tmp / "workdir"
    cwd.mkdir()
    server.cwd = cwd
    server.prepare()
    # What `up` does: the caller's environment and directory become every session's.
    write_session(rd, capture(rd, os.environ, str(cwd)))
    server.start(timeout=20)
    known = tmp / "known_hosts"
    known.write_text(f"[127.0.0.1]:{server.port} {host_key.public_line}\n")
    ssh_config = tmp / "ssh_config"
    ssh_config.write_text(
        "\n".join(
            [
                "Host emb",
                "  HostName 127.0.0.1",
                f"  Port {server.port}",
                f"  User {cfg.login_user}",
                f"  IdentityFile {key}",
                "  IdentitiesOnly yes",
                f"  UserKnownHostsFile {known}",
                "  GlobalKnownHostsFile /dev/null",
                "  StrictHostKeyChecking yes",
                "  BatchMode yes",
                "  LogLevel ERROR",
                "  ConnectTimeout 10",
                "",
            ]
        )
    )
    return Emb(server, server.port, cfg.login_user, cwd, key, wrong_key, ssh_config, known, tmp)


def marker_pids(marker: str) -> list[int]:
    """Live `sleep MARKER` processes (not the ssh clients whose command line names it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if cmd.startswith(b"sleep ") and marker.encode() in cmd and state != "Z":
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def emb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emb]:
    need_tools()
    tmp = tmp_path_factory.mktemp("embsrv")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HANDY_COLAB_STATE_DIR", str(tmp / "state"))
        # Sessions get the environment of the process that ran `up` (here: this one).
        mp.setenv("HC_EMB_RUNTIME", "from-runtime")
        mp.setenv("HC_EMB_OVERRIDE", "runtime-value")
        e = start_server(tmp, "emb")
        server_pid = e.server.pid
        assert server_pid is not None
        try:
            yield e
        finally:
            e.server.stop()
    assert not e.server.alive()
    assert start_time(server_pid) is None


# -- exec ------------------------------------------------------------------------------------


def test_exec_exit_codes_and_separate_streams(emb: Emb) -> None:
    res = emb.ssh("emb", "echo out; echo err >&2; exit 42")
    assert res.returncode == 42, res.stderr
    assert res.stdout == "out\n"
    assert res.stderr == "err\n"
    assert emb.ssh("emb", "true").returncode == 0
    assert emb.ssh("emb", "exit 255").returncode == 255
    # A missing command is the shell's 127, as under sshd.
    res = emb.ssh("emb", "no-such-command-hc")
    assert res.returncode == 127 and "not found" in res.stderr


def test_stdin_and_eof(emb: Emb, tmp_path: Path) -> None:
    res = emb.ssh("emb", "wc -l; echo after-eof", input="a\nb\nc\n")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["3", "after-eof"]
    # Several MiB in both directions: flow control on the channel and the pipes.
    blob = tmp_path / "in.bin"
    blob.write_bytes(os.urandom(6 << 20))
    with blob.open("rb") as fh:
        up = subprocess.run(
            emb.ssh_argv("emb", "sha256sum"), stdin=fh, capture_output=True, timeout=30
        )
    assert up.stdout.split()[0].decode() == sha256(blob)
    down = subprocess.run(
        emb.ssh_argv("emb", f"cat {blob}"), capture_output=True, timeout=30, check=True
    )
    assert hashlib.sha256(down.stdout).hexdigest() == sha256(blob)


def test_exit_signal_and_signal_requests(emb: Emb) -> None:

    async def run() -> tuple[Any, Any, Any, str]:
        async with emb.asyncssh_connect() as conn:
            killed = await conn.run("kill -TERM $$", check=False)
            # A signal request reaches the command's whole process group: the subshell
            # (a child of the shell) traps it too.
            proc = await conn.create_process(
                # "ready" comes from the subshell once its trap is set (no race with it).
                "trap 'echo got-usr1; exit 5' USR1; (trap 'echo sub-usr1' USR1; echo ready; "
                "sleep 5) & wait; wait"
            )
            line = await asyncio.wait_for(proc.stdout.readline(), 10)
            assert line == "ready\n"
            proc.send_signal("USR1")
            out = await asyncio.wait_for(proc.stdout.read(), 10)
            await proc.wait_closed()
            trapped = proc
            sleeper = await conn.create_process("sleep 30")
            await asyncio.sleep(0.3)
            sleeper.send_signal("KILL")
            await asyncio.wait_for(sleeper.wait_closed(), 10)
            return killed, trapped, sleeper, out

    killed, trapped, sleeper, out = asyncio.run(run())
    assert killed.exit_signal is not None and killed.exit_signal[0] == "TERM"
    assert killed.exit_status == -1
    assert "got-usr1" in out and "sub-usr1" in out
    assert trapped.exit_status == 5
    assert sleeper.exit_signal is not None and sleeper.exit_signal[0] == "KILL"
    # OpenSSH's client reports a remote killed by a signal as 255.
    assert emb.ssh("emb", "kill -TERM $$").returncode == 255


def test_environment(emb: Emb) -> None:
    home, shell = login_defaults()
    res = emb.ssh(
        "-o",
        "SetEnv=HC_SET=set-by-client HC_EMB_OVERRIDE=client-value",
        "-o",
        "SendEnv=HC_SENT",
        "emb",
        'echo "$USER|$LOGNAME|$HOME|$SHELL|$HC_SET|$HC_SENT|$HC_EMB_RUNTIME|$HC_EMB_OVERRIDE";'
        ' echo "$SSH_CONNECTION|$SSH_CLIENT|$(printenv SSH_TTY || echo none)|'
        '$(printenv TERM || echo none)"; pwd',
        env={**os.environ, "HC_SENT": "sent-by-client"},
    )
    assert res.returncode == 0, res.stderr
    first, second, pwd = res.stdout.splitlines()
    u = emb.user
    assert first.split("|") == [
        u,
        u,
        home,
        shell,
        "set-by-client",
        "sent-by-client",
        "from-runtime",
        "client-value",
    ]
    conn, client, tty, term = second.split("|")
    c_ip, c_port, s_ip, s_port = conn.split()
    assert (c_ip, s_ip, s_port) == ("127.0.0.1", "127.0.0.1", str(emb.port))
    assert client == f"127.0.0.1 {c_port} {emb.port}"
    assert (tty, term) == ("none", "none")
    assert pwd == str(emb.cwd)


# -- terminals ---------------------------------------------------------------------------------


def test_pty_login_shell_resize_and_ctrl_c(emb: Emb) -> None:
    shell_name = os.path.basename(login_defaults()[1])
    sess = PtySession(emb.ssh_argv("-tt", "emb"), rows=24, cols=80)
    try:
        sess.send("stty size; tty; echo $0; echo $TERM; echo MARK-$((6*7))\r")
        m = sess.expect(r"(\d+) (\d+)\r\n(/dev/pts/\d+)\r\n(\S+)\r\n(\S+)\r\nMARK-42")
        assert m.group(1, 2) == (b"24", b"80")
        assert m.group(4).decode() == f"-{shell_name}"  # a login shell
        assert m.group(5) == os.environ.get("TERM", "dumb").encode()
        sess.resize(40, 132)
        time.sleep(0.5)
        sess.send("stty size; echo MARK-$((6*8))\r")
        m = sess.expect(r"(\d+) (\d+)\r\nMARK-48")
        assert m.group(1, 2) == (b"40", b"132")
        # ^C reaches the foreground job through the remote terminal's line discipline.
        sess.send("sleep 30; echo slept-$((1+1))\r")
        time.sleep(0.5)
        started = time.monotonic()
        sess.send("\x03")
        sess.send("echo after-$((2+2))\r")
        sess.expect(r"after-4", timeout=10)
        assert time.monotonic() - started < 5
        assert b"slept-2" not in sess.buf
        sess.send("exit 3\r")
        assert sess.close() == 3
    finally:
        if sess.proc.poll() is None:
            sess.proc.kill()


def test_signal_request_on_a_pty_reaches_the_foreground_job(emb: Emb) -> None:

    async def run() -> float:
        async with emb.asyncssh_connect() as conn:
            proc = await conn.create_process(term_type="xterm", term_size=(80, 24))
            proc.stdin.write("sleep 30; echo slept\n")
            await asyncio.sleep(0.7)
            started = time.monotonic()
            # The interactive shell runs sleep as its own job: only a signal to the
            # terminal's foreground group stops it (the shell itself ignores SIGINT).
            proc.send_signal("INT")
            proc.stdin.write("echo back-$((3+4))\n")
            out = ""
            while "back-7" not in out.replace("back-$((3+4))", ""):
                out += await asyncio.wait_for(proc.stdout.read(4096), 10)
            elapsed = time.monotonic() - started
            proc.stdin.write("exit\n")
            await asyncio.wait_for(proc.wait_closed(), 10)
            assert "\nslept" not in out  # the list was interrupted, not just waited out
            return elapsed

    assert asyncio.run(run()) < 5


def test_exec_on_a_pty(emb: Emb) -> None:
    sess = PtySession(emb.ssh_argv("-tt", "emb", "tty; stty size; echo $SSH_TTY; exit 4"), 30, 100)
    try:
        m = sess.expect(r"(/dev/pts/\d+)\r\n30 100\r\n(/dev/pts/\d+)")
        assert m.group(1) == m.group(2)
        assert sess.close() == 4
    finally:
        if sess.proc.poll() is None:
            sess.proc.kill()


# -- file transfer -----------------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True], ids=["sftp-mode", "scp-O"])
def test_scp_both_ways(emb: Emb, tmp_path: Path, legacy: bool) -> None:
    blob = tmp_path / "blob.bin"
    blob.write_bytes(os.urandom(5 << 20))
    scp = ["scp", "-F", str(emb.ssh_config), "-q", *(["-O"] if legacy else [])]
    name = f"scp-{int(legacy)}.bin"
    # A relative remote path lands in the session directory; exit 0 (see _SFTPServer.exit).
    res = subprocess.run([*scp, str(blob), f"emb:{name}"], capture_output=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert sha256(emb.cwd / name) == sha256(blob)
    back = tmp_path / "back.bin"
    res = subprocess.run([*scp, f"emb:{name}", str(back)], capture_output=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert sha256(back) == sha256(blob)
    # A missing remote file is an error, not a silent success.
    res = subprocess.run([*scp, "emb:no-such-file", str(back)], capture_output=True, timeout=30)
    assert res.returncode != 0


def test_sftp_batch(emb: Emb, tmp_path: Path) -> None:
    blob = tmp_path / "a.bin"
    blob.write_bytes(os.urandom(1 << 20))
    got = tmp_path / "got.bin"
    batch = tmp_path / "batch"
    batch.write_text(
        f"pwd\nmkdir sftpdir\nput {blob} sftpdir/a.bin\n"
        f"rename sftpdir/a.bin sftpdir/moved.bin\nls sftpdir\nget sftpdir/moved.bin {got}\n"
    )
    res = subprocess.run(
        ["sftp", "-F", str(emb.ssh_config), "-b", str(batch), "emb"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 0, res.stderr
    assert f"Remote working directory: {emb.cwd}" in res.stdout
    assert "moved.bin" in res.stdout
    assert sha256(got) == sha256(blob)
    assert sha256(emb.cwd / "sftpdir" / "moved.bin") == sha256(blob)
    assert not (emb.cwd / "sftpdir" / "a.bin").exists()


def test_rsync(emb: Emb, tmp_path: Path) -> None:
    src = rsync_tree(tmp_path / "tree", 2 << 20)
    rsh = f"ssh -F {emb.ssh_config}"
    res = subprocess.run(
        ["rsync", "-a", "-e", rsh, f"{src}/", "emb:rsynced/"], capture_output=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    for f in src.rglob("*"):
        if f.is_file():
            assert sha256(emb.cwd / "rsynced" / f.relative_to(src)) == sha256(f)
    res = subprocess.run(
        ["rsync", "-a", "--stats", "-e", rsh, f"{src}/", "emb:rsynced/"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Number of regular files transferred: 0" in res.stdout, res.stdout


def test_paramiko_exec_and_sftp(emb: Emb) -> None:
    import paramiko

    client = paramiko.SSHClient()
    client.load_host_keys(str(emb.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        "127.0.0.1",
        port=emb.port,
        username=emb.user,
        key_filename=str(emb.key),
        look_for_keys=False,
        allow_agent=False,
        timeout=15,
    )
    try:
        _, out, err = client.exec_command("echo pm-$((2+3)); echo e >&2; exit 4")
        assert out.read() == b"pm-5\n" and err.read() == b"e\n"
        assert out.channel.recv_exit_status() == 4
        data = os.urandom(300_000)
        sftp = client.open_sftp()
        with sftp.open("pm.bin", "wb") as fh:
            fh.write(data)
        with sftp.open("pm.bin", "rb") as fh:
            assert fh.read() == data
        assert sftp.normalize(".") == str(emb.cwd)
        sftp.close()
    finally:
        client.close()
    assert (emb.cwd / "pm.bin").read_bytes() == data


def test_other_subsystems_refused(emb: Emb) -> None:
    res = emb.ssh("-s", "emb", "no-such-subsystem")
    assert res.returncode != 0
    assert "subsystem request failed" in res.stderr


# -- forwarding --------------------------------------------------------------------------------


class LineServer:
    """A TCP (or Unix-socket) service on this machine that sends one line per connection."""

    def __init__(self, line: bytes, unix: Path | None = None) -> None:
        if unix is None:
            self.sock = socket.create_server(("127.0.0.1", 0))
            self.port = self.sock.getsockname()[1]
        else:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.bind(str(unix))
            self.sock.listen()
            self.port = 0
        self.line = line
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(self.line + b"\n")

    def close(self) -> None:
        self.sock.close()


def read_line(addr: tuple[str, int] | str, timeout: float = 10) -> bytes:
    family = socket.AF_UNIX if isinstance(addr, str) else socket.AF_INET
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.socket(family) as s:
                s.settimeout(5)
                s.connect(addr)
                return s.makefile("rb").readline().strip()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def listening_addresses(port: int) -> set[str]:
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            addr, hexport = local.rsplit(":", 1)
            if state == "0A" and int(hexport, 16) == port:
                found.add(addr)
    return found


def test_forwards_local_remote_dynamic(emb: Emb) -> None:
    svc = LineServer(b"from-service")
    lport, rport, dport = free_port(), free_port(), free_port()
    fwd = emb.forward(
        "-L", f"{lport}:127.0.0.1:{svc.port}", "-R", f"{rport}:127.0.0.1:{svc.port}",
        "-D", f"127.0.0.1:{dport}",
    )  # fmt: skip
    try:
        assert read_line(("127.0.0.1", lport)) == b"from-service"
        # -R: the server listens (loopback only, as asked with no bind address) and the
        # connection comes back through the client to the service.
        assert read_line(("127.0.0.1", rport)) == b"from-service"
        addrs = listening_addresses(rport)
        assert addrs and addrs <= {"0100007F", "00000000000000000000000001000000"}, addrs
        # -D: a SOCKS5 handshake by hand; the server side resolves and connects.
        script = socks5_script(dport, "127.0.0.1", svc.port)
        res = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=20
        )
        assert res.stdout.strip() == "from-service", res.stderr
        assert fwd.poll() is None
    finally:
        fwd.terminate()
        fwd.wait(10)
        svc.close()
    # The -R listener goes away with the connection.
    assert wait_until(lambda: not listening_addresses(rport), 10)


def test_unix_socket_forwards(emb: Emb, tmp_path: Path) -> None:
    svc_sock = tmp_path / "svc.sock"
    svc = LineServer(b"from-unix-service", unix=svc_sock)
    local_sock = tmp_path / "local.sock"
    remote_sock = tmp_path / "remote.sock"
    # A stale socket left by a dead forward is replaced (sshd's StreamLocalBindUnlink yes).
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(remote_sock))
    stale.close()
    fwd = emb.forward("-L", f"{local_sock}:{svc_sock}", "-R", f"{remote_sock}:{svc_sock}")
    try:
        assert read_line(str(local_sock)) == b"from-unix-service"
        assert read_line(str(remote_sock)) == b"from-unix-service"
    finally:
        fwd.terminate()
        fwd.wait(10)
        svc.close()


# -- refusals ----------------------------------------------------------------------------------


def test_wrong_key_refused_and_logged_by_fingerprint(emb: Emb) -> None:
    res = emb.ssh_as(emb.wrong_key, emb.user)
    assert res.returncode == 255
    # Only publickey is offered: no password or keyboard-interactive to fall back on.
    assert "Permission denied (publickey)" in res.stderr
    wrong_pub = Path(f"{emb.wrong_key}.pub").read_text()
    fp = fingerprint(wrong_pub)
    assert wait_until(lambda: f"Refused publickey for {emb.user}" in emb.log(), 5)
    assert fp in emb.log()
    good_pub = Path(f"{emb.key}.pub").read_text()
    assert f"Accepted publickey for {emb.user}" in emb.log()
    assert fingerprint(good_pub) in emb.log()
    # Fingerprints only: no key material in the log.
    for pub in (wrong_pub, good_pub):
        assert pub.split()[1] not in emb.log()


def test_wrong_user_refused(emb: Emb) -> None:
    res = emb.ssh_as(emb.key, "hc-nobody")
    assert res.returncode == 255
    assert "Permission denied" in res.stderr
    assert wait_until(lambda: "Refused user hc-nobody" in emb.log(), 5)


def test_password_auth_never_offered(emb: Emb) -> None:
    res = emb.ssh_as(
        emb.key,
        emb.user,
        "-o",
        "PreferredAuthentications=password,keyboard-interactive",
        "-o",
        "PubkeyAuthentication=no",
    )
    assert res.returncode == 255
    assert "Permission denied (publickey)" in res.stderr


# -- lifecycle ---------------------------------------------------------------------------------


def test_port_taken_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    need_tools()
    monkeypatch.setenv("HANDY_COLAB_STATE_DIR", str(tmp_path / "state"))
    key = keygen(tmp_path / "laptop")
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        folder = make_folder(tmp_path, Path(f"{key}.pub"), {"port": port})
        cfg = load_config(folder)
        rd = RuntimeDir.for_name(cfg.name).ensure()
        server = EmbeddedServer(cfg, rd, ensure_host_key(folder))
        with pytest.raises(ServerError) as err:
            server.prepare()
        assert "'server.port'" in str(err.value) and "Fix:" in str(err.value)
    # Taken between prepare() and start(): the server's own bind error, same advice.
    server = EmbeddedServer(cfg, rd, ensure_host_key(folder))
    server.prepare()
    with socket.create_server(("127.0.0.1", server.port)):
        with pytest.raises(ServerError) as err:
            server.start(timeout=20)
        assert "'server.port'" in str(err.value) and "Fix:" in str(err.value)
    assert not server.alive()


def test_sigterm_leaves_no_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    need_tools()
    monkeypatch.setenv("HANDY_COLAB_STATE_DIR", str(tmp_path / "state"))
    e = start_server(tmp_path, "emb-stop")
    marker = f"{7000 + os.getpid() % 1000}.{time.time_ns() % 10**6:06d}"
    clients: list[subprocess.Popen[bytes]] = []
    pty_sess = None
    try:
        quiet: dict[str, Any] = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        # A plain command, one that ignores SIGHUP, a double-forked daemon, and a PTY
        # shell with a background job: all must be gone after stop().
        clients.append(subprocess.Popen(e.ssh_argv("emb", f"sleep {marker}"), **quiet))
        clients.append(subprocess.Popen(e.ssh_argv("emb", f"trap '' HUP; sleep {marker}"), **quiet))
        clients.append(
            subprocess.Popen(
                e.ssh_argv("emb", f"setsid sh -c 'sleep {marker}' </dev/null >/dev/null 2>&1 &"),
                **quiet,
            )
        )
        pty_sess = PtySession(e.ssh_argv("-tt", "emb"))
        pty_sess.send(f"sleep {marker} & echo started-$((3*3))\r")
        pty_sess.expect("started-9")
        assert wait_until(lambda: len(marker_pids(marker)) >= 4, 10), marker_pids(marker)
        server_pid = e.server.pid
        assert server_pid is not None
        tree = descendants(server_pid)
        assert set(marker_pids(marker)) <= set(tree)
        # The server's own shutdown, without EmbeddedServer.stop()'s safety net: SIGTERM,
        # exit 0 well inside the 3 s the parent waits before SIGKILL.
        assert e.server.proc is not None
        started = time.monotonic()
        e.server.proc.proc.send_signal(signal.SIGTERM)
        assert e.server.proc.proc.wait(3) == 0
        assert time.monotonic() - started < 2.5
        survivors = [pid for pid, at in tree.items() if start_time(pid) == at]
        assert survivors == [], survivors
        assert "Killed" in e.log() and "ended: killed by SIGHUP" in e.log()
    finally:
        e.server.stop()
        for c in clients:
            try:
                c.wait(10)
            except subprocess.TimeoutExpired:
                c.kill()
        if pty_sess is not None:
            if pty_sess.proc.poll() is None:
                pty_sess.proc.kill()
            pty_sess.close()
    assert marker_pids(marker) == []
    survivors = [pid for pid, started_at in tree.items() if start_time(pid) == started_at]
    assert survivors == [], survivors
    assert start_time(server_pid) is None
    # Every ssh client saw its session end: none hangs on a half-dead server.
    assert all(c.returncode is not None for c in clients)
