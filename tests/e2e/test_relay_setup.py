"""relay-setup for real: the runtime's relay key holds its own tunnel and nothing else.

For each mode the relay runs a stock-like sshd (no forwarding or keepalive settings of its
own, Debian's X11/sftp lines) whose config Includes a temporary drop-in folder;
`handy-colab relay-setup --apply` runs as root in the relay namespace, the relay is reloaded
with the command it prints, `handy-colab up` and the laptop's `ssh` go through the new
account, and then real clients in the runtime namespace try, with the same relay key,
everything the account must not do.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import REMOTE_PORT, Runtime, _etc_ssh_digest, finish, make_runtime, need_rig
from tests.rig import RELAY_IP, RELAY_USER, wait_until

ACCOUNT = "hctunnel"  # made by relay-setup on first use, reused afterwards
# The root-owned keys folder and the accounts' roots (sshd wants them outside /tmp): this
# process's own, removed with the rig.
SETUP_BASE = Path(f"/var/lib/hc-relay-test-{os.getpid()}")
KEYS_DIR = SETUP_BASE / "keys"
DIR_ARGS = ("--keys-dir", str(KEYS_DIR), "--chroot-dir", str(SETUP_BASE / "root"))


@dataclass
class Locked:
    rt: Runtime
    mode: str
    confdir: Path
    main: Path
    setup_stdout: str
    probe_config: Path

    @property
    def log(self) -> Path:
        return self.rt.rig.work / "relay" / "sshd.log"

    def probe(self, *args: str, timeout: float = 30, **kw: Any) -> Any:
        """ssh from the runtime namespace as ACCOUNT, with the runtime's relay key."""
        return self.rt.rig.run(
            "rt", ["ssh", "-F", str(self.probe_config), *args], timeout=timeout, **kw
        )

    def forward(self, spec: str) -> Any:
        """``ssh -N -R spec`` that exits when the relay refuses the forward."""
        return self.probe("-N", "-o", "ExitOnForwardFailure=yes", "-R", spec, "probe")


def _listening(log: Path) -> int:
    return log.read_text(errors="replace").count("Server listening on")


@contextlib.contextmanager
def relay_setup_runtime(tmp: Path, mode: str) -> Iterator[Runtime]:
    """A rig with its runtime not yet up, for a relay that relay-setup will lock down. On the
    way out the rig must be empty; the account stays (acceptable in CI, reused next time),
    the test keys do not."""
    rt = make_runtime(tmp, mode, start=False)
    try:
        yield rt
    finally:
        try:
            finish(rt)
        finally:
            shutil.rmtree(SETUP_BASE, ignore_errors=True)


@pytest.fixture(scope="module", params=["public", "private"])
def locked(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Locked]:
    need_rig()
    mode: str = request.param
    tmp = tmp_path_factory.mktemp(f"relay-setup-{mode}")
    with relay_setup_runtime(tmp, mode) as rt:
        yield _lock_down(rt, mode, tmp)
    assert _etc_ssh_digest() == rt.extra["etc_ssh"], "the system's /etc/ssh was changed"


def _lock_down(rt: Runtime, mode: str, tmp: Path) -> Locked:
    rig = rt.rig
    confdir = tmp / "sshd_config.d"
    confdir.mkdir()
    host_key = rig.start_relay([], include_dir=confdir, stock=True)
    main = rig.work / "relay" / "sshd_config"
    args = ["relay-setup", "--account", ACCOUNT, "--key", f"{rt.relay_key}.pub", "--mode", mode]
    if mode == "public":
        args += ["--remote-port", str(REMOTE_PORT)]
    else:
        args += ["--socket-path", rig.relay_socket, "--laptop-key", f"{rt.laptop_key}.pub"]
    args += ["--apply", "--sshd-config-dir", str(confdir), "--sshd-config", str(main), *DIR_ARGS]
    res = rig.handy("relay", *args)
    assert res.returncode == 0, res.stderr + res.stdout
    assert res.stderr == ""
    # Reload with exactly the command relay-setup printed.
    reload_cmd = res.stdout.split("Now reload sshd (open sessions stay up): ", 1)[1].strip()
    assert reload_cmd == f"kill -HUP $(cat {rig.work / 'relay' / 'sshd.pid'})"
    before = _listening(rig.work / "relay" / "sshd.log")
    subprocess.run(["sh", "-c", reload_cmd], check=True)
    assert wait_until(lambda: _listening(rig.work / "relay" / "sshd.log") > before, 10)
    rig.wait_tcp("laptop", RELAY_IP, 22)

    # The runtime's config names the new account (the seed format in public mode).
    cfg_path = rt.folder / "user_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.setdefault("relay", {})["user"] = ACCOUNT
    cfg_path.write_text(json.dumps(cfg, indent=2))

    known = tmp / "probe_known_hosts"
    known.write_text(f"{RELAY_IP} {host_key}\n")
    probe = tmp / "probe_config"
    probe.write_text(
        "Host probe\n"
        f"    HostName {RELAY_IP}\n"
        f"    User {ACCOUNT}\n"
        f"    IdentityFile {rt.relay_key}\n"
        "    IdentitiesOnly yes\n"
        "    BatchMode yes\n"
        "    StrictHostKeyChecking yes\n"
        f"    UserKnownHostsFile {known}\n"
        "    GlobalKnownHostsFile /dev/null\n"
        "    ConnectTimeout 10\n"
        "    ControlMaster no\n"
        "    ControlPath none\n"
    )
    return Locked(rt, mode, confdir, main, res.stdout, probe)


@pytest.fixture(scope="module")
def up(locked: Locked) -> Locked:
    """The runtime brought up through the locked-down account, the laptop connected."""
    res = locked.rt.up()
    assert res.returncode == 0, res.stderr + res.stdout
    res = locked.rt.connect()
    assert res.returncode == 0, res.stderr + res.stdout
    return locked


def refused_session(res: Any) -> None:
    """Authenticated with the relay key, yet the session was refused: nothing ran."""
    assert res.returncode == 255, res.stderr
    assert 'Authenticated to 10.99.0.1 ([10.99.0.1]:22) using "publickey"' in res.stderr
    assert "channel 0: open failed" in res.stderr
    assert "uid=" not in res.stdout


# -- what the account is for ---------------------------------------------------------------
def test_tunnel_and_laptop_ssh_work(up: Locked) -> None:
    rt = up.rt
    res = rt.ssh("echo via-$((6*7)) as $(id -un)")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("via-42 as ")
    assert rt.rig.handy("rt", "status").returncode == 0
    sessions = up.log.read_text()
    assert f"Accepted publickey for {ACCOUNT}" in sessions
    assert f"Accepted publickey for {RELAY_USER}" not in sessions


def test_applied_files(up: Locked) -> None:
    dropin = up.confdir / f"handy-colab-{ACCOUNT}.conf"
    assert sorted(p.name for p in up.confdir.iterdir()) == [dropin.name]
    assert "\nMatch User hctunnel\n" in dropin.read_text()
    assert pwd.getpwnam(ACCOUNT).pw_shell == "/usr/sbin/nologin"
    # The keys are root's, out of the account's reach.
    ak = KEYS_DIR / ACCOUNT
    st = ak.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (0, 0o644)
    lines = ak.read_text().splitlines()
    blob = " ".join(Path(f"{up.rt.relay_key}.pub").read_text().split()[:2])
    want = 2 if up.mode == "private" else 1
    assert len([ln for ln in lines if ln.endswith(" handy-colab:colab")]) == want
    opts = (
        f'restrict,port-forwarding,permitlisten="{REMOTE_PORT}"'
        if up.mode == "public"
        else f'restrict,port-forwarding,permitopen="[{up.rt.rig.relay_socket}]:*"'
    )
    assert any(ln.startswith(f"{opts} {blob} ") for ln in lines), lines


def test_sshd_applies_the_block_to_the_account_only(up: Locked) -> None:
    def effective(user: str) -> dict[str, str]:
        res = up.rt.rig.run(
            "relay",
            [
                "/usr/sbin/sshd",
                "-T",
                "-f",
                str(up.main),
                "-C",
                f"user={user},host=x,addr=10.99.0.2",
            ],
            check=True,
        )
        return dict(line.split(" ", 1) for line in res.stdout.splitlines() if " " in line)

    mine, other = effective(ACCOUNT), effective(RELAY_USER)
    for keyword, value in {
        "maxsessions": "0",
        "permittty": "no",
        "allowagentforwarding": "no",
        "x11forwarding": "no",
        "forcecommand": "/usr/sbin/nologin",
        "clientaliveinterval": "5",
        "clientalivecountmax": "2",
    }.items():
        assert mine[keyword] == value, keyword
    assert (other["maxsessions"], other["x11forwarding"], other["forcecommand"]) == (
        "100",
        "yes",
        "none",
    )
    if up.mode == "public":
        assert mine["permitlisten"] == f"*:{REMOTE_PORT}" and mine["gatewayports"] == "yes"
    else:
        assert mine["permitlisten"] == "none" and mine["streamlocalbindunlink"] == "yes"
        assert other["streamlocalbindunlink"] == "no"


def test_rerun_changes_nothing(up: Locked) -> None:
    ak = KEYS_DIR / ACCOUNT
    before = ak.read_text()
    rig = up.rt.rig
    cmd = ["relay-setup", "--account", ACCOUNT, "--key", f"{up.rt.relay_key}.pub"]
    cmd += ["--mode", up.mode]
    if up.mode == "public":
        cmd += ["--remote-port", str(REMOTE_PORT)]
    else:
        cmd += ["--socket-path", rig.relay_socket, "--laptop-key", f"{up.rt.laptop_key}.pub"]
    cmd += ["--apply", "--sshd-config-dir", str(up.confdir), "--sshd-config", str(up.main)]
    cmd += DIR_ARGS
    res = rig.handy("relay", *cmd)
    assert res.returncode == 0, res.stderr
    assert "exists (a relay-setup account), kept" in res.stdout
    assert "backup" not in res.stdout
    assert ak.read_text() == before
    assert len(list(up.confdir.iterdir())) == 1


# -- what the same key cannot do ------------------------------------------------------------
def test_no_command(up: Locked) -> None:
    marker = Path("/tmp") / f"hc-relay-setup-{os.getpid()}-{up.mode}"
    res = up.probe("-v", "probe", f"touch {marker}; id")
    refused_session(res)
    assert not marker.exists()


def test_no_shell_and_no_pty(up: Locked) -> None:
    res = up.probe("-v", "-tt", "probe", input="id\nexit\n")
    refused_session(res)
    assert "/dev/pts" not in res.stdout


def test_no_sftp(up: Locked) -> None:
    refused_session(up.probe("-v", "-s", "probe", "sftp", input=""))


def test_no_agent_forwarding(up: Locked) -> None:
    """With an agent holding a key and -A, no agent socket reaches the relay."""
    uid = pwd.getpwnam(ACCOUNT).pw_uid

    def agent_dirs() -> set[str]:
        return {str(p) for p in Path("/tmp").glob("ssh-*") if p.stat().st_uid == uid}

    before = agent_dirs()
    script = (
        'eval "$(ssh-agent -s)" >/dev/null; ssh-add -q "$KEY"; '
        "ssh -F \"$CFG\" -v -A probe 'echo SOCK=$SSH_AUTH_SOCK'; rc=$?; "
        "ssh-agent -k >/dev/null; exit $rc"
    )
    env = dict(up.rt.rig.env(), KEY=str(up.rt.laptop_key), CFG=str(up.probe_config))
    res = up.rt.rig.run("rt", ["sh", "-c", script], env=env, timeout=30)
    refused_session(res)
    assert "SOCK=" not in res.stdout
    assert "Requesting authentication agent forwarding" not in res.stderr
    assert agent_dirs() == before


def test_no_other_listen_port(up: Locked) -> None:
    other = REMOTE_PORT + 1
    for spec in (f"{other}:127.0.0.1:22", f"0.0.0.0:{other}:127.0.0.1:22"):
        res = up.forward(spec)
        assert res.returncode == 255, res.stderr
        assert f"remote port forwarding failed for listen port {other}" in res.stderr
    if up.mode == "private":
        # No TCP listener at all in private mode, not even the public mode's port.
        res = up.forward(f"{REMOTE_PORT}:127.0.0.1:22")
        assert res.returncode == 255
        assert f"remote port forwarding failed for listen port {REMOTE_PORT}" in res.stderr


def test_no_connections_out_of_the_relay(up: Locked) -> None:
    res = up.probe("-W", f"{RELAY_IP}:22", "probe", input="")
    assert res.returncode == 255
    assert "administratively prohibited" in res.stderr
    assert "stdio forwarding failed" in res.stderr


def test_unix_sockets(up: Locked) -> None:
    if up.mode == "public":
        path = f"/tmp/hc-relay-setup-{os.getpid()}.sock"
        res = up.forward(f"{path}:127.0.0.1:22")
        assert res.returncode == 255
        assert f"remote port forwarding failed for listen path {path}" in res.stderr
        assert not Path(path).exists()
        return
    # Private: -L reaches the runtime's socket and no other, even one anybody may open.
    rig = up.rt.rig
    other = Path(f"/tmp/hc-relay-setup-{os.getpid()}-other.sock")
    code = (
        "import os,socket\n"
        f"s=socket.socket(socket.AF_UNIX);s.bind({str(other)!r});os.chmod({str(other)!r},0o777)\n"
        "s.listen()\n"
        "while True:\n c,_=s.accept();c.sendall(b'OTHER\\n');c.close()\n"
    )
    server = rig.popen("relay", ["python3", "-c", code])
    try:
        assert wait_until(other.exists, 10)
        assert _through_local_forward(up, str(other)) == ""
        assert _through_local_forward(up, rig.relay_socket).startswith("SSH-2.0-")
    finally:
        server.kill()
        server.wait()
        other.unlink(missing_ok=True)


def _through_local_forward(up: Locked, remote: str) -> str:
    """What a client reads through `ssh -N -L local.sock:remote probe` (the first line)."""
    code = (
        "import socket,subprocess,sys,tempfile,time,os\n"
        "d=tempfile.mkdtemp();loc=os.path.join(d,'l.sock')\n"
        f"p=subprocess.Popen(['ssh','-F',{str(up.probe_config)!r},'-N','-L',loc+':'+{remote!r},"
        "'probe'])\n"
        "t=time.time()+10\n"
        "while not os.path.exists(loc) and time.time()<t: time.sleep(0.02)\n"
        "s=socket.socket(socket.AF_UNIX);s.settimeout(10);s.connect(loc)\n"
        "data=s.recv(100)\n"
        "p.terminate();p.wait();os.unlink(loc);os.rmdir(d)\n"
        "sys.stdout.write(data.decode())\n"
    )
    res = up.rt.rig.run("rt", ["python3", "-c", code], timeout=30)
    assert res.returncode == 0, res.stderr
    return str(res.stdout)


def test_dead_client_dropped_in_about_30s(up: Locked) -> None:
    """ClientAlive in the Match block: a frozen client of the account is dropped in ~30 s."""
    log = up.log
    needle = f"Timeout, client not responding from user {ACCOUNT}"
    seen = log.read_text().count(needle)
    accepted = log.read_text().count(f"Accepted publickey for {ACCOUNT}")
    proc = up.rt.rig.popen(
        "rt",
        ["ssh", "-F", str(up.probe_config), "-N", "probe"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_until(
            lambda: log.read_text().count(f"Accepted publickey for {ACCOUNT}") > accepted, 10
        )
        time.sleep(0.5)
        proc.send_signal(signal.SIGSTOP)  # `ip netns exec` execs ssh: this is the client
        start = time.monotonic()
        assert wait_until(lambda: log.read_text().count(needle) > seen, 60, interval=0.5)
        took = time.monotonic() - start
        assert took < 40, took
    finally:
        proc.send_signal(signal.SIGCONT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
    assert proc.returncode == 255


def _binds(up: Locked, path: str) -> bool:
    """Whether the relay lets the runtime's relay key hold ``-R path`` (kept 3 s, then
    ended: a refused one exits at once)."""
    proc = up.rt.rig.popen(
        "rt",
        [
            *("ssh", "-F", str(up.probe_config), "-N", "-o", "ExitOnForwardFailure=yes"),
            *("-R", f"{path}:127.0.0.1:22", "probe"),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        proc.wait(3)
    except subprocess.TimeoutExpired:
        return True
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(10)
        assert proc.stderr is not None
        proc.stderr.close()
    return False


def test_a_leaked_relay_key_binds_nothing_but_its_own_sockets(up: Locked) -> None:
    """Private mode's account in its own root: -R over its authorized_keys, over another
    runtime's socket, or anywhere but its /tmp fails or lands in its own /tmp; the files
    are as they were and the laptop still reaches the pinned runtime."""
    if up.mode == "public":
        # No Unix-socket forward at all (test_unix_sockets); the keys are root's all the same.
        assert not _binds(up, str(KEYS_DIR / ACCOUNT))
        return
    ak = KEYS_DIR / ACCOUNT
    keys_before = ak.read_bytes()
    home = Path(pwd.getpwnam(ACCOUNT).pw_dir)
    old_keys = home / ".ssh" / "authorized_keys"  # what an older relay-setup wrote, if any

    def state(p: Path) -> tuple[int, int] | None:
        return (p.lstat().st_ino, p.lstat().st_mode) if os.path.lexists(p) else None

    old_before = state(old_keys)
    # Another runtime's socket, as the relay's /tmp holds it (another account's, or none).
    other = Path(f"/tmp/hc-relay-setup-{os.getpid()}-victim.sock")
    code = (
        "import os,socket\n"
        f"s=socket.socket(socket.AF_UNIX);s.bind({str(other)!r});os.chmod({str(other)!r},0o777)\n"
        "s.listen()\n"
        "while True:\n c,_=s.accept();c.sendall(b'VICTIM\\n');c.close()\n"
    )
    server = up.rt.rig.popen("relay", ["python3", "-c", code])
    try:
        assert wait_until(other.exists, 10)
        inode = other.stat().st_ino
        for path in (str(ak), str(old_keys), "/evil.sock", "/var/x.sock"):
            assert not _binds(up, path), path
        # /tmp is the account's own: the bind lands there, never on the relay's /tmp.
        assert _binds(up, str(other))
        assert other.stat().st_ino == inode
        own = SETUP_BASE / "root" / ACCOUNT / "tmp"
        assert (own / other.name).is_socket() or not (own / other.name).exists()
        assert ak.read_bytes() == keys_before and ak.stat().st_uid == 0
        assert state(old_keys) == old_before
        assert not Path("/evil.sock").exists() and not Path("/var/x.sock").exists()
        # The victim still answers, and the laptop still reaches the pinned runtime.
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(other))
            assert s.recv(16) == b"VICTIM\n"
        res = up.rt.ssh("echo", "still-here")
        assert res.returncode == 0 and res.stdout == "still-here\n", res.stderr
    finally:
        server.kill()
        server.wait()
        other.unlink(missing_ok=True)
