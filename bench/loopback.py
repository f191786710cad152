"""What the loopback benchmarks share: a client key and a config folder for one runtime.

Imported by bench_server_loopback.py and bench_session.py (run as scripts from bench/).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))

from handy_colab.config import RuntimeConfig, load_config  # noqa: E402
from handy_colab.keys import PrivateKey, ensure_host_key  # noqa: E402


def keygen(path: Path) -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return path


def loopback_runtime(tmp: Path) -> tuple[RuntimeConfig, PrivateKey, Path]:
    """(config, host key, client key) of a runtime named "bench" whose relay is never used;
    the client key is the one authorized key. HANDY_COLAB_STATE_DIR must point into tmp."""
    keys = tmp / "keys"
    keys.mkdir()
    client_key = keygen(keys / "client")
    folder = tmp / "cfg"
    folder.mkdir()
    shutil.copy(keygen(keys / "relay"), folder / "relay_key")
    shutil.copy(f"{client_key}.pub", folder / "client.pub")
    (folder / "user_config.json").write_text(
        json.dumps(
            {
                "name": "bench",
                "relay": {"host": "relay.invalid", "remote_port": 2222, "key": "relay_key"},
                "server": {"kind": "embedded"},
            }
        )
    )
    return load_config(folder), ensure_host_key(folder), client_key


def write_client_config(
    tmp: Path, hosts: dict[str, int], user: str, client_key: Path, host_key_line: str
) -> Path:
    """An ssh config with one Host per loopback port, all pinned to the one host key."""
    known = tmp / "known_hosts"
    known.write_text(",".join(f"[127.0.0.1]:{p}" for p in hosts.values()) + f" {host_key_line}\n")
    lines = []
    for name, port in hosts.items():
        lines += [
            f"Host {name}",
            "  HostName 127.0.0.1",
            f"  Port {port}",
            f"  User {user}",
            f"  IdentityFile {client_key}",
            "  IdentitiesOnly yes",
            f"  UserKnownHostsFile {known}",
            "  GlobalKnownHostsFile /dev/null",
            "  StrictHostKeyChecking yes",
            "  BatchMode yes",
            "",
        ]
    path = tmp / "ssh_config"
    path.write_text("\n".join(lines))
    return path
