"""Real-client helpers shared by the e2e tests: a PTY driver for `ssh -tt`, a SOCKS5 probe.

Everything here drives real programs (OpenSSH's ssh, a real pseudo-terminal); nothing fakes
a server.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def set_winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class PtySession:
    """An interactive program (e.g. `ssh -tt HOST`) on a pseudo-terminal of ours."""

    def __init__(
        self,
        argv: Sequence[str],
        rows: int = 24,
        cols: int = 80,
        env: dict[str, str] | None = None,
    ) -> None:
        self.master, slave = pty.openpty()
        set_winsize(slave, rows, cols)
        self.proc = subprocess.Popen(
            list(argv),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            close_fds=True,
            env=env,
            # The child makes the pty its controlling terminal, as a terminal emulator would.
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
        os.close(slave)
        self.buf = b""

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())

    def expect(self, pattern: str, timeout: float = 15) -> re.Match[bytes]:
        """Wait for ``pattern`` in the output since the last match; return the match."""
        rx = re.compile(pattern.encode())
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.buf)
            if m:
                self.buf = self.buf[m.end() :]
                return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {pattern!r} within {timeout}s; got {self.buf[-500:]!r}")
            ready, _, _ = select.select([self.master], [], [], min(left, 0.2))
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # EIO: the program closed the terminal
                    chunk = b""
                if not chunk and self.proc.poll() is not None:
                    raise AssertionError(f"program exited before {pattern!r}: {self.buf!r}")
                self.buf += chunk

    def resize(self, rows: int, cols: int) -> None:
        """What a terminal emulator does: set the size, then tell the foreground program."""
        set_winsize(self.master, rows, cols)
        os.killpg(self.proc.pid, signal.SIGWINCH)

    def close(self, timeout: float = 10) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)
        finally:
            os.close(self.master)


def rsync_tree(root: Path, big_bytes: int) -> Path:
    """A small tree for rsync: 20 text files in a subfolder and one random file of
    ``big_bytes``."""
    (root / "sub").mkdir(parents=True)
    for i in range(20):
        (root / "sub" / f"f{i}.txt").write_text(f"file {i}\n" * (i + 1))
    (root / "big.bin").write_bytes(os.urandom(big_bytes))
    return root


def socks5_script(proxy_port: int, host: str, port: int) -> str:
    """Python source: through the SOCKS5 proxy on 127.0.0.1:proxy_port, connect to host:port
    and print the first line the far side sends (e.g. an SSH banner)."""
    return f"""
import socket, struct, sys
s = socket.create_connection(("127.0.0.1", {proxy_port}), timeout=10)
s.sendall(b"\\x05\\x01\\x00")
assert s.recv(2) == b"\\x05\\x00", "SOCKS5 method refused"
addr = socket.inet_aton({host!r})
s.sendall(b"\\x05\\x01\\x00\\x01" + addr + struct.pack("!H", {port}))
reply = s.recv(10)
assert reply[:2] == b"\\x05\\x00", f"SOCKS5 connect refused: {{reply!r}}"
data = b""
while b"\\n" not in data:
    chunk = s.recv(256)
    if not chunk:
        break
    data += chunk
print(data.split(b"\\n")[0].decode().strip())
"""


def fetch_script(url: str, timeout: float = 15) -> str:
    """Python source: GET ``url`` until it answers (a forward may still be coming up) and print
    the body."""
    return (
        f"import urllib.request,time\nd=time.time()+{timeout}\nwhile True:\n try:\n"
        f"  print(urllib.request.urlopen({url!r},timeout=3).read().decode(),end='');break\n"
        " except OSError:\n  assert time.time()<d\n  time.sleep(0.1)\n"
    )


def check_local_forward(
    rig: Any, ssh_base: Sequence[str], work: Path, env: dict[str, str] | None = None
) -> None:
    """`ssh -L` from the laptop to an HTTP server bound to the runtime's loopback (what a
    TensorBoard or Jupyter forward is): the page must come back through the forward."""
    site = work / "site"
    site.mkdir()
    (site / "index.html").write_text("tensorboard-ish\n")
    server = rig.popen(
        "rt",
        ["python3", "-m", "http.server", "18765", "--bind", "127.0.0.1", "--directory", str(site)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rig.wait_tcp("rt", "127.0.0.1", 18765)
    fwd = rig.popen(
        "laptop",
        [*ssh_base, "-N", "-o", "ExitOnForwardFailure=yes", "-L", "16006:127.0.0.1:18765", "colab"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        **({"env": env} if env else {}),
    )
    try:
        res = rig.run(
            "laptop", ["python3", "-c", fetch_script("http://127.0.0.1:16006/index.html", 20)]
        )
        assert res.stdout == "tensorboard-ish\n", res.stderr
    finally:
        for p in (fwd, server):
            p.terminate()
            p.wait(10)


def check_pty(argv_prefix: Sequence[str], env: dict[str, str] | None = None) -> None:
    """`ssh -tt NAME` on a real pseudo-terminal: a tty, its size, a resize, the exit code."""
    sess = PtySession([*argv_prefix, "-tt", "colab"], env=env)
    try:
        sess.send("tty; stty size\n")
        sess.expect(r"/dev/pts/\d+")
        sess.expect(r"24 80")
        sess.resize(40, 132)
        sess.send("stty size\n")
        sess.expect(r"40 132")
        sess.send("exit 7\n")
    finally:
        code = sess.close()
    assert code == 7
