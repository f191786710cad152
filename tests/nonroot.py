"""Run handy-colab as a normal user with no OpenSSH binaries, as on a locked-down runtime.

The tests run as root (network namespaces need it); the runtime side then drops to an
unprivileged account with `runuser`. That account cannot execute this machine's default
Python (it lives under /root), so it gets the system Python with the runtime's dependencies
(a venv that `scripts/setup.sh test` makes) and a readable copy of this checkout's package.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import tempfile
from pathlib import Path

from tests.rig import REPO, sh

USER = "hcuser"
VENV_PYTHON = Path("/opt/handy-colab-test/nonroot-venv/bin/python")
# OpenSSH's programs: a PATH without them is a runtime with no OpenSSH installed.
OPENSSH_PROGRAMS = {
    "ssh",
    "sshd",
    "scp",
    "sftp",
    "ssh-keygen",
    "ssh-keyscan",
    "ssh-agent",
    "ssh-add",
    "ssh-copy-id",
    "ssh-argv0",
    "slogin",
    "sftp-server",
}


def prerequisites() -> list[str]:
    missing = []
    if not VENV_PYTHON.exists():
        missing.append(f"{VENV_PYTHON} (run scripts/setup.sh test as root)")
    if shutil.which("runuser") is None:
        missing.append("runuser")
    return missing


def ensure_user(name: str = USER) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        sh("useradd", "--create-home", "--shell", "/bin/bash", name)
        return pwd.getpwnam(name)


class NonRoot:
    """A private, readable copy of the package, a PATH without OpenSSH, and a home for state."""

    def __init__(self, name: str = USER) -> None:
        self.pw = ensure_user(name)
        # /tmp/pytest-of-root is 0700: the user's files live in a world-traversable dir.
        self.root = Path(tempfile.mkdtemp(prefix="hc-nonroot-", dir="/var/tmp"))
        self.root.chmod(0o755)
        self.pkg = self.root / "pkg"
        shutil.copytree(
            REPO / "src" / "handy_colab",
            self.pkg / "handy_colab",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        self.bin = self.root / "bin"
        self.bin.mkdir()
        for d in ("/usr/local/bin", "/usr/bin", "/bin"):
            for entry in sorted(Path(d).iterdir()) if Path(d).is_dir() else []:
                target = self.bin / entry.name
                if entry.name in OPENSSH_PROGRAMS or entry.name.startswith("ssh-"):
                    continue
                if not target.exists() and not target.is_symlink():
                    target.symlink_to(entry)
        # `python3` on this PATH is the one the user can run, with the dependencies.
        for alias in ("python", "python3"):
            link = self.bin / alias
            link.unlink(missing_ok=True)
            link.symlink_to(VENV_PYTHON)
        self.home = self.root / "home"
        self.home.mkdir()
        self.state = self.home / "state"
        for p in (self.home,):
            os.chown(p, self.pw.pw_uid, self.pw.pw_gid)
        for p in self.root.rglob("*"):
            if not p.is_symlink():
                mode = p.stat().st_mode
                p.chmod(mode | stat.S_IRGRP | stat.S_IROTH | (0o055 if p.is_dir() else 0))
        self.home.chmod(0o700)
        self.extra_env: dict[str, str] = {}  # more variables for env() (a test CA...)

    def own(self, path: Path) -> None:
        """Give a tree (e.g. the config folder) to the user, private as a home would be."""
        for p in [path, *path.rglob("*")]:
            os.chown(p, self.pw.pw_uid, self.pw.pw_gid, follow_symlinks=False)

    def env(self) -> dict[str, str]:
        return {
            **self.extra_env,
            "HOME": str(self.home),
            "USER": self.pw.pw_name,
            "LOGNAME": self.pw.pw_name,
            "PATH": str(self.bin),
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(self.pkg),
            "HANDY_COLAB_STATE_DIR": str(self.state),
        }

    def argv(self, *args: str) -> list[str]:
        """handy-colab ARGS as the user, with only env() as its environment, run from its
        home (as from a login shell: sessions start where `up` ran)."""
        env = [f"{k}={v}" for k, v in self.env().items()]
        return [
            "runuser",
            "-u",
            self.pw.pw_name,
            "--",
            "/usr/bin/env",
            "-i",
            f"--chdir={self.home}",
            *env,
            str(VENV_PYTHON),
            "-m",
            "handy_colab.cli",
            *args,
        ]

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
