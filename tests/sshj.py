"""The sshj test client (tests/peers/sshj): sshj, the SSH library JetBrains IDEs bundle, doing
what PyCharm's SSH interpreter does. Built by scripts/build-test-peers.sh into
PEERS_BIN/sshj-client.jar; this module finds it, runs it in a rig namespace and reads its
one JSON line.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PEERS_BIN = Path(os.environ.get("HANDY_COLAB_TEST_BIN", "/opt/handy-colab-test/bin"))
JAR = PEERS_BIN / "sshj-client.jar"

# The client's exit codes (SshjClient.java).
OK, UNKNOWN_KEY, CHANGED_KEY, AUTH_REFUSED = 0, 3, 4, 5


def prerequisites() -> list[str]:
    """What is missing to run the client ([] when it can run)."""
    missing = []
    if shutil.which("java") is None:
        missing.append("java (17 or newer)")
    if not JAR.is_file():
        missing.append(f"{JAR} (scripts/build-test-peers.sh builds it)")
    return missing


@dataclass
class Result:
    code: int
    data: dict[str, Any]
    stderr: str

    def __str__(self) -> str:
        return f"exit {self.code}: {json.dumps(self.data)}\nstderr: {self.stderr[-2000:]}"


def _parse(code: int, stdout: str, stderr: str) -> Result:
    lines = stdout.strip().splitlines()
    try:
        data = json.loads(lines[-1]) if lines else {}
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    return Result(code, data, stderr + ("" if data else f"\nstdout: {stdout[-2000:]}"))


def run(
    rig: Any,
    *,
    host: str,
    port: int,
    user: str,
    key: Path,
    known_hosts: Path,
    helpers: Path | None = None,
    remote_dir: str | None = None,
    python: str | None = None,
    remote_folder: str | None = None,
    forward: bool = False,
    role: str = "laptop",
    timeout: float = 30,
) -> Result:
    """The client in ``role``'s namespace: connect, verify, log in, then the steps asked."""
    argv = ["java", "-jar", str(JAR), "--host", host, "--port", str(port), "--user", user]
    argv += ["--key", str(key), "--known-hosts", str(known_hosts), "--timeout", str(timeout)]
    if helpers is not None:
        assert remote_dir is not None
        argv += ["--helpers", str(helpers), "--remote-dir", remote_dir]
    if python is not None:
        argv += ["--python", python]
    if remote_folder is not None:
        argv += ["--remote-folder", remote_folder]
    if forward:
        argv += ["--forward", "yes"]
    res = rig.run(role, argv, timeout=timeout * 4)
    return _parse(res.returncode, res.stdout, res.stderr)


def default_algorithms() -> dict[str, Any]:
    """What sshj's DefaultConfig offers (kex, hostkey, cipher, mac), in its order."""
    res = subprocess.run(
        ["java", "-jar", str(JAR), "--list-algorithms"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    data: dict[str, Any] = json.loads(res.stdout)
    return data


def make_helpers(root: Path) -> dict[str, str]:
    """A helpers tree like ~/.pycharm_helpers: a few nested files, one over 1 MiB. Returns
    relative path -> sha256."""
    files = {
        "pydev/pydevd.py": b"# debugger entry\n" * 40,
        "pydev/_pydevd_bundle/__init__.py": b"",
        "pydev/_pydevd_bundle/pydevd_comm.py": b"import socket\n" * 300,
        "packaging_tool.py": b"print('packaging')\n",
        "third_party/blob.bin": os.urandom(1536 * 1024 + 7),
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()}


def tree_hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def embedded_server_algorithms() -> dict[str, list[str]]:
    """What the embedded server (server/asyncssh_server.py) offers: asyncssh's defaults but
    its own cipher and MAC lists, no GSS key exchange (it sets no gss_host) and an ed25519
    host key."""
    import asyncssh.kex

    from handy_colab.server.asyncssh_server import _CIPHERS, _MACS

    return {
        "kex": [a.decode() for a in asyncssh.kex.get_default_kex_algs() if b"gss" not in a],
        "hostkey": ["ssh-ed25519"],
        "cipher": list(_CIPHERS),
        "mac": list(_MACS),
    }


def first_common(client: dict[str, Any], server: dict[str, list[str]]) -> dict[str, str | None]:
    """SSH's rule: for each kind, the client's first choice that the server offers."""
    return {k: next((a for a in client[k] if a in server[k]), None) for k in server}
