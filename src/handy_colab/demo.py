"""`handy-colab demo`: the whole path on one machine, in a few seconds, then torn down.

A relay (a throwaway OpenSSH sshd on loopback), a runtime brought up from a config folder
exactly as on a notebook, the laptop's ssh config written to a temporary place, and a real
``ssh`` command run through the relay.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import runtime
from .client.sshconfig import connect
from .errors import HandyColabError
from .fsutil import atomic_write
from .keys import _generate_ed25519
from .proc import WatchedProcess, run_subprocess
from .server.openssh import ensure_sshd, free_port

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
    sshd = ensure_sshd()
    d.mkdir(parents=True, mode=0o700)
    host_pub = _write_key(d / "relay_host_key")
    atomic_write(d / "authorized_keys", "".join(k + "\n" for k in authorized), mode=0o600)
    port = free_port()
    atomic_write(
        d / "sshd_config",
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {d / 'relay_host_key'}",
                f"AuthorizedKeysFile {d / 'authorized_keys'}",
                "StrictModes no",
                "UsePAM no",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                f"PidFile {d / 'sshd.pid'}",
                "AllowTcpForwarding yes",
                "GatewayPorts no",
                "",
            ]
        ),
        mode=0o600,
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    proc = WatchedProcess([sshd, "-D", "-e", "-f", str(d / "sshd_config")], label="relay")
    status, _ = proc.wait_for(re.compile("Server listening"), re.compile("fatal|error"), 10)
    if status != "ready":
        tail = " | ".join(proc.last_lines(3))
        proc.stop()
        raise HandyColabError(f"the demo relay did not start: {tail}")
    return proc, port, host_pub


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
            relay, relay_port, _ = _start_relay(tmp / "relay", [relay_pub])
            step(f"started a throwaway relay: OpenSSH sshd on 127.0.0.1:{relay_port}")
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
                        },
                    },
                    indent=2,
                )
            )
            res = runtime.up(folder, timeout=30, install=False)
            step(
                f"handy-colab up: sshd + reverse tunnel, relay 127.0.0.1:{remote_port} -> "
                f"runtime 127.0.0.1:{res.state['server']['port']}"
            )
            cfg = tmp / "laptop" / "ssh_config"
            con = connect(
                folder,
                identity=tmp / "laptop" / "id_ed25519",
                ssh_config=cfg,
                known_hosts=tmp / "laptop" / "known_hosts",
            )
            step(f"handy-colab connect: wrote Host {con.name} to {cfg}, host key pinned")
            ssh = shutil.which("ssh") or "ssh"
            out = run_subprocess(
                [
                    ssh,
                    "-F",
                    str(cfg),
                    "-o",
                    "BatchMode=yes",
                    NAME,
                    'echo "hello from $(whoami)@$(hostname) through the relay";'
                    ' echo "python: $(command -v python3)"',
                ],
                timeout=30,
            )
            if out.returncode != 0:
                raise HandyColabError(f"ssh through the relay failed: {out.stderr.strip()}")
            report.ssh_output = out.stdout
            step(f"ran: ssh -F {cfg} {NAME} ...  (StrictHostKeyChecking yes)")
        finally:
            with contextlib.suppress(HandyColabError):
                runtime.down(NAME)
            if relay is not None:
                relay.stop()
            shutil.rmtree(tmp, ignore_errors=True)
    step("handy-colab down, relay stopped, temporary files removed")
    return report
