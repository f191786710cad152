"""Private mode's ProxyCommand script (client/relayhop.py): its arguments, names, start-up
cost, and its copying through a held socket (a Unix socket served here stands in for the
OpenSSH master; the real master is in tests/e2e/test_relay_hold.py)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from handy_colab.client import relayhop
from handy_colab.client.connect import _hold_dir
from handy_colab.client.sshconfig import proxy_command, render_host_blocks
from handy_colab.descriptor import Descriptor

SCRIPT = relayhop.__file__


def private_desc() -> Descriptor:
    return Descriptor(
        name="colab",
        route="relay",
        mode="private",
        user="root",
        relay_host="relay.example.org",
        relay_port=22,
        relay_user="me",
        socket_path="/tmp/hc-me-colab.sock",
        host_keys=[
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJd6MuCGXTsrl5GZn8O4jT0QHXPbX9dvZ1n6ZV7A0pS1"
        ],
    )


def test_arguments() -> None:
    args = relayhop.Args(["--dir", "D", "-F", "C", "r", "/s"])
    assert (args.prestart, args.folder, args.config, args.relay, args.remote, args.tag) == (
        False,
        "D",
        "C",
        "r",
        "/s",
        "",
    )
    args = relayhop.Args(["--prestart", "--dir", "D", "--tag", "t1", "-F", "C", "r", "/s"])
    assert args.prestart and args.tag == "t1"
    assert args.hold().sock != relayhop.Args(["--dir", "D", "-F", "C", "r", "/s"]).hold().sock
    bad_ones = [["--dir", "D", "r", "/s"], ["--dir", "D", "-F", "C", "r"], ["-F", "C", "r", "/s"]]
    for bad in [[], *bad_ones]:
        with pytest.raises(relayhop.HopError, match="usage"):
            relayhop.Args(bad)


def test_one_hold_per_config_relay_and_socket(tmp_path: Path) -> None:
    a = relayhop.Hold(str(tmp_path), "/c", "colab-relay", "/tmp/a.sock")
    b = relayhop.Hold(str(tmp_path), "/c", "colab-relay", "/tmp/b.sock")
    c = relayhop.Hold(str(tmp_path), "/other", "colab-relay", "/tmp/a.sock")
    again = relayhop.Hold(str(tmp_path), "/c", "colab-relay", "/tmp/a.sock")
    assert len({a.sock, b.sock, c.sock}) == 3 and again.sock == a.sock
    for path in (a.sock, a.ctl, a.lock, a.log, a.pid):
        assert os.path.dirname(path) == str(tmp_path)
        assert len(os.path.basename(path)) <= len("0123456789.lock")
    assert a.ssh("-O", "check", "r")[:5] == ["ssh", "-F", "/c", "-o", f'ControlPath="{a.ctl}"']


def test_socket_paths_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    assert relayhop.max_dir_len() == 107 - 13 - 17
    monkeypatch.setattr(sys, "platform", "darwin")
    assert relayhop.max_dir_len() == 103 - 13 - 17
    key_dir = Path("/home/someone/.ssh")
    assert _hold_dir(private_desc(), key_dir, windows=False) == key_dir / "handy-colab-hop"
    # Windows' OpenSSH has no ControlMaster; other routes have no relay hop.
    assert _hold_dir(private_desc(), key_dir, windows=True) is None
    public = Descriptor(
        name="colab", route="relay", mode="public", user="root", host_keys=[], remote_port=2222
    )
    assert _hold_dir(public, key_dir, windows=False) is None
    # A home too long for sockaddr_un keeps the asyncssh proxy.
    assert _hold_dir(private_desc(), Path("/h" + "o" * 80), windows=False) is None


def test_persist_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    for value, want in (("2", 2), ("0", 600), ("-5", 600), ("soon", 600), ("", 600)):
        monkeypatch.setenv(relayhop.PERSIST_ENV, value)
        assert relayhop.persist_seconds() == want, value


def test_the_proxy_command_connect_writes() -> None:
    desc = private_desc()
    held = proxy_command(desc, "/home/a b/.ssh/cfg", hold_dir="/home/a b/.ssh/handy-colab-hop")
    tag = held.split("--tag ")[1].split()[0]
    assert held == (
        f"{sys.executable} -I -S {SCRIPT} --dir '/home/a b/.ssh/handy-colab-hop' --tag {tag} "
        f"-F '/home/a b/.ssh/cfg' colab-relay /tmp/hc-me-colab.sock"
    )
    # Another relay (address, account or host key) is another held connection.
    changes: list[dict[str, object]] = [
        {"relay_host": "relay2.example.org"},
        {"relay_port": 2222},
        {"relay_user": "you"},
        {"relay_host_keys": ["ssh-ed25519 AAAAother"]},
    ]
    for change in changes:
        other = proxy_command(dataclasses.replace(desc, **change), "/cfg", hold_dir="/d")
        assert f"--tag {tag} " not in other, change
    assert f"--tag {tag} " in proxy_command(desc, "/elsewhere/cfg", hold_dir="/d")
    # Windows (and a folder that is too long): the asyncssh proxy, as before.
    assert "streamlocal" in proxy_command(desc, "C:/cfg", windows=True, hold_dir="/x")
    assert "streamlocal" in proxy_command(desc, "/cfg")
    block = render_host_blocks(desc, None, "/k", "/cfg", hold_dir="/d")
    assert f"ProxyCommand {sys.executable} -I -S {SCRIPT} --dir /d --tag {tag} -F /cfg" in block


def test_starts_without_the_package_or_heavy_imports(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-I", "-S", "-X", "importtime", SCRIPT],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert res.returncode == 255
    errors = [ln for ln in res.stderr.splitlines() if not ln.startswith("import time:")]
    assert errors == [
        "handy-colab proxy: usage: relayhop.py [--prestart] --dir DIR [--tag TAG] -F CONFIG "
        "RELAY SOCKET_PATH"
    ]
    imported = {ln.split("|")[-1].strip() for ln in res.stderr.splitlines() if "|" in ln}
    for heavy in ("handy_colab", "typing", "socket", "contextlib", "subprocess", "asyncio"):
        assert heavy not in imported, heavy


@contextlib.contextmanager
def _serving(path: str, handle: Callable[[socket.socket], None]) -> Iterator[None]:
    """A Unix socket where the master's forward would be, one connection handled."""
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen()

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            handle(conn)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield
    finally:
        srv.close()
        t.join(5)


@pytest.fixture
def held(tmp_path: Path) -> Iterator[tuple[relayhop.Hold, list[bytes]]]:
    """It sends a banner, then echoes upper-cased; what it received is kept."""
    hold = relayhop.Hold(str(tmp_path), "/cfg", "colab-relay", "/tmp/x.sock")
    got: list[bytes] = []

    def echo(conn: socket.socket) -> None:
        conn.sendall(b"SSH-2.0-standin\r\n")
        while data := conn.recv(65536):
            got.append(data)
            conn.sendall(data.upper())

    with _serving(hold.sock, echo):
        yield hold, got


def hop_argv(hold: relayhop.Hold) -> list[str]:
    return [sys.executable, "-I", "-S", SCRIPT, "--dir", hold.folder, "-F", hold.config]


def test_copies_both_ways_through_the_held_socket(
    held: tuple[relayhop.Hold, list[bytes]],
) -> None:
    hold, got = held
    payload = os.urandom(3 << 20).hex().encode()  # 6 MiB, several reads each way
    res = subprocess.run(
        [*hop_argv(hold), hold.relay, hold.remote],
        input=payload,
        capture_output=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"SSH-2.0-standin\r\n" + payload.upper()
    assert b"".join(got) == payload
    assert not os.path.exists(hold.ctl), "a working held socket needs no new log-in"


def test_neither_way_waits_on_the_other(tmp_path: Path) -> None:
    """A runtime that sends a lot before it reads (sshd's banner and kex, a big scp both
    ways): a hop that blocks sending while the peer blocks sending to it hangs for good."""
    hold = relayhop.Hold(str(tmp_path), "/cfg", "colab-relay", "/tmp/x.sock")
    big = os.urandom(4 << 20)
    got = bytearray()

    def flood(conn: socket.socket) -> None:
        conn.sendall(big)  # all of it before reading a byte
        while data := conn.recv(65536):
            got.extend(data)

    with _serving(hold.sock, flood):
        res = subprocess.run(
            [*hop_argv(hold), hold.relay, hold.remote], input=big, capture_output=True, timeout=60
        )
    assert res.returncode == 0, res.stderr
    assert res.stdout == big
    assert bytes(got) == big


def test_a_way_closed_at_once_names_the_runtime(tmp_path: Path) -> None:
    """What the master does when the relay has no runtime socket: it accepts, then closes."""
    hold = relayhop.Hold(str(tmp_path), "/cfg", "colab-relay", "/tmp/hc-gone.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(hold.sock)
    srv.listen()

    def close_it() -> None:
        conn, _ = srv.accept()
        conn.close()

    t = threading.Thread(target=close_it, daemon=True)
    t.start()
    try:
        # stdin stays open, as ssh's does: only the far end closes.
        proc = subprocess.Popen(
            [*hop_argv(hold), hold.relay, hold.remote],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        code = proc.wait(30)
        assert proc.stdin and proc.stderr
        proc.stdin.close()
        err = proc.stderr.read()
        assert proc.stdout and proc.stdout.read() == ""
    finally:
        srv.close()
        t.join(5)
    assert code == 255
    assert err.splitlines() == [
        "handy-colab proxy: the relay closed the way to /tmp/hc-gone.sock: is the runtime up? "
        "(`handy-colab status` on it)"
    ]
