"""SSH over a Cloudflare Tunnel's WebSocket, without cloudflared: the laptop's ProxyCommand
(``handy-colab proxy --ws HOST``) and the runtime's end-to-end check.

What ``cloudflared access ssh --hostname HOST`` does, in Python: a WebSocket to
``wss://HOST/`` (TLS verified against the system's CAs; the usual proxy variables honoured),
each read of stdin sent as one binary message, every message received written to stdout.
Two limits of the far end shape it: cloudflared copies a client message into a 16 KiB
buffer and silently drops the rest, so no message is bigger; and Cloudflare resets a
WebSocket that stays idle for about 100 s, so pings keep it alive. Reads block in threads
(no ``select`` on stdin), so the same code serves Windows.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .. import __version__
from ..errors import TunnelError
from .cloudflared_config import valid_hostname

if TYPE_CHECKING:
    from websockets.sync.client import ClientConnection

logger = logging.getLogger(__name__)

MAX_MESSAGE = 16 * 1024
OPEN_ATTEMPTS = 3
RETRY_PAUSE = 0.2
PING_INTERVAL = 20.0


def url_of(hostname: str) -> str:
    return f"wss://{hostname}/"


def open_ws(hostname: str, timeout: float) -> ClientConnection:
    """The WebSocket to ``hostname``; TunnelError (one line, with the fix) when it fails."""
    return open_url(url_of(hostname), timeout)


def open_url(url: str, timeout: float) -> ClientConnection:
    """The WebSocket at ``url``, with up to OPEN_ATTEMPTS tries within ``timeout`` when the far
    end drops the connection before it answers (an edge node reset, not an answer: the next
    try usually lands elsewhere). Any HTTP answer, a name or certificate error is final."""
    from websockets.exceptions import InvalidMessage

    deadline = time.monotonic() + timeout
    for attempt in range(1, OPEN_ATTEMPTS + 1):
        left = deadline - time.monotonic()
        try:
            return _open_once(url, max(left, 0.1))
        except (InvalidMessage, ConnectionResetError) as exc:
            if attempt == OPEN_ATTEMPTS or left <= RETRY_PAUSE * attempt + 1:
                raise _cannot_open(url, exc) from None
            logger.info("%s: no answer (%s); trying again", url, exc)
            time.sleep(RETRY_PAUSE * attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def _cannot_open(url: str, exc: BaseException) -> TunnelError:
    return TunnelError(
        f"{url}: cannot open the WebSocket ({exc or type(exc).__name__}). Fix: check the "
        f"network (or https_proxy) and `handy-colab status` on the runtime"
    )


def _open_once(url: str, timeout: float) -> ClientConnection:
    from websockets.exceptions import InvalidHandshake, InvalidMessage, InvalidStatus
    from websockets.sync.client import connect

    try:
        conn = connect(
            url,
            open_timeout=timeout,
            # SSH is encrypted (incompressible) and the far end counts raw message sizes.
            compression=None,
            max_size=None,
            ping_interval=PING_INTERVAL,
            ping_timeout=PING_INTERVAL,
            close_timeout=2,
            user_agent_header=f"handy-colab/{__version__}",
        )
        # Held past this call (its holder closes it): websockets >= 17.1 wants it entered as
        # a context manager for that (its legacy=True, which older versions refuse, is the
        # other way); entering only marks it so.
        return conn.__enter__()
    except (InvalidMessage, ConnectionResetError):
        raise
    except InvalidStatus as exc:
        code = exc.response.status_code
        why = {
            530: "the tunnel is not connected to Cloudflare (runtime down or restarting)",
            502: "the tunnel is up but the runtime's SSH server did not answer",
            404: "no tunnel serves this hostname",
            429: "too many requests to this tunnel",
        }.get(code, "the edge refused the WebSocket")
        raise TunnelError(
            f"{url}: HTTP {code}: {why}. Fix: check `handy-colab status` on the runtime"
        ) from None
    except socket.gaierror as exc:
        raise TunnelError(
            f"{url}: the name does not resolve ({exc.strerror}). Fix: a new quick tunnel's "
            f"name can take a few seconds to appear; check `handy-colab status` on the runtime"
        ) from None
    except ssl.SSLCertVerificationError as exc:
        raise TunnelError(
            f"{url}: TLS certificate not trusted ({exc.verify_message}); refusing to connect. "
            f"Fix: check the network for an intercepting proxy, or point SSL_CERT_FILE at its CA"
        ) from None
    except (TimeoutError, InvalidHandshake, OSError) as exc:
        raise _cannot_open(url, exc) from None


def read_banner(hostname: str, timeout: float) -> str:
    """The first line the runtime's SSH server sends through the tunnel ("" if none)."""
    from websockets.exceptions import ConnectionClosed

    conn = open_ws(hostname, timeout)
    deadline = time.monotonic() + timeout
    data = b""
    try:
        while b"\n" not in data and len(data) < 256:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            msg = conn.recv(timeout=left)
            data += msg if isinstance(msg, bytes) else msg.encode()
    except (TimeoutError, ConnectionClosed):
        pass
    finally:
        conn.close()
    return data.decode(errors="replace")


def pump(conn: ClientConnection, in_fd: int, out_fd: int) -> None:
    """Carry bytes between stdio and the WebSocket until either side ends."""
    from websockets.exceptions import ConnectionClosed

    def upstream() -> None:
        try:
            while True:
                data = os.read(in_fd, MAX_MESSAGE)
                if not data:
                    break
                conn.send(data)
        except (OSError, ConnectionClosed):
            pass
        # WebSockets have no half-close: ssh closes our stdin only when it is done.
        conn.close()

    threading.Thread(target=upstream, name="ws-upstream", daemon=True).start()
    try:
        for msg in conn:
            view = memoryview(msg if isinstance(msg, bytes) else msg.encode())
            while view:
                view = view[os.write(out_fd, view) :]
    except (OSError, ConnectionClosed):
        pass


def current_hostname(descriptor: Path | None, fallback: str) -> tuple[str, str | None]:
    """The hostname to open: the descriptor's latest (a quick tunnel's name changes on every
    restart), else ``fallback``. The second item says why the fallback was used, if it was."""
    if descriptor is None:
        return fallback, None
    try:
        data = json.loads(descriptor.read_text())
    except (OSError, ValueError) as exc:
        return fallback, f"cannot read {descriptor} ({getattr(exc, 'strerror', None) or exc})"
    name = data.get("hostname") if isinstance(data, dict) else None
    checked = valid_hostname(name) if isinstance(name, str) else None
    if checked is None or data.get("route") != "cloudflared":
        return fallback, f"{descriptor} holds no cloudflared hostname"
    return checked, None


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """``handy-colab proxy --ws [--descriptor FILE] [--cloudflared-access] HOST``."""
    p = argparse.ArgumentParser(
        prog="handy-colab proxy --ws",
        description="stdio to a Cloudflare Tunnel's WebSocket (ssh ProxyCommand)",
    )
    p.add_argument("--descriptor", type=Path, help="connections/NAME.json to follow")
    p.add_argument(
        "--cloudflared-access",
        action="store_true",
        help="hand the connection to `cloudflared access ssh` instead",
    )
    p.add_argument("host", help="the tunnel's hostname when the descriptor cannot be read")
    args = p.parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP) if hasattr(signal, "SIGHUP") else ():
        signal.signal(sig, _exit_on_signal)
    fallback = valid_hostname(args.host)
    if fallback is None:
        print(f"handy-colab proxy: '{args.host}' is not a host name", file=sys.stderr)
        return 255
    host, why = current_hostname(args.descriptor, fallback)
    if why is not None:
        print(f"handy-colab proxy: {why}; using {host}", file=sys.stderr)
    if args.cloudflared_access:
        exe = shutil.which("cloudflared")
        if exe is None:
            print(
                "handy-colab proxy: `cloudflared` is not on PATH. Fix: install it, or drop "
                "--cloudflared-access (handy-colab opens the WebSocket itself)",
                file=sys.stderr,
            )
            return 255
        os.execv(exe, [exe, "access", "ssh", "--hostname", host])
    try:
        conn = open_ws(host, 15)
    except TunnelError as exc:
        print(f"handy-colab proxy: {exc}", file=sys.stderr)
        return 255
    with contextlib.closing(conn):
        pump(conn, sys.stdin.fileno(), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
