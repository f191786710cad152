"""Reach a Unix socket on the relay with stock OpenSSH only.

Private mode forwards the runtime to a Unix socket on the relay (``-R /path.sock:...``):
with ``StreamLocalBindUnlink yes`` a new tunnel replaces the socket of a dead one at once,
where a TCP listener would stay bound until the relay notices the old session is gone.
OpenSSH 9.2's ``ssh -W`` cannot open a Unix socket (measured: no channel is opened), so
this module forwards it to a private local socket with ``ssh -N -L local:remote`` and
pumps bytes between that socket and stdio (the laptop's ProxyCommand) or reads the SSH
banner through it (the runtime's end-to-end check).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from .errors import TunnelError
from .proc import die_with_parent, end_process

_CHUNK = 256 * 1024


@contextlib.contextmanager
def forwarded_socket(
    ssh_prefix: Sequence[str], host: str, remote_path: str, timeout: float
) -> Iterator[Path]:
    """Yield a local socket path that reaches ``remote_path`` on ``host``."""
    tmpdir = Path(tempfile.mkdtemp(prefix="hc-fwd-"))  # 0700: nobody else can use it
    local = tmpdir / "s"
    argv = [
        *ssh_prefix,
        "-N",
        "-o",
        "ExitOnForwardFailure=yes",
        "-o",
        "ControlPath=none",
        "-o",
        "ControlMaster=no",
        "-L",
        f"{local}:{remote_path}",
        host,
    ]
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=die_with_parent,
    )
    try:
        deadline = time.monotonic() + timeout
        while not local.exists():
            if proc.poll() is not None:
                err = (proc.stderr.read() if proc.stderr else "").strip().splitlines()
                raise TunnelError(
                    f"ssh to {host} could not forward {remote_path}: {err[-1] if err else 'exited'}"
                )
            if time.monotonic() > deadline:
                raise TunnelError(
                    f"ssh to {host} did not set up a forward to {remote_path} within {timeout:.0f}s"
                )
            time.sleep(0.01)
        yield local
    finally:
        end_process(proc)
        if proc.stderr is not None:
            proc.stderr.close()
        shutil.rmtree(tmpdir, ignore_errors=True)


def first_line(sock: socket.socket) -> str:
    """The first line (at most 256 bytes) the far end sends, or what came before an error."""
    data = b""
    with contextlib.suppress(OSError):
        while b"\n" not in data and len(data) < 256:
            chunk = sock.recv(256)
            if not chunk:
                break
            data += chunk
    return data.decode(errors="replace")


def read_banner(local: Path, timeout: float) -> str:
    """The first line the far end of a local socket sends (an SSH server's banner)."""
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(timeout)
            s.connect(str(local))
            return first_line(s)
    except OSError:
        return ""


def pump(sock: socket.socket, in_fd: int, out_fd: int) -> None:
    """Copy in_fd -> sock and sock -> out_fd until the far end closes."""

    def upstream() -> None:
        try:
            while True:
                data = os.read(in_fd, _CHUNK)
                if not data:
                    break
                sock.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)

    threading.Thread(target=upstream, daemon=True).start()
    try:
        while True:
            data = sock.recv(_CHUNK)
            if not data:
                break
            view = memoryview(data)
            while view:
                view = view[os.write(out_fd, view) :]
    except OSError:
        pass


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """ProxyCommand: ``python -m handy_colab.streamlocal [-F CFG] RELAY SOCKET_PATH``.

    RELAY is a Host alias of CFG, or ``user@host[:port]``.
    """
    p = argparse.ArgumentParser(
        prog="handy-colab proxy", description="stdio to a Unix socket on the relay (ProxyCommand)"
    )
    p.add_argument("-F", dest="config", help="ssh config file holding the relay's Host block")
    p.add_argument("relay", help="Host alias, or user@host[:port]")
    p.add_argument("socket_path")
    args = p.parse_args(argv)
    # ssh ends its ProxyCommand with SIGTERM (or SIGHUP): unwind so the forward is stopped.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit_on_signal)
    prefix = [shutil.which("ssh") or "ssh"]
    if args.config:
        prefix += ["-F", args.config]
    relay = args.relay
    host, sep, port = relay.rpartition(":")
    if "@" in relay and sep and port.isdigit():
        prefix += ["-p", port]
        relay = host
    try:
        with (
            forwarded_socket(prefix, relay, args.socket_path, 30) as local,
            socket.socket(socket.AF_UNIX) as s,
        ):
            s.connect(str(local))
            pump(s, sys.stdin.fileno(), sys.stdout.fileno())
            # ssh hangs up on us once the session ended: not while the forward and its
            # private folder are being removed.
            for sig in (signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_IGN)
    except (TunnelError, OSError) as exc:
        print(f"handy-colab proxy: {exc}", file=sys.stderr)
        return 255
    return 0


if __name__ == "__main__":
    sys.exit(main())
