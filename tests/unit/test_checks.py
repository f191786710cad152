"""The end-to-end check's verdicts, against real sockets and a real child process.

A check that got no answer in time is inconclusive (CheckTimeout): the supervisor then looks
at whether the tunnel's client read data meanwhile (`Tunnel.traffic`). Everything else a
check can see is a definite answer.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from handy_colab.config import load_config
from handy_colab.errors import TunnelError
from handy_colab.proc import WatchedProcess
from handy_colab.tunnels.common import (
    CheckTimeout,
    check_public,
    probe_banner,
    relay_connection,
    reset_connection,
)
from tests.unit.conftest import KeyStore
from tests.unit.test_relay_port import ScriptedRelay, _relay_folder


@pytest.fixture
def server() -> Iterator[tuple[socket.socket, list[socket.socket]]]:
    """A loopback listener; accepted connections are kept open (and closed at the end)."""
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(8)
    accepted: list[socket.socket] = []
    yield lst, accepted
    for c in accepted:
        c.close()
    lst.close()


def _serve(lst: socket.socket, accepted: list[socket.socket], reply: bytes | None) -> None:
    def run() -> None:
        conn, _ = lst.accept()
        accepted.append(conn)
        if reply is not None:
            conn.sendall(reply)
        if reply == b"":
            conn.close()

    threading.Thread(target=run, daemon=True).start()


def test_probe_banner_outcomes(server: tuple[socket.socket, list[socket.socket]]) -> None:
    lst, accepted = server
    port = lst.getsockname()[1]
    _serve(lst, accepted, b"SSH-2.0-OpenSSH_9.2\r\n")
    assert probe_banner("127.0.0.1", port, 5) == ("line", "SSH-2.0-OpenSSH_9.2\r\n")
    _serve(lst, accepted, b"")  # accepted, then closed with nothing said
    assert probe_banner("127.0.0.1", port, 5) == ("closed", "")
    _serve(lst, accepted, None)  # accepted, then silent: a frozen or swamped far end
    start = time.monotonic()
    assert probe_banner("127.0.0.1", port, 0.5)[0] == "timeout"
    assert time.monotonic() - start < 5  # the timeout bounds the whole probe
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    nobody = free.getsockname()[1]
    free.close()
    outcome, why = probe_banner("127.0.0.1", nobody, 5)
    assert outcome == "error" and "refused" in why.lower()


def test_check_public_tells_inconclusive_from_definite(
    tmp_path: Path, keys: KeyStore, server: tuple[socket.socket, list[socket.socket]]
) -> None:
    lst, accepted = server
    port = lst.getsockname()[1]
    cfg = load_config(_relay_folder(tmp_path, keys, {"host": "127.0.0.1", "remote_port": port}))
    _serve(lst, accepted, None)
    with pytest.raises(CheckTimeout) as slow:
        check_public(cfg, f"127.0.0.1:{port}", 0.5)
    assert "no SSH banner within" in str(slow.value)
    _serve(lst, accepted, b"HTTP/1.1 400 Bad Request\r\n")
    with pytest.raises(TunnelError) as taken:
        check_public(cfg, f"127.0.0.1:{port}", 5)
    assert not isinstance(taken.value, CheckTimeout)
    assert "taken by another program" in str(taken.value)
    _serve(lst, accepted, b"")
    with pytest.raises(TunnelError) as closed:
        check_public(cfg, f"127.0.0.1:{port}", 5)
    assert not isinstance(closed.value, CheckTimeout)
    assert "without an SSH banner" in str(closed.value)
    _serve(lst, accepted, b"SSH-2.0-x\r\n")
    check_public(cfg, f"127.0.0.1:{port}", 5)


_READER = """
import sys, time
print("ready", flush=True)
time.sleep(0.5)
with open(sys.argv[1], "rb") as fh:
    while fh.read(65536):
        pass
print("read it", flush=True)
time.sleep(60)
"""


def test_traffic_is_what_the_client_read(tmp_path: Path, keys: KeyStore) -> None:
    """A client that reads moves the counter; a stopped (frozen) one does not."""
    cfg = load_config(_relay_folder(tmp_path, keys, {"remote_port": 2222}))
    t = ScriptedRelay(cfg, set(), alloc=1)
    assert t.traffic() is None  # nothing running
    data = tmp_path / "data"
    data.write_bytes(b"x" * (1 << 20))
    try:
        # A real child reading 1 MiB stands in for ssh reading its relay connection.
        t.proc = WatchedProcess([sys.executable, "-c", _READER, str(data)], label="reader")
        assert t.proc.wait_for(re.compile("ready"), None, 10)[0] == "ready"
        before = t.traffic()
        assert before is not None
        assert t.proc.wait_for(re.compile("read it"), None, 10)[0] == "ready"
        after = t.traffic()
        assert after is not None and after - before >= 1 << 20
        os.kill(t.proc.pid, signal.SIGSTOP)
        frozen = t.traffic()
        time.sleep(0.3)
        assert t.traffic() == frozen
    finally:
        t.stop()


def test_a_dead_tunnels_connection_is_found_and_aborted(
    server: tuple[socket.socket, list[socket.socket]],
) -> None:
    """The tuple comes from /proc; the abort is a real SOCK_DESTROY: the far end (the relay,
    in real life) gets an RST at once, not the FIN TCP would retransmit later."""
    lst, accepted = server
    port = lst.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    far, _ = lst.accept()
    accepted.append(far)
    try:
        conn = relay_connection(os.getpid(), port)
        assert conn == ("127.0.0.1", client.getsockname()[1], "127.0.0.1", port)
        if os.geteuid() != 0:
            assert reset_connection(conn) is False  # no CAP_NET_ADMIN: nothing happens
            return
        assert reset_connection(conn) is True
        far.settimeout(5)
        with pytest.raises(ConnectionResetError):
            far.recv(1)
        assert relay_connection(os.getpid(), port) is None
        assert reset_connection(conn) is False  # nothing left to abort
    finally:
        client.close()
