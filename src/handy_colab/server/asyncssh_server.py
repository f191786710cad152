"""The embedded SSH server: a pure-Python stand-in for sshd where sshd cannot run.

Run as ``python -m handy_colab.server.asyncssh_server --config /abs/embedded_server.json``
(``EmbeddedServer`` in embedded.py writes the config and watches the process). It needs no
root, no binaries and no apt: key-only login for one user, a login shell on a PTY, exec with
exit codes and signals, SFTP, scp (both protocols), and TCP/Unix-socket forwards.

It prints ``READY_LINE`` once it accepts connections and logs one line per auth decision
(key fingerprints only), per session start/end and per error, all to stderr. On SIGTERM,
SIGINT or SIGHUP it closes every connection, hangs up every session's process group, kills
whatever is left, and exits 0: nothing it started survives it.

This module is the process's entry: what it listens on and offers, its signals and log
format. The rest is one concept per module: settings.py (the config file), connection.py
(auth and forwarding), shell.py (sessions), sftp.py, terminal.py (PTYs), pumps.py (the data
path), children.py (starting and reaping session processes) and daemon.py (shared state and
shutdown).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import sys
from pathlib import Path

import asyncssh

from .base import READY_LINE
from .children import become_subreaper
from .daemon import Daemon
from .settings import Settings

log = logging.getLogger(__name__)

# OpenSSH picks the first cipher of its own list that the server offers. Its first choice,
# chacha20-poly1305, costs asyncssh four cipher set-ups per packet (measured ~0.75x of
# sshd's throughput); AES-CTR/GCM keep one context per key and run at or above sshd's
# chacha20 speed. Not offering chacha20 makes stock clients pick aes128-ctr (or GCM).
_CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
)
# asyncssh's default MACs less SHA-1 (and ssh.com's variants): what OpenSSH 9.x offers first
# stays (umac, hmac-sha2 etm); a client that would take hmac-sha1 first (sshj) gets sha2.
_MACS = (
    "umac-64-etm@openssh.com",
    "umac-128-etm@openssh.com",
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
    "umac-64@openssh.com",
    "umac-128@openssh.com",
    "hmac-sha2-256",
    "hmac-sha2-512",
)


async def serve(settings: Settings) -> int:
    loop = asyncio.get_running_loop()
    daemon = Daemon(settings, loop)
    daemon.reaper.install()
    become_subreaper()
    try:
        host_key = asyncssh.read_private_key(settings.host_key)
    except (OSError, asyncssh.KeyImportError, ValueError) as exc:
        log.critical("Unable to load host key %s: %s", settings.host_key, exc)
        return 1
    try:
        acceptor = await asyncssh.listen(
            "127.0.0.1",
            settings.port,
            server_factory=daemon.new_connection,
            server_host_keys=[host_key],
            encoding=None,
            line_editor=False,
            agent_forwarding=False,
            x11_forwarding=False,
            gss_host=None,
            password_auth=False,
            kbdint_auth=False,
            encryption_algs=list(_CIPHERS),
            mac_algs=list(_MACS),
            keepalive_interval=15,
            keepalive_count_max=4,
            login_timeout=60,
            reuse_address=True,
        )
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        log.critical("Bind to port %d on 127.0.0.1 failed: %s.", settings.port, reason)
        return 1
    port = acceptor.get_port()
    daemon.settings = dataclasses.replace(settings, port=port)
    stop = asyncio.Event()
    received: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, on_signal, sig)
    print(READY_LINE.format(port=port), file=sys.stderr, flush=True)
    await stop.wait()
    log.info("Received %s; closing connections and sessions", received[0])
    acceptor.close()
    await daemon.shutdown()
    return 0


class _Formatter(logging.Formatter):
    """sshd-like lines: bare messages, "error: "/"fatal: " prefixes (EmbeddedServer matches
    "fatal: " at start-up)."""

    _PREFIX = {logging.WARNING: "warning: ", logging.ERROR: "error: ", logging.CRITICAL: "fatal: "}

    def format(self, record: logging.LogRecord) -> str:
        return self._PREFIX.get(record.levelno, "") + super().format(record)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, type=Path)
    args = parser.parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter("%(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    # asyncssh logs every channel and request at INFO; ours are the lines worth keeping.
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    try:
        settings = Settings.load(args.config)
    except (OSError, ValueError) as exc:
        log.critical("bad config %s: %s", args.config, exc)
        return 2
    return asyncio.run(serve(settings))


if __name__ == "__main__":
    sys.exit(main())
