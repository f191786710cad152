"""Where a runtime's live state lives (pid, state.json, logs, private copies of keys).

Kept outside the config folder on purpose: the folder may be a slow or read-only Drive
mount, while this directory is local, private (0700) and thrown away with the runtime.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import StateError
from .fsutil import atomic_write


def state_root() -> Path:
    env = os.environ.get("HANDY_COLAB_STATE_DIR")
    if env:
        return Path(env).expanduser().resolve()
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return (base / "handy-colab").resolve()


# `up` hands the supervisor the write end of a pipe under this name (a file descriptor
# number); one byte on it says "state.json has news", so `up` need not poll for readiness.
READY_FD_ENV = "HANDY_COLAB_READY_FD"


@dataclass(frozen=True)
class RuntimeDir:
    path: Path

    @classmethod
    def for_name(cls, name: str) -> RuntimeDir:
        return cls(state_root() / name)

    def ensure(self) -> RuntimeDir:
        try:
            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(self.path, 0o700)
        except OSError as exc:
            raise StateError(
                f"{self.path}: cannot create the state directory ({exc.strerror}). "
                f"Fix: set HANDY_COLAB_STATE_DIR to a writable local folder"
            ) from None
        return self

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def state_json(self) -> Path:
        return self.path / "state.json"

    @property
    def log_file(self) -> Path:
        return self.path / "supervisor.log"

    @property
    def lock_file(self) -> Path:
        return self.path / "supervisor.lock"

    @property
    def up_lock(self) -> Path:
        return self.path / "up.lock"

    @property
    def sshd_config(self) -> Path:
        return self.path / "sshd_config"

    @property
    def authorized_keys(self) -> Path:
        return self.path / "authorized_keys"

    @property
    def host_key(self) -> Path:
        return self.path / "ssh_host_ed25519_key"

    @property
    def relay_key(self) -> Path:
        return self.path / "relay_key"

    @property
    def tunnel_config(self) -> Path:
        return self.path / "tunnel_ssh_config"

    @property
    def known_hosts(self) -> Path:
        return self.path / "relay_known_hosts.pinned"

    @property
    def sshd_pid(self) -> Path:
        return self.path / "sshd.pid"

    def read_state(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self.state_json.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None
        return data

    def write_state(self, data: dict[str, Any]) -> None:
        data = dict(data, updated=time.time())
        try:
            atomic_write(self.state_json, json.dumps(data, indent=2, sort_keys=True), mode=0o600)
        except OSError as exc:
            raise StateError(
                f"{self.state_json}: cannot write the runtime's state "
                f"({exc.strerror}). Fix: free space there, or set "
                f"HANDY_COLAB_STATE_DIR to a writable local folder"
            ) from None


def list_runtimes() -> list[RuntimeDir]:
    root = state_root()
    if not root.is_dir():
        return []
    return [RuntimeDir(p) for p in sorted(root.iterdir()) if (p / "state.json").exists()]


def new_record(
    name: str,
    run_id: str,
    folder: str,
    mode: str,
    server: tuple[str, str],
    tunnel: tuple[str, str],
) -> dict[str, Any]:
    """A supervisor's state.json as it starts: ``server``/``tunnel`` are (kind, why)."""
    now = time.time()
    return {
        "name": name,
        "run_id": run_id,
        "pid": os.getpid(),
        "pgid": os.getpgid(0),
        "folder": folder,
        "mode": mode,
        "phase": "starting",
        "since": now,
        "error": None,
        "server": {
            "kind": server[0],
            "why": server[1],
            "state": "starting",
            "since": now,
            "restarts": 0,
            "pid": None,
            "port": None,
            "last_error": None,
        },
        "tunnel": {
            "kind": tunnel[0],
            "why": tunnel[1],
            "state": "starting",
            "since": now,
            "reconnects": 0,
            "pid": None,
            "endpoint": None,
            "last_error": None,
        },
    }
