"""Private mode's held relay connection (client/relayhop.py), through the real NAT rig.

`connect` logs in to the relay ahead of the first ssh (an OpenSSH master holding a local
forward to the runtime's socket); every `ssh colab` goes through it; a killed or frozen one
is replaced, `disconnect` ends it, it expires after its last session, and a runtime that is
not on the relay is named as the reason.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Runtime, finish, make_runtime, need_rig
from tests.rig import wait_until


@pytest.fixture(scope="module")
def rt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    need_rig()
    runtime = make_runtime(tmp_path_factory.mktemp("hold"), "private")
    try:
        yield runtime
    finally:
        finish(runtime)


def hold_dir(rt: Runtime) -> Path:
    return rt.known_hosts.parent / "handy-colab-hop"


def masters(rt: Runtime) -> list[int]:
    return rt.rig.relay_holds()


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def recorded(rt: Runtime) -> list[int]:
    return [int(p.read_text()) for p in hold_dir(rt).glob("*.pid") if p.read_text().isdigit()]


def one_master(rt: Runtime) -> int:
    """The one held connection, once it runs in the background (`ssh -f`'s first process
    exits after the log-in) and the hop has recorded it."""
    assert wait_until(lambda: masters(rt) == recorded(rt) != [], 15, 0.05), masters(rt)
    return masters(rt)[0]


def disconnect(rt: Runtime, *names: str) -> str:
    res = rt.rig.handy("laptop", "disconnect", *names, "--ssh-config", str(rt.ssh_config))
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_connect_logs_in_to_the_relay_before_the_first_ssh(rt: Runtime) -> None:
    text = rt.ssh_config.read_text()
    assert "relayhop.py --dir" in text and " -I -S " in text, text
    assert "handy_colab.streamlocal" not in text
    pid = one_master(rt)  # started by connect, before any ssh
    argv = cmdline(pid)
    assert "ControlPersist=600" in argv and "ExitOnForwardFailure=yes" in argv, argv
    for _ in range(3):
        res = rt.ssh("true")
        assert res.returncode == 0, res.stderr
    assert masters(rt) == [pid], "each ssh must use the held connection, not log in again"
    folder = hold_dir(rt)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for path in folder.iterdir():
        # The forward's socket, the control socket, the log, the lock, the pid: the user's.
        assert stat.S_IMODE(path.lstat().st_mode) & 0o077 == 0, path


def test_sessions_at_once_share_it(rt: Runtime) -> None:
    pid = one_master(rt)
    procs = [
        rt.rig.popen(
            "laptop",
            [*rt.ssh_base(), "colab", f"sleep 1; echo ok{i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(6)
    ]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, outs
    assert sorted(o for o, _ in outs) == sorted(f"ok{i}\n" for i in range(6))
    assert masters(rt) == [pid]


def test_a_killed_hold_is_replaced(rt: Runtime) -> None:
    old = one_master(rt)
    os.kill(old, signal.SIGKILL)
    assert wait_until(lambda: old not in masters(rt), 5, 0.05)
    res = rt.ssh("echo back")
    assert (res.returncode, res.stdout) == (0, "back\n"), res.stderr
    new = one_master(rt)
    assert new != old


def test_a_frozen_hold_is_replaced(rt: Runtime) -> None:
    """A held connection that answers nothing (here: stopped; in life a relay gone silent)
    is replaced after the hop's first-byte deadline, not waited on until its keepalives
    give up, and the frozen process does not stay behind."""
    old = one_master(rt)
    os.kill(old, signal.SIGSTOP)
    try:
        res = rt.ssh("echo thawed", timeout=60)
        assert (res.returncode, res.stdout) == (0, "thawed\n"), res.stderr
        assert wait_until(lambda: not Path(f"/proc/{old}").exists(), 5, 0.05), cmdline(old)
        assert masters(rt) != [old] and len(masters(rt)) == 1
    finally:
        if Path(f"/proc/{old}").exists():
            os.kill(old, signal.SIGCONT)


def test_disconnect_ends_it_and_the_next_ssh_logs_in_again(rt: Runtime) -> None:
    one_master(rt)
    out = disconnect(rt, "COLAB")  # any case, like the alias
    assert "Ended the relay connection held for colab" in out, out
    assert wait_until(lambda: masters(rt) == [], 5, 0.05), masters(rt)
    assert not list(hold_dir(rt).glob("*.s")) and not list(hold_dir(rt).glob("*.c"))
    assert "No relay connection was held" in disconnect(rt)
    res = rt.ssh("true")
    assert res.returncode == 0, res.stderr
    one_master(rt)


def test_it_ends_after_its_last_session(rt: Runtime) -> None:
    disconnect(rt)
    env = {**rt.rig.env(), "HANDY_COLAB_HOLD_SECONDS": "4"}
    res = rt.rig.run("laptop", [*rt.ssh_base(), "colab", "sleep 3; echo long"], env=env)
    assert (res.returncode, res.stdout) == (0, "long\n"), res.stderr
    pid = one_master(rt)
    assert "ControlPersist=4 " in cmdline(pid) + " "
    # Alive for the 3 s session, then 4 s after it.
    assert wait_until(lambda: masters(rt) == [], 15, 0.1), cmdline(pid)
    res = rt.ssh("true")
    assert res.returncode == 0, res.stderr


def test_a_wrong_relay_key_is_refused(rt: Runtime, tmp_path: Path) -> None:
    """The relay's host key stays pinned: the held connection is OpenSSH's, with the relay's
    Host block (StrictHostKeyChecking yes)."""
    cfg, known = tmp_path / "config", tmp_path / "known_hosts"
    cfg.write_text(
        rt.ssh_config.read_text()
        .replace(str(rt.ssh_config), str(cfg))
        .replace(str(rt.known_hosts), str(known))
    )
    other = subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "impostor")],
        capture_output=True,
        check=True,
    )
    assert other.returncode == 0
    impostor = (tmp_path / "impostor.pub").read_text().split()[:2]
    lines = []
    for line in rt.known_hosts.read_text().splitlines():
        if line.startswith("colab-relay "):
            line = f"colab-relay {' '.join(impostor)}"
        lines.append(line)
    known.write_text("\n".join(lines) + "\n")
    res = rt.rig.run("laptop", ["ssh", "-F", str(cfg), "-o", "BatchMode=yes", "colab", "true"])
    assert res.returncode == 255
    err = [ln for ln in res.stderr.splitlines() if ln.startswith("handy-colab proxy:")]
    assert len(err) == 1 and "Host key verification failed" in err[0], res.stderr
    assert len(masters(rt)) <= 1  # only the good config's, if it still runs


def test_a_runtime_that_is_not_up_is_named(rt: Runtime) -> None:
    """The held connection outlives the runtime: with the runtime gone from the relay, ssh
    says so in one line; after `up` the same held connection carries it again."""
    pid = one_master(rt)
    res = rt.rig.handy("rt", "down")
    assert res.returncode == 0, res.stderr
    try:
        res = rt.ssh("true")
        assert res.returncode == 255
        err = [ln for ln in res.stderr.splitlines() if ln.startswith("handy-colab proxy:")]
        assert len(err) == 1 and "is the runtime up?" in err[0], res.stderr
    finally:
        res = rt.up()
        assert res.returncode == 0, res.stderr + res.stdout
    start = time.monotonic()
    res = rt.ssh("echo again")
    assert (res.returncode, res.stdout) == (0, "again\n"), res.stderr
    assert masters(rt) == [pid], f"replaced after {time.monotonic() - start:.1f}s"
