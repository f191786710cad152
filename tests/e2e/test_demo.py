"""The README's main-job command runs the whole path and leaves nothing behind."""

from __future__ import annotations

import shutil
import subprocess

from tests.e2e.conftest import need_rig
from tests.e2e.test_embedded_nonroot import need_nonroot
from tests.nonroot import NonRoot


def _demo_processes() -> str:
    res = subprocess.run(["pgrep", "-af", "handy-colab-demo"], capture_output=True, text=True)
    return res.stdout


def test_demo_runs_and_cleans_up() -> None:
    need_rig()
    before = _demo_processes()
    res = subprocess.run(
        [shutil.which("handy-colab") or "handy-colab", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "embedded SSH server on 127.0.0.1" in res.stdout, res.stdout
    assert "through the relay" in res.stdout
    assert "StrictHostKeyChecking yes" in res.stdout
    assert _demo_processes() == before == ""


def test_demo_as_normal_user_without_any_openssh() -> None:
    """A fresh machine, no root, no OpenSSH client or server: the demo still runs end to end."""
    need_rig()
    need_nonroot()
    nr = NonRoot()
    try:
        res = subprocess.run(nr.argv("demo"), capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr + res.stdout
        out = res.stdout
        assert "embedded SSH server" in out and "embedded reverse tunnel" in out, out
        assert "no OpenSSH client here" in out, out
        assert f"hello from {nr.pw.pw_name}@" in out, out
        assert _demo_processes() == ""
    finally:
        nr.close()
