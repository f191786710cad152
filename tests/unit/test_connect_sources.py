"""Where `connect` takes a descriptor from, when others write it: a synced connections/
folder may hold files `up` never wrote (a name with `$(...)`, spaces, `%`): skipped with a
warning, never read. And the terminal prompt that takes over a pinned alias."""

from __future__ import annotations

import logging
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from handy_colab.client.connect import connect
from handy_colab.descriptor import Descriptor
from handy_colab.errors import ConfigError
from tests.unit.conftest import KeyStore

MakeDesc = Callable[..., Descriptor]


def _folder(tmp_path: Path, files: dict[str, Descriptor]) -> Path:
    conn = tmp_path / "drive" / "connections"
    conn.mkdir(parents=True)
    for name, desc in files.items():
        (conn / name).write_text(desc.to_json())
    return conn.parent


@pytest.mark.parametrize(
    "bad", ["x $(touch PWNED).json", "50%done.json", "a b.json", "'q'.json", "-rf.json"]
)
def test_a_file_up_never_writes_is_skipped_with_a_warning(
    tmp_path: Path, make_descriptor: MakeDesc, caplog: pytest.LogCaptureFixture, bad: str
) -> None:
    evil = make_descriptor(name="github-com", public_host="github.com", remote_port=22)
    folder = _folder(tmp_path, {"colab.json": make_descriptor(), bad: evil})
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        res = connect(folder, ssh_config=out / "cfg", known_hosts=out / "kh", vscode=False)
    assert res.name == "colab"
    assert "github" not in (out / "cfg").read_text() + (out / "kh").read_text()
    assert any(bad in r.getMessage() and "skipped" in r.getMessage() for r in caplog.records)
    # Alone in the folder it is still never used.
    (folder / "connections" / "colab.json").unlink()
    with pytest.raises(ConfigError, match="no connection descriptor found"):
        connect(folder, ssh_config=out / "cfg2", known_hosts=out / "kh2", vscode=False)
    assert not (out / "cfg2").exists() and not (out / "kh2").exists()


def test_a_symlink_in_connections_is_not_followed(
    tmp_path: Path, make_descriptor: MakeDesc
) -> None:
    folder = _folder(tmp_path, {})
    target = tmp_path / "elsewhere.json"
    target.write_text(make_descriptor().to_json())
    (folder / "connections" / "colab.json").symlink_to(target)
    with pytest.raises(ConfigError, match="no connection descriptor found"):
        connect(folder, ssh_config=tmp_path / "c", known_hosts=tmp_path / "k", vscode=False)


def _read_until(fd: int, needle: bytes, timeout: float = 30) -> bytes:
    got = b""
    end = time.monotonic() + timeout
    while needle not in got and time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                got += os.read(fd, 4096)
            except OSError:
                break
    return got


@pytest.mark.parametrize("answer", [b"y\n", b"\n"])
def test_in_a_terminal_connect_asks_before_taking_over_an_alias(
    tmp_path: Path, make_descriptor: MakeDesc, keys: KeyStore, answer: bytes
) -> None:
    out = tmp_path / "out"
    first = tmp_path / "a.json"
    first.write_text(make_descriptor().to_json())
    rebuilt = tmp_path / "b.json"
    rebuilt.write_text(make_descriptor(host_keys=[keys.blob("ed25519_b")]).to_json())
    argv = [sys.executable, "-c", "from handy_colab.cli import entry; entry()", "connect"]
    argv += ["--ssh-config", str(out / "c")]
    argv += ["--known-hosts", str(out / "kh"), "--no-vscode"]
    assert subprocess.run([*argv, str(first)], capture_output=True).returncode == 0
    before = (out / "kh").read_bytes()
    # Not a terminal: refused in one line, exit 2.
    res = subprocess.run([*argv, str(rebuilt)], capture_output=True, text=True)
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("\n") == 1 and "'colab' is pinned to another host key" in res.stderr
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [*argv, str(rebuilt)], stdin=slave, stdout=subprocess.PIPE, stderr=slave
        )
        assert b"Replace it?" in _read_until(master, b"[y/N]")
        os.write(master, answer)
        code = proc.wait(30)
        assert proc.stdout is not None
        proc.stdout.close()
    finally:
        os.close(master)
        os.close(slave)
    if answer == b"y\n":
        assert code == 0
        assert keys.blob("ed25519_b").encode() in (out / "kh").read_bytes()
    else:
        assert code == 2
        assert (out / "kh").read_bytes() == before
