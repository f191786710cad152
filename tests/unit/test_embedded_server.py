"""The embedded server's parts that need no SSH connection: its config file, authorized keys,
PTY set-up, and how session children are started, reaped and signalled.

Each runs against real things (key files from ssh-keygen, a real pseudo-terminal, real
child processes); what needs a client (sessions, SFTP, forwards, auth over the wire) is
tests/e2e/test_embedded_server.py's.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import signal
import struct
import sys
import termios
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from handy_colab.server.children import Reaper, signal_group, spawn
from handy_colab.server.connection import read_authorized_keys
from handy_colab.server.embedded import login_defaults
from handy_colab.server.settings import Settings
from handy_colab.server.terminal import apply_modes, set_winsize
from tests.unit.conftest import KeyStore

# -- settings -------------------------------------------------------------------------------


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "embedded_server.json"
    path.write_text(json.dumps(data))
    return path


_REQUIRED = {"port": 0, "host_key": "/k", "authorized_keys": "/a", "login_user": "me"}


def test_settings_full(tmp_path: Path) -> None:
    data = {**_REQUIRED, "port": 2222, "cwd": "/content", "shell": "/bin/bash"}
    data |= {"launcher": "/d/session.sh", "session_info": "/d/session.json"}
    s = Settings.load(_write(tmp_path, data))
    assert s == Settings(2222, "/k", "/a", "me", "/content", "/bin/bash", "/d/session.sh",
                         "/d/session.json")  # fmt: skip


def test_settings_defaults_are_the_login_users(tmp_path: Path) -> None:
    # The demo's relay writes only the required fields.
    s = Settings.load(_write(tmp_path, _REQUIRED))
    assert (s.cwd, s.shell) == login_defaults()
    assert (s.launcher, s.session_info) == ("", "")
    # Remote forwards on loopback unless the runtime's config says otherwise.
    assert s.gateway_ports == "no"
    s = Settings.load(_write(tmp_path, {**_REQUIRED, "gateway_ports": "clientspecified"}))
    assert s.gateway_ports == "clientspecified"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1, 2], "JSON object"),
        ({"port": 22}, "missing field(s): host_key, authorized_keys, login_user"),
        ({**_REQUIRED, "port": True}, "port must be 0-65535, not True"),
        ({**_REQUIRED, "port": 65536}, "port must be 0-65535"),
        ({**_REQUIRED, "port": "22"}, "port must be 0-65535"),
        ({**_REQUIRED, "gateway_ports": "yes"}, 'gateway_ports must be "no" or'),
    ],
)
def test_settings_refused(tmp_path: Path, data: object, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Settings.load(_write(tmp_path, data))


# -- authorized keys ------------------------------------------------------------------------


def _blob(keys: KeyStore, name: str) -> bytes:
    return asyncssh.import_public_key(keys.public_line(name)).public_data


def test_authorized_keys_plain_lines_only(tmp_path: Path, keys: KeyStore) -> None:
    path = tmp_path / "authorized_keys"
    path.write_text(
        "# a comment\n\n"
        f"  {keys.public_line('laptop')}  \n"
        f"{keys.blob('ecdsa')}\n"
        # A key with options must not be accepted without them: the line is dropped.
        f'from="10.0.0.1" {keys.public_line("ed25519_b")}\n'
        "not a key at all\n"
    )
    assert read_authorized_keys(str(path)) == {_blob(keys, "laptop"), _blob(keys, "ecdsa")}


def test_authorized_keys_unreadable_is_empty(tmp_path: Path) -> None:
    assert read_authorized_keys(str(tmp_path / "missing")) == set()


# -- terminal -------------------------------------------------------------------------------


@pytest.fixture
def pty_pair() -> Iterator[tuple[int, int]]:
    master, slave = os.openpty()
    try:
        yield master, slave
    finally:
        os.close(master)
        os.close(slave)


def test_terminal_modes_applied(pty_pair: tuple[int, int]) -> None:
    _, slave = pty_pair
    before = termios.tcgetattr(slave)
    assert before[3] & termios.ECHO  # a fresh pty echoes: the change below is visible
    # VERASE=^H, VINTR disabled (255), ECHO off, ICRNL off, an opcode nobody knows.
    apply_modes(slave, {3: 8, 1: 255, 53: 0, 36: 0, 200: 1})
    after = termios.tcgetattr(slave)
    assert after[6][termios.VERASE] == b"\x08"
    assert after[6][termios.VINTR] == b"\x00"
    assert not after[3] & termios.ECHO
    assert not after[0] & termios.ICRNL
    apply_modes(slave, {53: 1})
    assert termios.tcgetattr(slave)[3] & termios.ECHO


def test_window_size(pty_pair: tuple[int, int]) -> None:
    master, slave = pty_pair
    set_winsize(slave, 132, 43, 0, 0)
    got = struct.unpack("HHHH", fcntl.ioctl(master, termios.TIOCGWINSZ, b"\0" * 8))
    assert got[:2] == (43, 132)
    set_winsize(slave, 0, 0, 0, 0)  # "unknown" from the client leaves the size alone
    got = struct.unpack("HHHH", fcntl.ioctl(master, termios.TIOCGWINSZ, b"\0" * 8))
    assert got[:2] == (43, 132)


# -- children -------------------------------------------------------------------------------


def _stdio() -> tuple[tuple[int, int, int], int]:
    """The child's (stdin, stdout, stderr) and our read end of its output."""
    null = os.open(os.devnull, os.O_RDWR)
    out_r, out_w = os.pipe()
    return (null, out_w, os.dup(out_w)), out_r


def test_children_exit_status_and_group() -> None:
    async def run() -> tuple[int, int, bytes, int]:
        reaper = Reaper(asyncio.get_running_loop())
        reaper.install()
        stdio, out_r = _stdio()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        code = "import os; print(os.getpid(), os.getsid(0), os.getpgid(0)); raise SystemExit(3)"
        argv = ["python3", "-c", code]
        done = spawn(reaper, argv, sys.executable, stdio, "/", env, on_pty=False)
        status = await asyncio.wait_for(done.exited, 10)
        with os.fdopen(out_r, "rb") as out:
            printed = out.read()
        # A child that ignores nothing is ended through its group, as at shutdown.
        stdio, out_r = _stdio()
        os.close(out_r)
        sleeper = spawn(reaper, ["sleep", "30"], "/bin/sleep", stdio, "/", env, on_pty=False)
        signal_group(sleeper.pgid, signal.SIGTERM)
        killed = await asyncio.wait_for(sleeper.exited, 10)
        return status, done.popen.pid, printed, killed

    status, pid, printed, killed = asyncio.run(run())
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 3
    # A session leader: its own session and process group.
    assert printed.split() == [str(pid).encode()] * 3
    assert os.WIFSIGNALED(killed) and os.WTERMSIG(killed) == signal.SIGTERM


def test_spawn_failure_closes_the_childs_fds() -> None:
    async def run() -> None:
        reaper = Reaper(asyncio.get_running_loop())
        stdio, out_r = _stdio()
        os.close(out_r)
        with pytest.raises(OSError):
            spawn(reaper, ["nope"], "/nonexistent/shell", stdio, "/", {}, on_pty=False)
        for fd in stdio:
            with pytest.raises(OSError):
                os.fstat(fd)

    asyncio.run(run())
