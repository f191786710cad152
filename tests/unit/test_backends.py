"""Which server/tunnel `auto` picks, from the facts of the machine (euid, sshd, ssh on PATH)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from handy_colab import backends


def _exe(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    p.write_text("#!/bin/sh\nexit 0\n")
    p.chmod(0o755)
    return p


def test_explicit_choice_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert backends.choose_server("openssh").kind == "openssh"
    assert backends.choose_server("embedded").kind == "embedded"
    assert backends.choose_tunnel("openssh").kind == "openssh"
    assert "relay.client" in backends.choose_tunnel("embedded").reason


def test_auto_server_non_root_is_embedded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HANDY_COLAB_SSHD", str(_exe(tmp_path, "sshd")))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    choice = backends.choose_server("auto")
    assert choice.kind == "embedded" and "not root" in choice.reason


def test_auto_server_root_with_sshd_is_openssh(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    sshd = _exe(tmp_path, "sshd")
    monkeypatch.setenv("HANDY_COLAB_SSHD", str(sshd))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    choice = backends.choose_server("auto")
    assert choice.kind == "openssh" and str(sshd) in choice.reason


def test_auto_server_root_without_sshd_is_embedded(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HANDY_COLAB_SSHD", str(tmp_path / "missing"))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    choice = backends.choose_server("auto")
    assert choice.kind == "embedded" and "no sshd" in choice.reason


def test_auto_tunnel_follows_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert backends.choose_tunnel("auto").kind == "embedded"
    ssh = _exe(tmp_path / "bin", "ssh")
    monkeypatch.setenv("PATH", str(ssh.parent))
    choice = backends.choose_tunnel("auto")
    assert choice.kind == "openssh" and str(ssh) in choice.reason


def test_routes_choose_their_tunnel(tmp_path: Path) -> None:
    from handy_colab.config import load_config, route_of_tunnel
    from handy_colab.errors import ConfigError

    folder = tmp_path / "cfg"
    folder.mkdir()
    pub = tmp_path / "k"
    import subprocess

    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(pub)], check=True)
    (folder / "laptop.pub").write_text(Path(f"{pub}.pub").read_text())
    (folder / "user_config.json").write_text("{}")
    cfg = load_config(folder)
    choice = backends.choose_tunnel(None, cfg)
    assert choice.kind == "cloudflared" and "no relay" in choice.reason
    assert backends.choose_tunnel("frp", cfg).kind == "frp"
    with pytest.raises(ConfigError, match="needs a relay"):
        backends.choose_tunnel("openssh", cfg)
    assert [route_of_tunnel(t) for t in ("frp", "cloudflared", "openssh", "embedded", None)] == [
        "frp",
        "cloudflared",
        "relay",
        "relay",
        None,
    ]
