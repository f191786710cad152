"""The README's main-job command runs the whole path and leaves nothing behind."""

from __future__ import annotations

import shutil
import subprocess

from tests.e2e.conftest import need_rig


def test_demo_runs_and_cleans_up() -> None:
    need_rig()
    before = subprocess.run(["pgrep", "-f", "handy-colab-demo"], capture_output=True, text=True)
    res = subprocess.run(
        [shutil.which("handy-colab") or "handy-colab", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "through the relay" in res.stdout
    assert "StrictHostKeyChecking yes" in res.stdout
    after = subprocess.run(["pgrep", "-f", "handy-colab-demo"], capture_output=True, text=True)
    assert after.stdout == before.stdout == ""
