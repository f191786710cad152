"""The frp route, laptop half: ``connect`` writes a visitor profile, and the ProxyCommand
(``python -m handy_colab.tunnels.frp_visitor PROFILE``) runs frpc as a visitor on a loopback
port of its own choosing, pumps stdio through it, and leaves nothing behind.

The profile (0600, beside the pinned known_hosts) holds what the descriptor must not: frps's
token and the proxy's secret, copied from the config folder at `connect` time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ClientConfigError, HandyColabError
from ..fsutil import atomic_write
from ..proc import die_with_parent, end_process, pid_alive
from ..streamlocal import pump
from .common import free_port
from .frp_config import FrpConfig

PROFILE_FIELDS = ("server", "port", "server_name", "proxy", "mode", "stun")


def profile_text(
    frp: dict[str, Any], mode: str, token: str | None, secret: str, ca_pem: str | None
) -> str:
    """The visitor's profile (it holds the secret: the caller writes it 0600)."""
    data = {k: frp[k] for k in ("server", "port", "server_name", "proxy", "stun")}
    data.update(mode=mode, token=token, secret=secret, ca_pem=ca_pem)
    return json.dumps(data, indent=2) + "\n"


def visitor_config(p: dict[str, Any], workdir: Path, port: int) -> str:
    """frpc's config for the visitor(s): stcp, or xtcp with the stcp visitor as fallback."""
    from .frp_common import common_lines, toml_str

    ca = None
    if p.get("ca_pem"):
        ca = workdir / "ca.pem"
        ca.write_text(p["ca_pem"])
    settings = FrpConfig(
        server=p["server"],
        port=int(p["port"]),
        mode=p["mode"],
        proxy_name=p["proxy"],
        server_name=p["server_name"],
    )
    lines = common_lines(settings, p.get("token"), str(ca) if ca else None)
    secret = f"secretKey = {toml_str(p['secret'])}"
    if p["mode"] == "private":
        lines += [
            "[[visitors]]",
            'name = "ssh"',
            'type = "stcp"',
            f"serverName = {toml_str(p['proxy'])}",
            secret,
            'bindAddr = "127.0.0.1"',
            f"bindPort = {port}",
        ]
        return "\n".join(lines) + "\n"
    lines.insert(0, f"natHoleStunServer = {toml_str(p['stun'])}")
    lines += [
        "[[visitors]]",
        'name = "p2p"',
        'type = "xtcp"',
        f"serverName = {toml_str(p['proxy'])}",
        secret,
        'bindAddr = "127.0.0.1"',
        f"bindPort = {port}",
        "transport.useEncryption = true",
        'fallbackTo = "relay"',
        # The punch takes about a second: frp's default 1000 ms falls back just before it
        # succeeds (measured), and the session then stays relayed for its whole life.
        "fallbackTimeoutMs = 3000",
        "",
        "[[visitors]]",
        'name = "relay"',
        'type = "stcp"',
        f"serverName = {toml_str(p['proxy'] + '-relay')}",
        secret,
        "bindPort = -1",
    ]
    return "\n".join(lines) + "\n"


def _frpc() -> str:
    from ..binaries import Installer
    from .frp_common import FRPC

    resolved = Installer(FRPC).resolve()  # checked again just now: it runs at once
    return str(resolved.path)


_WORKDIR_PREFIX = "hc-frpv-"


def _sweep_stale_workdirs() -> None:
    """Remove the folders of visitors that were killed outright (SIGKILL runs no cleanup):
    each folder's name carries its proxy's pid. POSIX only (Windows' os.kill terminates)."""
    if os.name != "posix":
        return
    for d in Path(tempfile.gettempdir()).glob(f"{_WORKDIR_PREFIX}*-*"):
        pid = d.name[len(_WORKDIR_PREFIX) :].split("-", 1)[0]
        with contextlib.suppress(OSError):
            if pid.isdigit() and d.stat().st_uid == os.getuid() and not pid_alive(int(pid)):
                shutil.rmtree(d, ignore_errors=True)


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _ignore_hangups() -> None:
    for sig in (signal.SIGTERM, signal.SIGHUP) if hasattr(signal, "SIGHUP") else ():
        signal.signal(sig, signal.SIG_IGN)


def run(profile: Path) -> int:
    try:
        p = json.loads(profile.read_text())
        if not isinstance(p, dict) or any(k not in p for k in (*PROFILE_FIELDS, "secret")):
            raise ValueError("fields missing")
    except (OSError, ValueError) as exc:
        raise ClientConfigError(
            f"{profile}: cannot read the frp visitor profile ({exc}). Fix: run "
            f"`handy-colab connect` again from the config folder"
        ) from None
    frpc = _frpc()
    _sweep_stale_workdirs()
    workdir = Path(tempfile.mkdtemp(prefix=f"{_WORKDIR_PREFIX}{os.getpid()}-"))  # 0700
    proc: subprocess.Popen[bytes] | None = None
    try:
        port = free_port()
        cfg = workdir / "frpc.toml"
        atomic_write(cfg, visitor_config(p, workdir, port), 0o600)
        log = open(workdir / "frpc.log", "wb")  # noqa: SIM115 - the child's, closed below
        # Tied to us: however this ProxyCommand ends, its visitor ends with it.
        proc = subprocess.Popen(
            [frpc, "-c", str(cfg)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            preexec_fn=die_with_parent if sys.platform.startswith("linux") else None,
        )
        log.close()
        deadline = time.monotonic() + 20
        sock = None
        while sock is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (workdir / "frpc.log").read_text(errors="replace").strip().splitlines()
                raise ClientConfigError(
                    f"frpc visitor for {p['proxy']} did not start "
                    f"({tail[-1][-200:] if tail else 'no output'}). Fix: check frps "
                    f"{p['server']}:{p['port']} is reachable, and `handy-colab status` on the "
                    f"runtime"
                )
            with contextlib.suppress(OSError):
                sock = socket.create_connection(("127.0.0.1", port), timeout=2)
                sock.settimeout(None)
                break
            time.sleep(0.05)
        with sock:
            pump(sock, sys.stdin.fileno(), sys.stdout.fileno())
        return 0
    finally:
        # ssh hangs up on its ProxyCommand when the session ends, often while this cleanup
        # runs: the signal must not cut it short (a visitor or its folder would be left).
        _ignore_hangups()
        if proc is not None:
            end_process(proc)
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="handy-colab proxy --frp", description="stdio to an frp stcp/xtcp proxy"
    )
    ap.add_argument("profile", type=Path)
    args = ap.parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP) if hasattr(signal, "SIGHUP") else ():
        signal.signal(sig, _exit_on_signal)
    try:
        return run(args.profile)
    except HandyColabError as exc:
        print(f"handy-colab proxy: {exc}", file=sys.stderr)
        return 255


if __name__ == "__main__":
    sys.exit(main())
