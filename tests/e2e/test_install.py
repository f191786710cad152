"""sshd missing + root + apt: `up` installs openssh-server itself (real apt-get run)."""

from __future__ import annotations

import os
import shutil

import pytest

from handy_colab.server import openssh


def test_ensure_sshd_installs_with_apt_when_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but this needs root and apt-get")
        pytest.skip("needs root and apt-get")
    calls: list[list[str]] = []
    real = openssh.run_subprocess

    def spy(argv: list[str], **kw: object) -> object:
        calls.append(list(argv))
        return real(argv, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(openssh, "run_subprocess", spy)
    monkeypatch.delenv("HANDY_COLAB_SSHD", raising=False)
    # Nothing on the search path: the install branch runs apt-get for real.
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    found = openssh.ensure_sshd(search=("/nonexistent/sshd",))
    assert any("openssh-server" in c for c in calls), calls
    assert os.access(found, os.X_OK) and found.endswith("sshd")
