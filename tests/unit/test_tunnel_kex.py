"""The tunnel's key exchange: fast modern algorithms first, only those this ssh knows."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from handy_colab.tunnels import openssh

SSH = shutil.which("ssh") or "/usr/bin/ssh"


def _fake_ssh(tmp_path: Path, out: str, code: int = 0) -> str:
    script = tmp_path / "ssh"
    script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{out}EOF\nexit {code}\n")
    script.chmod(0o755)
    return str(script)


@pytest.fixture(autouse=True)
def _no_cache() -> None:
    openssh.tunnel_kex.cache_clear()


def test_this_ssh_gets_curve25519_first_and_no_sntrup_or_sha1() -> None:
    kex = openssh.tunnel_kex(SSH)
    assert kex is not None
    chosen = kex.split(",")
    assert chosen[0] in ("mlkem768x25519-sha256", "curve25519-sha256")
    assert "curve25519-sha256" in chosen
    assert not [k for k in chosen if "sntrup" in k or k.endswith("sha1")]
    assert chosen == [k for k in openssh.TUNNEL_KEX if k in chosen]  # TUNNEL_KEX's order


def test_mlkem_first_where_ssh_has_it(tmp_path: Path) -> None:
    listing = "sntrup761x25519-sha512\ncurve25519-sha256\nmlkem768x25519-sha256\n"
    listing += "diffie-hellman-group1-sha1\necdh-sha2-nistp256\n"
    kex = openssh.tunnel_kex(_fake_ssh(tmp_path, listing))
    assert kex == "mlkem768x25519-sha256,curve25519-sha256,ecdh-sha2-nistp256"


@pytest.mark.parametrize(
    ("listing", "code"),
    [("curve25519-sha256\n", 1), ("sntrup761x25519-sha512\ndiffie-hellman-group1-sha1\n", 0)],
    ids=["ssh-fails", "nothing-known"],
)
def test_ssh_default_when_it_cannot_say(tmp_path: Path, listing: str, code: int) -> None:
    assert openssh.tunnel_kex(_fake_ssh(tmp_path, listing, code)) is None


def test_no_such_ssh(tmp_path: Path) -> None:
    assert openssh.tunnel_kex(str(tmp_path / "missing")) is None


def test_the_laptops_held_relay_hop_offers_the_same() -> None:
    """client/relayhop.py runs as a script without the package: its copy of the list must
    not drift from the runtime's."""
    from handy_colab.client import relayhop

    assert relayhop.HOP_KEX == openssh.TUNNEL_KEX
    assert relayhop.hop_kex(SSH) == ["-o", f"KexAlgorithms={openssh.tunnel_kex(SSH)}"]
    assert relayhop.hop_kex("/nonexistent/ssh") == []
