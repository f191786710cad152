"""The embedded (asyncssh) reverse-tunnel client, on the NAT rig against a stock OpenSSH relay.

The runtime's `up` runs with a PATH that has no `ssh`, `scp`, `sftp` or `ssh-*` at all, so
everything here is the embedded client's doing (the laptop keeps its real OpenSSH). Each
failure is also run with the OpenSSH backend on the same rig: both must print the very same
one line.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import REMOTE_PORT, Runtime, finish, make_runtime, need_rig
from tests.e2e.test_recovery import assert_transfer_ok, reconnected, status, time_to_ssh
from tests.rig import RELAY_IP, RELAY_USER, keygen, wait_until

NO_SSH = re.compile(r"^(ssh|scp|sftp|ssh-.*)$")


@pytest.fixture(scope="module")
def no_ssh_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A PATH like the system's, minus every OpenSSH client program."""
    need_rig()
    bin_dir = tmp_path_factory.mktemp("bin-without-ssh")
    for folder in ("/usr/local/bin", "/usr/bin", "/usr/sbin"):
        for exe in sorted(Path(folder).iterdir()) if Path(folder).is_dir() else []:
            link = bin_dir / exe.name
            if not NO_SSH.match(exe.name) and not link.exists():
                link.symlink_to(exe)
    path = str(bin_dir)
    assert shutil.which("ssh", path=path) is None
    assert shutil.which("ip", path=path) is not None
    return path


def handy_exe() -> str:
    # Not the pyenv shim on PATH: it needs pyenv itself, which the stripped PATH lacks.
    beside = Path(sys.executable).parent / "handy-colab"
    return str(beside) if beside.exists() else shutil.which("handy-colab") or "handy-colab"


def up(rt: Runtime, path: str | None, *args: str) -> Any:
    """`handy-colab up` on the runtime; ``path`` replaces PATH (None: the normal one)."""
    env = rt.rig.env()
    if path is not None:
        env["PATH"] = path
    return rt.rig.run(
        "rt", [handy_exe(), "up", str(rt.folder), "--timeout", "40", *args], env=env, timeout=90
    )


def set_relay(rt: Runtime, **fields: Any) -> None:
    path = rt.folder / "user_config.json"
    cfg = json.loads(path.read_text())
    relay = cfg.setdefault("relay", {})
    for key, value in fields.items():
        if value is None:
            relay.pop(key, None)
        else:
            relay[key] = value
    path.write_text(json.dumps(cfg, indent=2))


def down(rt: Runtime) -> None:
    assert rt.rig.handy("rt", "down").returncode == 0
    assert rt.rig.ns_pids("rt") == []


def log_time(line: str) -> float:
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def embedded_runtime(tmp: Path, mode: str, path: str, client: str) -> Iterator[Runtime]:
    rt = make_runtime(tmp, mode, start=False)
    try:
        set_relay(rt, client=client)
        res = up(rt, path)
        assert res.returncode == 0, res.stderr + res.stdout
        res = rt.connect()
        assert res.returncode == 0, res.stderr
        yield rt
    finally:
        finish(rt)


@pytest.fixture(scope="module")
def public_rt(tmp_path_factory: pytest.TempPathFactory, no_ssh_path: str) -> Iterator[Runtime]:
    # The seed format (no relay host key: trust on first use) plus "relay": {"client": ...}.
    yield from embedded_runtime(
        tmp_path_factory.mktemp("emb-public"), "public", no_ssh_path, "embedded"
    )


@pytest.fixture(scope="module")
def private_rt(tmp_path_factory: pytest.TempPathFactory, no_ssh_path: str) -> Iterator[Runtime]:
    # Pinned relay host key; "auto" must pick the embedded client when there is no ssh.
    yield from embedded_runtime(
        tmp_path_factory.mktemp("emb-private"), "private", no_ssh_path, "auto"
    )


# -- public mode: the path, the pin, recovery ------------------------------------------------


def test_public_reaches_the_runtime_without_ssh_binary(public_rt: Runtime) -> None:
    st = status(public_rt)
    assert st["tunnel"]["kind"] == "embedded", st
    assert st["healthy"], st
    pid = st["tunnel"]["pid"]
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert b"handy_colab.tunnels.asyncssh_client" in cmdline
    res = public_rt.ssh("echo via-embedded; exit 3")
    assert (res.returncode, res.stdout) == (3, "via-embedded\n"), res.stderr
    assert public_rt.ssh("true").returncode == 0
    # A stock OpenSSH relay must get AES-GCM, not asyncssh's default chacha20-poly1305 (which
    # costs the client ~1.6x the CPU per byte: docs/embedded.md).
    logs = public_rt.rig.handy("rt", "logs", "-n", "300").stdout
    assert "tunnel: kex: cipher: aes128-gcm@openssh.com compression: none" in logs, logs


def test_tofu_pin_is_what_openssh_records(public_rt: Runtime, tmp_path: Path) -> None:
    """Switching backends keeps the pin: the line is byte for byte what ssh accept-new writes."""
    recorded = (public_rt.folder / "relay_known_hosts").read_text()
    assert recorded == f"{RELAY_IP} {public_rt.relay_host_key}\n"
    theirs = tmp_path / "openssh_known_hosts"
    res = public_rt.rig.run(
        "rt",
        [
            "ssh",
            "-i",
            str(public_rt.relay_key),
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "StrictHostKeyChecking=accept-new",
            "-o",
            f"UserKnownHostsFile={theirs}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "HashKnownHosts=no",
            "-o",
            "CheckHostIP=no",
            f"{RELAY_USER}@{RELAY_IP}",
            "true",
        ],
    )
    assert res.returncode == 0, res.stderr
    assert theirs.read_text() == recorded


def assert_tunnel_child_sigkill_recovers(rt: Runtime, tmp_path: Path) -> None:
    before = status(rt)["tunnel"]
    os.kill(before["pid"], signal.SIGKILL)
    took = time_to_ssh(rt, 20)
    assert took < 10, status(rt)
    assert status(rt)["tunnel"]["reconnects"] == before["reconnects"] + 1
    assert_transfer_ok(rt, tmp_path)


def test_public_tunnel_child_sigkill(public_rt: Runtime, tmp_path: Path) -> None:
    assert_tunnel_child_sigkill_recovers(public_rt, tmp_path)


def test_public_relay_sshd_restarts(public_rt: Runtime, tmp_path: Path) -> None:
    reconnects = status(public_rt)["tunnel"]["reconnects"]
    public_rt.rig.restart_relay(down_seconds=3)
    took = time_to_ssh(public_rt, 30)
    assert took < 15, status(public_rt)
    assert status(public_rt)["tunnel"]["reconnects"] > reconnects
    assert_transfer_ok(public_rt, tmp_path)


def test_public_silent_drop_20s_keepalive(public_rt: Runtime, tmp_path: Path) -> None:
    """No FIN, no RST for 20 s: the client's own keepalive (5 s x 3) must end it."""
    rt = public_rt
    st = status(rt)["tunnel"]
    # Start right after a health check, so the supervisor's next two checks (10 s + 8 s
    # timeout, 2 s, 8 s) cannot end the client before its keepalive does.
    last = st.get("last_check")
    assert wait_until(lambda: status(rt)["tunnel"].get("last_check") != last, 15, 0.1)
    rt.rig.block_runtime()
    blocked_at = time.time()
    try:
        time.sleep(20)
    finally:
        rt.rig.unblock_runtime()
    reconnected(rt, st["reconnects"], 60)
    assert time_to_ssh(rt, 20) < 20
    logs = rt.rig.handy("rt", "logs", "-n", "300").stdout.splitlines()
    timeouts = [ln for ln in logs if f"tunnel: Timeout, server {RELAY_IP} not responding." in ln]
    assert timeouts, "\n".join(logs[-40:])
    after = log_time(timeouts[-1]) - blocked_at
    assert 14 <= after <= 27, after  # 3 unanswered keepalives 5 s apart, then the 4th tick
    assert_transfer_ok(rt, tmp_path)


def test_public_down_leaves_nothing(public_rt: Runtime) -> None:
    down(public_rt)
    # The client closed its connection on SIGTERM: the relay lets go of the port at once.
    probe = f"import socket; socket.create_connection(('{RELAY_IP}', {REMOTE_PORT}), 2)"
    assert wait_until(
        lambda: public_rt.rig.run("laptop", ["python3", "-c", probe]).returncode != 0, 5
    )


# -- private mode ----------------------------------------------------------------------------


def test_private_reaches_the_runtime_and_checks_without_ssh(private_rt: Runtime) -> None:
    rt = private_rt
    st = status(rt)
    assert st["tunnel"]["kind"] == "embedded", st
    assert rt.ssh("echo private").stdout == "private\n"
    # The periodic end-to-end check (asyncssh to the relay, then the socket) passes.
    assert wait_until(lambda: status(rt)["tunnel"].get("last_check") is not None, 15, 0.25)
    tunnel = status(rt)["tunnel"]
    assert tunnel["checks_failed"] == 0 and tunnel["state"] == "up", tunnel
    # The pinned key was used, nothing was recorded into the folder.
    assert not (rt.folder / "relay_known_hosts").exists()


def test_private_tunnel_child_sigkill(private_rt: Runtime, tmp_path: Path) -> None:
    assert_tunnel_child_sigkill_recovers(private_rt, tmp_path)


def test_private_down_leaves_nothing(private_rt: Runtime) -> None:
    down(private_rt)


# -- failures: the same one line as the OpenSSH backend --------------------------------------


def same_failure(rt: Runtime, path: str, *needles: str) -> str:
    """Fail `up` with each backend; both must print the same single line and leave nothing."""
    lines = {}
    for kind, env_path in (("openssh", None), ("embedded", path)):
        res = up(rt, env_path, "--relay-client", kind)
        err = res.stderr.strip()
        assert res.returncode != 0, (kind, res.stdout)
        assert len(err.splitlines()) == 1 and "Traceback" not in err, (kind, err)
        assert "Fix:" in err, (kind, err)
        assert rt.rig.ns_pids("rt") == [], f"{kind}: up left processes behind"
        assert rt.rig.handy("rt", "status").returncode != 0
        lines[kind] = err
    assert lines["embedded"] == lines["openssh"]
    for needle in needles:
        assert needle in lines["embedded"], lines["embedded"]
    return lines["embedded"]


@pytest.fixture(scope="module")
def fail_rt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    need_rig()
    rt = make_runtime(tmp_path_factory.mktemp("emb-fail"), "public", start=False)
    try:
        yield rt
    finally:
        finish(rt)


@pytest.fixture
def relay_as_made(fail_rt: Runtime) -> Iterator[Runtime]:
    """The failure rig's relay and config are put back after each test."""
    yield fail_rt
    fail_rt.rig.handy("rt", "down")
    set_relay(fail_rt, host=None, port=None)
    fail_rt.rig.start_relay([fail_rt.relay_key, fail_rt.laptop_key])


def test_key_refused(relay_as_made: Runtime, no_ssh_path: str) -> None:
    rt = relay_as_made
    rt.rig.start_relay([rt.laptop_key])
    same_failure(rt, no_ssh_path, "refused the key", "hcrelay.first.pem", "authorized_keys")


def test_port_taken_by_another_tunnel(relay_as_made: Runtime, no_ssh_path: str) -> None:
    rt = relay_as_made
    # A stale tunnel of someone else's holds the port on every address.
    holder = rt.rig.popen(
        "laptop",
        [
            "ssh",
            "-i",
            str(rt.laptop_key),
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-N",
            "-R",
            f"{REMOTE_PORT}:127.0.0.1:9",
            f"{RELAY_USER}@{RELAY_IP}",
        ],
    )
    try:
        rt.rig.wait_tcp("laptop", RELAY_IP, REMOTE_PORT)
        same_failure(rt, no_ssh_path, f"refused to listen on port {REMOTE_PORT}", "taken")
    finally:
        holder.kill()
        holder.wait(5)


def test_relay_refuses_connections(relay_as_made: Runtime, no_ssh_path: str) -> None:
    relay_as_made.rig.stop_relay()
    same_failure(relay_as_made, no_ssh_path, "unreachable (connection refused)")


def test_relay_blackholed(relay_as_made: Runtime, no_ssh_path: str) -> None:
    rt = relay_as_made
    rule = ["FORWARD", "-d", RELAY_IP, "-j", "DROP"]
    rt.rig.run("router", ["iptables", "-I", *rule], check=True)
    try:
        start = time.monotonic()
        same_failure(rt, no_ssh_path, "unreachable (connection timed out)")
        assert time.monotonic() - start < 40  # connect timeout 5 s, not TCP's minutes
    finally:
        rt.rig.run("router", ["iptables", "-D", *rule], check=True)


@contextlib.contextmanager
def fake_relay(rt: Runtime, on_accept: str) -> Iterator[None]:
    """The runtime's relay made a TCP listener on 2200 that runs ``on_accept`` (Python, with
    the accepted ``(conn, addr)`` as ``c``) for each connection, until the block ends."""
    # SO_REUSEADDR: the test that closes at hello runs first and leaves its connections in
    # TIME_WAIT on 2200 for a minute; a plain bind then fails (seen in a run).
    code = (
        "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
        "s.bind(('0.0.0.0',2200))\ns.listen()\nheld=[]\n"
        f"while True:\n c=s.accept()\n {on_accept}"
    )
    listener = rt.rig.popen("relay", ["python3", "-c", code])
    try:
        rt.rig.wait_tcp("relay", RELAY_IP, 2200)
        set_relay(rt, port=2200)
        yield
    finally:
        listener.kill()
        listener.wait(5)


def test_relay_closes_at_hello(relay_as_made: Runtime, no_ssh_path: str) -> None:
    with fake_relay(relay_as_made, "c[0].close()"):
        same_failure(relay_as_made, no_ssh_path, "closed the connection at hello")


def test_relay_silent_at_hello(relay_as_made: Runtime, no_ssh_path: str) -> None:
    """TCP is accepted but no SSH banner ever comes: connect timeout, not minutes."""
    with fake_relay(relay_as_made, "held.append(c)"):
        same_failure(relay_as_made, no_ssh_path, "unreachable (connection timed out)")


def test_relay_name_does_not_resolve(relay_as_made: Runtime, no_ssh_path: str) -> None:
    set_relay(relay_as_made, host="relay.handy-colab.invalid")
    same_failure(relay_as_made, no_ssh_path, "its name does not resolve")


def test_tofu_pin_then_changed_relay_key_refused(relay_as_made: Runtime, no_ssh_path: str) -> None:
    rt = relay_as_made
    known = rt.folder / "relay_known_hosts"
    known.unlink(missing_ok=True)
    try:
        assert up(rt, no_ssh_path).returncode == 0  # "auto" without ssh: embedded records it
        assert status(rt)["tunnel"]["kind"] == "embedded"
        recorded = known.read_text()
        assert recorded == f"{RELAY_IP} {rt.relay_host_key}\n"
        # The relay is "reinstalled" with a new host key under the running tunnel.
        rt.rig.kill_relay_sshd()
        hostkey = rt.rig.work / "relay" / "ssh_host_ed25519_key"
        hostkey.unlink()
        hostkey.with_suffix(".pub").unlink()
        rt.rig.start_relay([rt.relay_key, rt.laptop_key])
        assert wait_until(
            lambda: "does not match" in str(status(rt)["tunnel"]["last_error"]), 30, 0.25
        ), status(rt)
        res = rt.rig.handy("rt", "status")
        assert res.returncode != 0 and "does not match" in res.stdout, res.stdout
        logs = rt.rig.handy("rt", "logs", "-n", "200").stdout
        # Permanent: retried once a minute, not hammered.
        assert re.search(r"does not match.*next try in (59|60)\.\ds", logs), logs
        down(rt)
        # A fresh `up` refuses too, with OpenSSH's very words; the pin is never replaced.
        same_failure(rt, no_ssh_path, "does not match", "relay_known_hosts")
        assert known.read_text() == recorded
    finally:
        known.unlink(missing_ok=True)


def test_read_only_folder_without_a_pin(relay_as_made: Runtime, no_ssh_path: str) -> None:
    rt = relay_as_made
    (rt.folder / "relay_known_hosts").unlink(missing_ok=True)
    errors = []
    for kind, path in (("openssh", os.environ["PATH"]), ("embedded", no_ssh_path)):
        script = (
            f"set -e; mount --bind {rt.folder} {rt.folder}; "
            f"mount -o remount,ro,bind {rt.folder}; "
            f"exec {handy_exe()} up {rt.folder} --timeout 30 --relay-client {kind}"
        )
        res = rt.rig.run(
            "rt",
            ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
            env=dict(rt.rig.env(), PATH=path),
            timeout=90,
        )
        assert res.returncode != 0
        errors.append(res.stderr.strip())
        assert rt.rig.ns_pids("rt") == []
    assert errors[0] == errors[1], errors
    assert "read-only" in errors[1] and "relay.host_key" in errors[1]
    assert not (rt.folder / "relay_known_hosts").exists()


def test_private_pin_mismatch_and_socket_refused(tmp_path: Path, no_ssh_path: str) -> None:
    rt = make_runtime(tmp_path, "private", start=False)
    try:
        set_relay(rt, socket_path="/root/not-writable-for-hcrelay.sock")
        same_failure(rt, no_ssh_path, "refused to create the socket", "StreamLocalBindUnlink")
        set_relay(rt, socket_path=rt.rig.relay_socket)
        other = keygen(tmp_path / "other_host_key")
        set_relay(rt, host_key=" ".join(other.with_suffix(".pub").read_text().split()[:2]))
        same_failure(rt, no_ssh_path, "does not match", "relay.host_key")
    finally:
        finish(rt)
