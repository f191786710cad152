"""Shared fixtures for the fast unit tests: real keys made once per session with ssh-keygen."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from handy_colab.descriptor import Descriptor

SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
SSH = shutil.which("ssh")

SEED_CONFIG: dict[str, Any] = {
    "tunnel_options": {
        "service_url": "user-12345.portmap.host",
        "service_port": 12345,
        "local_port": 12345,
    },
    "python_packages": ["glances"],
    "os_packages": ["tmux"],
}

# name -> extra ssh-keygen arguments
_KEY_SPECS: dict[str, list[str]] = {
    "rsa_pem": ["-t", "rsa", "-b", "2048", "-m", "PEM", "-N", ""],
    "ed25519": ["-t", "ed25519", "-N", ""],
    "ed25519_b": ["-t", "ed25519", "-N", ""],
    "ed25519_c": ["-t", "ed25519", "-N", ""],
    "ecdsa": ["-t", "ecdsa", "-b", "256", "-N", ""],
    "rsa_openssh": ["-t", "rsa", "-b", "2048", "-N", ""],
    "laptop": ["-t", "ed25519", "-N", "", "-C", "me@laptop"],
    "laptop2": ["-t", "ed25519", "-N", "", "-C", "me@desktop"],
    "enc_ed25519": ["-t", "ed25519", "-N", "secret-pass"],
    "enc_rsa_pem": ["-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "secret-pass"],
}


def ssh_g(config: Path, host: str) -> dict[str, str]:
    """`ssh -G` resolves the config for ``host`` without connecting; parse its output."""
    assert SSH is not None
    proc = subprocess.run(
        [SSH, "-G", "-F", str(config), host],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=20,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        key, _, value = line.partition(" ")
        result.setdefault(key.lower(), value)
    return result


class KeyStore:
    """Real key pairs, generated lazily once per session; copy them into test folders."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def private(self, name: str) -> Path:
        path = self.root / name
        if not path.exists():
            subprocess.run(
                [SSH_KEYGEN, "-q", *_KEY_SPECS[name], "-f", str(path)],
                check=True,
                stdin=subprocess.DEVNULL,
                capture_output=True,
            )
        return path

    def public(self, name: str) -> Path:
        self.private(name)
        return self.root / f"{name}.pub"

    def public_line(self, name: str) -> str:
        """The full .pub line, e.g. 'ssh-ed25519 AAAA... comment'."""
        return self.public(name).read_text().strip()

    def blob(self, name: str) -> str:
        """'type base64' without the comment."""
        return " ".join(self.public_line(name).split()[:2])

    def copy_private(self, name: str, dest: Path, mode: int = 0o600) -> Path:
        if dest.is_dir():
            dest = dest / name
        shutil.copyfile(self.private(name), dest)
        dest.chmod(mode)
        return dest

    def copy_public(self, name: str, dest: Path) -> Path:
        if dest.is_dir():
            dest = dest / f"{name}.pub"
        shutil.copyfile(self.public(name), dest)
        return dest


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyStore:
    return KeyStore(tmp_path_factory.mktemp("keystore"))


def write_config(folder: Path, data: Any) -> Path:
    path = folder / "user_config.json"
    if isinstance(data, (str, bytes)):
        if isinstance(data, str):
            path.write_text(data)
        else:
            path.write_bytes(data)
    else:
        path.write_text(json.dumps(data, indent=2))
    return path


@pytest.fixture
def seed_folder(tmp_path: Path, keys: KeyStore) -> Path:
    """The seed layout, unchanged: user_config.json, <user>.<cfg>.pem and public_key.pub."""
    folder = tmp_path / "cfg"
    folder.mkdir()
    write_config(folder, SEED_CONFIG)
    keys.copy_private("rsa_pem", folder / "alice.first.pem")
    keys.copy_public("laptop", folder / "public_key.pub")
    return folder


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary HOME so Path.home() and ~ never touch the real one."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("HOME", str(h))
    assert Path.home() == h
    return h


@pytest.fixture
def make_descriptor(keys: KeyStore) -> Callable[..., Descriptor]:
    def make(**over: Any) -> Descriptor:
        fields: dict[str, Any] = {
            "name": "colab",
            "mode": "public",
            "user": "root",
            "host_keys": [keys.blob("ed25519")],
            "relay_host": "relay.example.org",
            "relay_port": 2200,
            "relay_user": "alice",
            "relay_host_keys": [keys.blob("ecdsa")],
            "public_host": "public.example.org",
            "remote_port": 12345,
            "python": "/usr/bin/python3",
            "home": "/root",
            "forwards": [],
            "identity_hint": "",
            "socket_path": "/tmp/handy-colab-alice-colab.sock",
        }
        fields.update(over)
        return Descriptor(**fields)

    return make
