"""The embedded SSH server (asyncssh) as a watched child: sshd's stand-in where sshd cannot run.

It needs no root, no apt and no binaries, only the asyncssh package. The server itself is a
separate process, ``python -m handy_colab.server.asyncssh_server`` (whose docstring lists
the modules it is made of); this module writes its config and runs it like OpenSSHServer
runs sshd, with the same port rules and error texts.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import pwd
import re
import signal
import sys
from pathlib import Path

from ..config import RuntimeConfig
from ..errors import ServerError
from ..fsutil import atomic_write
from ..keys import PrivateKey
from ..proc import WatchedProcess, descendants, start_time
from ..state import RuntimeDir
from .base import Server
from .session import INFO_FILE, ensure_launcher

log = logging.getLogger(__name__)

MODULE = "handy_colab.server.asyncssh_server"
CONFIG_NAME = "embedded_server.json"
_READY = re.compile(r"^Server listening on 127\.0\.0\.1 port (\d+)$")
_FAIL = re.compile(r"^fatal: |No module named")
_NO_ASYNCSSH = (
    "the embedded SSH server needs the Python package asyncssh, which cannot be imported "
    "here. Fix: pip install asyncssh"
)


def asyncssh_importable() -> bool:
    # find_spec, not import: the supervisor never needs asyncssh itself (0.2 s, ~20 MB).
    try:
        return importlib.util.find_spec("asyncssh") is not None
    except (ImportError, ValueError):
        return False


def login_defaults() -> tuple[str, str]:
    """(home, login shell) of the user this process runs as.

    Containers often run with a uid that /etc/passwd does not know (OpenShift, some HPC
    and notebook images); then $HOME and $SHELL are the best there is. An empty or
    unusable login shell falls back the way sshd does, to /bin/sh.
    """
    try:
        entry = pwd.getpwuid(os.getuid())
        home, shell = entry.pw_dir, entry.pw_shell
    except KeyError:
        home, shell = os.environ.get("HOME", ""), os.environ.get("SHELL", "")
    if not home or not os.path.isdir(home):
        home = os.environ.get("HOME") or "/"
    if not shell or not os.access(shell, os.X_OK):
        env_shell = os.environ.get("SHELL", "")
        shell = env_shell if env_shell and os.access(env_shell, os.X_OK) else "/bin/sh"
    return home, shell


class EmbeddedServer(Server):
    """Runs and watches one embedded (asyncssh) SSH server process."""

    kind = "embedded"

    def __init__(self, cfg: RuntimeConfig, rd: RuntimeDir, host_key: PrivateKey) -> None:
        super().__init__(cfg, rd, host_key)
        self.proc: WatchedProcess | None = None
        # Where sessions, sftp and scp start when `up` recorded no notebook directory.
        self.cwd: Path | None = None
        if not asyncssh_importable():
            raise ServerError(_NO_ASYNCSSH)

    @property
    def config_path(self) -> Path:
        return self.rd.path / CONFIG_NAME

    def prepare(self) -> None:
        self.write_keys_and_port()
        home, shell = login_defaults()
        settings = {
            "port": self.port,
            "host_key": str(self.rd.host_key),
            "authorized_keys": str(self.rd.authorized_keys),
            "login_user": self.cfg.login_user,
            "cwd": str(self.cwd) if self.cwd is not None else home,
            "shell": shell,
            "launcher": str(ensure_launcher(self.rd, None)),
            "session_info": str(self.rd.path / INFO_FILE),
            "gateway_ports": self.cfg.gateway_ports,
        }
        atomic_write(self.config_path, json.dumps(settings, indent=2) + "\n", mode=0o600)

    def start(self, timeout: float = 15.0) -> None:
        self.stop()
        self.proc = WatchedProcess(
            [sys.executable, "-m", MODULE, "--config", str(self.config_path)],
            label="sshd-embedded",
            on_exit=self.on_exit,
        )
        status, line = self.proc.wait_for(_READY, _FAIL, timeout)
        if status != "ready":
            tail = " | ".join(self.proc.last_lines(5)) or "no output"
            self.stop()
            if "No module named" in tail and "asyncssh" in tail:
                raise ServerError(_NO_ASYNCSSH)
            if "in use" in tail:
                raise ServerError(
                    f"127.0.0.1:{self.port} is already in use. Fix: set config "
                    f"field 'server.port' to a free port (or 0)"
                )
            raise ServerError(f"the embedded SSH server did not start ({status}): {tail}")
        match = _READY.search(line)
        if match:
            self.port = int(match.group(1))
        log.info("embedded SSH server listening on 127.0.0.1:%d (pid %d)", self.port, self.proc.pid)

    def stop(self) -> None:
        if self.proc is None:
            return
        # The server hangs up and kills its sessions itself on SIGTERM. Should it be
        # SIGKILLed or wedged instead, this list still names what it started.
        left = descendants(self.proc.pid) if self.proc.alive() else {}
        self.proc.stop()
        self.proc = None
        for pid, started in left.items():
            if start_time(pid) == started:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
