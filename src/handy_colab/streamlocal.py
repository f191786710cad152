"""Reach the runtime's Unix socket on the relay (private mode), with no local socket.

Private mode forwards the runtime to a Unix socket on the relay (``-R /path.sock:...``):
with ``StreamLocalBindUnlink yes`` a new tunnel replaces the socket of a dead one at once,
where a TCP listener would stay bound until the relay notices the old session is gone.
OpenSSH 9.2's ``ssh -W`` cannot open a Unix socket (measured: no channel is opened).

- The laptop's ProxyCommand on Windows, and `handy-colab proxy` by hand (``main``), opens
  the socket as a stream-local channel over one SSH connection of its own (asyncssh), with
  the relay's Host block of our ssh config: no local Unix socket, which Windows' OpenSSH
  cannot use. On Linux and macOS `connect` writes client/relayhop.py instead (a relay
  connection OpenSSH holds between sessions: no Python import or relay log-in per ssh).
- The runtime's end-to-end check (``forwarded_port``) uses the OpenSSH tunnel's own ssh:
  ``-L 127.0.0.1:PORT:socket`` on a loopback port, then reads the banner.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from .errors import TunnelError
from .proc import die_with_parent, end_process

_CHUNK = 256 * 1024
_CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def forwarded_port(
    ssh_prefix: Sequence[str], host: str, remote_path: str, timeout: float
) -> Iterator[int]:
    """Yield a loopback TCP port that reaches ``remote_path`` on ``host`` through ssh -L."""
    port = _free_port()
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
        f"127.0.0.1:{port}:{remote_path}",
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
        while not _listening(port, proc.pid):
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
        yield port
    finally:
        end_process(proc)
        if proc.stderr is not None:
            proc.stderr.close()


def _listening(port: int, pid: int) -> bool:
    """Whether ``port`` is a listening loopback socket (without connecting to it: a connection
    would open a channel to the runtime)."""
    want = f"0100007F:{port:04X}"
    with contextlib.suppress(OSError):
        for line in open("/proc/net/tcp").read().splitlines()[1:]:  # noqa: SIM115
            fields = line.split()
            if fields[1] == want and fields[3] == "0A":
                return True
    return False


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


def read_banner(port: int, timeout: float) -> str:
    """The first line the far end of a loopback port sends (an SSH server's banner)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout) as s:
            s.settimeout(timeout)
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


async def _write(writer: Any, data: bytes) -> None:
    writer.write(data)
    await writer.drain()


async def _relay_stdio(config: str | None, relay: str, port: int | None, path: str) -> None:
    """stdin/stdout <-> ``path`` on the relay, over one asyncssh connection."""
    import asyncio

    import asyncssh

    user, _, host = relay.rpartition("@")
    extra: dict[str, Any] = {}
    if config:
        from .sshquote import host_options

        # asyncssh takes UserKnownHostsFile literally where OpenSSH expands %%: read the
        # pinned file's path as OpenSSH does (a folder named "50%done" stays pinned).
        with open(config, encoding="utf-8") as f:
            known = host_options(f.read(), host).get("userknownhostsfile")
        if known:
            extra["known_hosts"] = os.path.expanduser(known)
    conn = await asyncssh.connect(
        host,
        port=port or (),
        username=user or (),
        config=[config] if config else (),
        **extra,
        connect_timeout=30,
        # AES-GCM first: one call into OpenSSL per packet, where asyncssh's chacha20-poly1305
        # (its default first choice) costs two; the data rides inside the runtime's own SSH.
        encryption_algs=_CIPHERS,
    )
    async with conn:
        try:
            reader, writer = await conn.open_unix_connection(path)
        except asyncssh.ChannelOpenError as exc:
            raise TunnelError(
                f"the relay cannot open {path} ({exc.reason}): the runtime is not connected "
                f"to it right now"
            ) from None
        loop = asyncio.get_running_loop()
        main_task = asyncio.current_task()
        parent = os.getppid()
        for name in ("SIGTERM", "SIGHUP"):
            # ssh ends its ProxyCommand with SIGHUP (or SIGTERM): unwind inside the loop
            # rather than raising out of whatever it is doing.
            with contextlib.suppress(NotImplementedError, AttributeError, RuntimeError):
                if main_task is not None:
                    loop.add_signal_handler(getattr(signal, name), main_task.cancel)

        def upstream() -> None:
            # Blocking reads on a thread: Windows cannot select() on a pipe.
            with contextlib.suppress(OSError, RuntimeError):
                while data := os.read(sys.stdin.fileno(), _CHUNK):
                    asyncio.run_coroutine_threadsafe(_write(writer, data), loop).result()
                loop.call_soon_threadsafe(writer.write_eof)
                if os.getppid() != parent and main_task is not None:
                    # ssh is gone: nobody will read what the runtime still sends.
                    loop.call_soon_threadsafe(main_task.cancel)

        threading.Thread(target=upstream, daemon=True).start()
        out = sys.stdout.fileno()
        while data := await reader.read(_CHUNK):
            view = memoryview(data)
            while view:
                view = view[os.write(out, view) :]
        writer.close()


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """ProxyCommand: ``python -m handy_colab.streamlocal [-F CFG] RELAY SOCKET_PATH``.

    RELAY is a Host alias of CFG, or ``user@host[:port]``.
    """
    # asyncio (and asyncssh) only here: the runtime's checks import this module for its
    # socket helpers, and every start of `up` and of the supervisor would pay for it.
    import asyncio

    p = argparse.ArgumentParser(
        prog="handy-colab proxy", description="stdio to a Unix socket on the relay (ProxyCommand)"
    )
    p.add_argument("-F", dest="config", help="ssh config file holding the relay's Host block")
    p.add_argument("relay", help="Host alias, or user@host[:port]")
    p.add_argument("socket_path")
    args = p.parse_args(argv)
    # ssh ends its ProxyCommand with SIGTERM (or SIGHUP).
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _exit_on_signal)
    relay, port = args.relay, None
    host, sep, port_text = relay.rpartition(":")
    if "@" in relay and sep and port_text.isdigit():
        relay, port = host, int(port_text)
    import logging

    # asyncssh logs each connection's steps at INFO: not on ssh's terminal.
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    # No parent-death signal here: `ssh -f` forks and its first process exits while the
    # session goes on. An orphaned proxy notices its ssh is gone at stdin's EOF instead.
    code = 0
    try:
        asyncio.run(_relay_stdio(args.config, relay, port, args.socket_path))
    except (asyncio.CancelledError, KeyboardInterrupt):
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except Exception as exc:
        print(f"handy-colab proxy: {exc or type(exc).__name__}", file=sys.stderr)
        code = 255
    sys.stderr.flush()
    # A ProxyCommand must never outlive its session: no finalizer, and no thread still
    # blocked on stdin, may hold the process once the connection is closed.
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
