"""`handy-colab demo`: the whole path on one machine, in a few seconds, then torn down.

A relay on loopback, a runtime brought up from a config folder exactly as on a notebook but
with the embedded SSH server (no root, no apt, no sshd needed), the laptop's ssh config
written to a temporary place, and a real ``ssh`` command run through the relay.

The throwaway relay is the embedded server too (it accepts ``-R`` like any OpenSSH relay),
so the demo needs nothing but this package; the tunnel client is OpenSSH's ``ssh`` when
installed, else the embedded one.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import runtime
from .client.connect import connect
from .descriptor import Descriptor
from .errors import HandyColabError
from .fsutil import atomic_write
from .keys import _generate_ed25519
from .proc import WatchedProcess, run_subprocess
from .server.base import free_port

NAME = "handy-colab-demo"


@dataclass
class DemoReport:
    steps: list[tuple[str, float]] = field(default_factory=list)
    ssh_output: str = ""
    workdir: str = ""


@contextlib.contextmanager
def _env(key: str, value: str) -> Iterator[None]:
    old = os.environ.get(key)
    os.environ[key] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def _write_key(path: Path) -> str:
    priv, pub = _generate_ed25519()
    atomic_write(path, priv, mode=0o600)
    atomic_write(path.with_name(path.name + ".pub"), pub + f" {path.name}\n")
    return pub


def _start_relay(d: Path, authorized: list[str]) -> tuple[WatchedProcess, int, str]:
    d.mkdir(parents=True, mode=0o700)
    host_pub = _write_key(d / "relay_host_key")
    atomic_write(d / "authorized_keys", "".join(k + "\n" for k in authorized), mode=0o600)
    port = free_port()
    settings = {
        "port": port,
        "host_key": str(d / "relay_host_key"),
        "authorized_keys": str(d / "authorized_keys"),
        "login_user": getpass.getuser(),
    }
    atomic_write(d / "relay.json", json.dumps(settings), mode=0o600)
    proc = WatchedProcess(
        [
            sys.executable,
            "-m",
            "handy_colab.server.asyncssh_server",
            "--config",
            str(d / "relay.json"),
        ],
        label="relay",
    )
    status, _ = proc.wait_for(re.compile("Server listening"), re.compile("rror"), 15)
    if status != "ready":
        tail = " | ".join(proc.last_lines(3))
        proc.stop()
        raise HandyColabError(f"the demo relay did not start: {tail}")
    return proc, port, host_pub


def _run_command(cfg: Path, key: Path, desc: Descriptor, command: str) -> tuple[str, str]:
    """(how, output) of ``command`` run on the runtime through the relay.

    With OpenSSH's client installed this is a real ``ssh -F cfg NAME``; on a machine without
    one, the same connection (pinned host key, the laptop key) is made with asyncssh.
    """
    ssh = shutil.which("ssh")
    if ssh is not None:
        out = run_subprocess(
            [ssh, "-F", str(cfg), "-o", "BatchMode=yes", desc.name, command], timeout=30
        )
        if out.returncode != 0:
            raise HandyColabError(f"ssh through the relay failed: {out.stderr.strip()}")
        return f"ssh -F {cfg} {desc.name} ...  (StrictHostKeyChecking yes)", out.stdout

    import asyncssh

    async def run() -> str:
        known = asyncssh.import_known_hosts(
            "".join(f"[{desc.host}]:{desc.port} {k}\n" for k in desc.host_keys)
        )
        async with asyncssh.connect(
            desc.host,
            desc.port,
            username=desc.user,
            client_keys=[str(key)],
            known_hosts=known,
            agent_path=None,
            config=[],
        ) as conn:
            res = await conn.run(command, check=True)
            return str(res.stdout)

    try:
        return (
            "no OpenSSH client here: the same connection with asyncssh (host key pinned)",
            asyncio.run(run()),
        )
    except (OSError, asyncssh.Error) as exc:
        raise HandyColabError(f"the connection through the relay failed: {exc}") from None


def run_demo(say: Callable[[str], None] = lambda _m: None) -> DemoReport:
    report = DemoReport()
    tmp = Path(tempfile.mkdtemp(prefix="handy-colab-demo-"))
    report.workdir = str(tmp)
    t0 = time.monotonic()

    def step(msg: str) -> None:
        report.steps.append((msg, time.monotonic() - t0))
        say(f"[{time.monotonic() - t0:5.2f}s] {msg}")

    user = getpass.getuser()
    relay: WatchedProcess | None = None
    with _env("HANDY_COLAB_STATE_DIR", str(tmp / "state")):
        try:
            folder = tmp / "drive" / "colab_data"
            folder.mkdir(parents=True)
            relay_pub = _write_key(folder / f"{user}.demo.pem")
            laptop_pub = _write_key(tmp / "laptop" / "id_ed25519")
            (folder / "laptop.pub").write_text(laptop_pub + " laptop\n")
            step(f"made a config folder {folder} with a relay key and the laptop's public key")
            relay, relay_port, relay_host_pub = _start_relay(tmp / "relay", [relay_pub])
            step(f"started a throwaway relay on 127.0.0.1:{relay_port} (embedded SSH server)")
            remote_port = free_port()
            (folder / "user_config.json").write_text(
                json.dumps(
                    {
                        "name": NAME,
                        "mode": "public",
                        "relay": {
                            "host": "127.0.0.1",
                            "port": relay_port,
                            "user": user,
                            "remote_port": remote_port,
                            "host_key": relay_host_pub,
                        },
                    },
                    indent=2,
                )
            )
            res = runtime.up(folder, timeout=30, install=False, server="embedded")
            srv, tun = res.state["server"], res.state["tunnel"]
            step(
                f"handy-colab up: {srv['kind']} SSH server on 127.0.0.1:{srv['port']}, "
                f"{tun['kind']} reverse tunnel ({tun['why']}), relay 127.0.0.1:{remote_port}"
            )
            cfg = tmp / "laptop" / "ssh_config"
            con = connect(
                folder,
                identity=tmp / "laptop" / "id_ed25519",
                ssh_config=cfg,
                known_hosts=tmp / "laptop" / "known_hosts",
            )
            step(f"handy-colab connect: wrote Host {con.name} to {cfg}, host key pinned")
            how, report.ssh_output = _run_command(
                cfg,
                tmp / "laptop" / "id_ed25519",
                res.descriptor,
                'echo "hello from $(whoami)@$(hostname) through the relay";'
                ' echo "python: $(command -v python3)"',
            )
            step(f"ran: {how}")
        finally:
            with contextlib.suppress(HandyColabError):
                runtime.down(NAME)
            if relay is not None:
                relay.stop()
            shutil.rmtree(tmp, ignore_errors=True)
    step("handy-colab down, relay stopped, temporary files removed")
    return report
