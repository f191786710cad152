"""`handy-colab forward NAME`: a local TCP port that carries each connection to a runtime.

For clients that cannot run a ProxyCommand or read an ``Include``d ssh config (PyCharm's
sshj, paramiko, Windows GUI tools): they connect to 127.0.0.1:PORT and get the runtime's
SSH server, through whatever route `connect` set up. The runtime's host key is pinned under
``[127.0.0.1]:PORT`` too, because such clients look keys up by the address they dial.
Threads and blocking pipes only: it runs the same way on Windows.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

from ..errors import ClientConfigError
from ..fsutil import read_text_or_empty
from ..proc import die_with_parent, end_process
from .laptop import KnownRuntime, proxy_argv
from .pins import address_pattern, keys_of, merge_known_hosts
from .sshconfig import write_if_changed

log = logging.getLogger(__name__)
_CHUNK = 64 * 1024


def pin_forward(rt: KnownRuntime, port: int) -> Path:
    """Pin the runtime's host keys (as `connect` pinned them under its alias) under
    ``[127.0.0.1]:port`` in the same known_hosts file."""
    known = rt.known_hosts
    if known is None:
        raise ClientConfigError(
            f"{rt.config_file}: the Host block of {rt.alias} names no UserKnownHostsFile. "
            f"Fix: run `handy-colab connect` for it again"
        )
    text = read_text_or_empty(known)
    keys = keys_of(text, rt.alias)
    if not keys:
        raise ClientConfigError(
            f"{known}: holds no host key for {rt.alias}. Fix: run `handy-colab connect` for it "
            f"again"
        )
    pattern = address_pattern("127.0.0.1", port)
    write_if_changed(
        known, merge_known_hosts(text, {pattern: [f"{pattern} {k}" for k in keys]}), 0o600
    )
    return known


def _pump_in(sock: socket.socket, sink: IO[bytes]) -> None:
    with contextlib.suppress(OSError, ValueError):
        while data := sock.recv(_CHUNK):
            sink.write(data)
            sink.flush()
    with contextlib.suppress(OSError, ValueError):
        sink.close()


def _pump_out(source: IO[bytes], sock: socket.socket) -> None:
    read = getattr(source, "read1", source.read)
    with contextlib.suppress(OSError, ValueError):
        while data := read(_CHUNK):
            sock.sendall(data)
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)


def _carry(client: socket.socket, rt: KnownRuntime) -> None:
    """One client connection, to its end: through the ProxyCommand, or straight to the
    runtime's public address."""
    argv = proxy_argv(rt)
    with client:
        if argv is None:
            host = rt.options.get("hostname", "")
            port = int(rt.options.get("port", "22"))
            try:
                upstream = socket.create_connection((host, port), timeout=15)
            except OSError as exc:
                log.warning("forward: %s:%d: %s", host, port, exc)
                return
            upstream.settimeout(None)
            with upstream:
                t = threading.Thread(target=_pump_in_sock, args=(client, upstream), daemon=True)
                t.start()
                _pump_in_sock(upstream, client)
                t.join()
            return
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                preexec_fn=die_with_parent if sys.platform != "win32" else None,
            )
        except OSError as exc:
            log.warning("forward: cannot start %s: %s", argv[0], exc)
            return
        assert proc.stdin is not None and proc.stdout is not None
        t = threading.Thread(target=_pump_in, args=(client, proc.stdin), daemon=True)
        t.start()
        _pump_out(proc.stdout, client)
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_RDWR)
        t.join(5)
        proc.stdout.close()
        end_process(proc)


def _pump_in_sock(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(_CHUNK):
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


def listen(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if sys.platform != "win32":
        # Windows' SO_REUSEADDR would let a second forward steal a bound port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        raise ClientConfigError(
            f"127.0.0.1:{port}: cannot listen ({exc.strerror}). Fix: pick another port with "
            f"--port (and enter that port in the IDE)"
        ) from None
    sock.listen(16)
    return sock


def serve(rt: KnownRuntime, port: int, ready: Callable[[int], None], stop: threading.Event) -> None:
    """Listen on 127.0.0.1:port until ``stop`` is set; each connection gets its own route."""
    with listen(port) as sock:
        bound = sock.getsockname()[1]
        pin_forward(rt, bound)
        sock.settimeout(0.5)
        ready(bound)
        while not stop.is_set():
            try:
                client, _ = sock.accept()
            except TimeoutError:
                continue
            client.settimeout(None)
            threading.Thread(target=_carry, args=(client, rt), daemon=True).start()
