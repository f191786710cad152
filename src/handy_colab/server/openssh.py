"""A dedicated OpenSSH ``sshd``: its own config, port, host key and authorized keys.

It never reads or edits /etc/ssh/sshd_config and never touches the system's ssh service.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

from ..config import RuntimeConfig
from ..errors import ServerError
from ..fsutil import atomic_write
from ..keys import PrivateKey
from ..proc import WatchedProcess, run_subprocess
from ..state import RuntimeDir
from .base import Server
from .session import ensure_launcher, force_command

log = logging.getLogger(__name__)

_SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd")
_SFTP_CANDIDATES = (
    "/usr/lib/openssh/sftp-server",
    "/usr/libexec/openssh/sftp-server",
    "/usr/lib/ssh/sftp-server",
    "/usr/libexec/sftp-server",
)
_READY = re.compile(r"Server listening on 127\.0\.0\.1 port (\d+)")
_FAIL = re.compile(
    r"Bind to port \d+ on .* failed|Cannot bind any address|fatal:|"
    r"Unable to load host key|bad configuration|Bad configuration|"
    r"Missing privilege separation directory"
)


def find_sshd(search: tuple[str, ...] = _SSHD_CANDIDATES) -> str | None:
    env = os.environ.get("HANDY_COLAB_SSHD")
    if env:
        return env if os.access(env, os.X_OK) else None
    for cand in search:
        if os.access(cand, os.X_OK):
            return cand
    return shutil.which("sshd")


def ensure_sshd(search: tuple[str, ...] = _SSHD_CANDIDATES) -> str:
    """Path of an sshd binary; installs openssh-server with apt when root and apt exist."""
    found = find_sshd(search)
    if found:
        return found
    apt = shutil.which("apt-get")
    if os.geteuid() != 0 or apt is None:
        raise ServerError(
            "sshd not found and cannot be installed here (needs root and apt). "
            "Fix: install openssh-server, or set HANDY_COLAB_SSHD to its path"
        )
    log.info("sshd not found; installing openssh-server with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    res = run_subprocess(
        [apt, "install", "-y", "-qq", "--no-install-recommends", "openssh-server"], env=env
    )
    if res.returncode != 0:
        res = run_subprocess([apt, "update", "-qq"], env=env)
        res = run_subprocess(
            [apt, "install", "-y", "-qq", "--no-install-recommends", "openssh-server"], env=env
        )
    found = find_sshd(search) or find_sshd()
    if res.returncode != 0 or not found:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ServerError(
            f"installing openssh-server failed: {tail[0]}. Fix: install it by "
            f"hand (apt-get install openssh-server) and run up again"
        )
    return found


def find_sftp_server() -> str:
    for cand in _SFTP_CANDIDATES:
        if os.access(cand, os.X_OK):
            return cand
    # internal-sftp needs no binary and works for every user.
    return "internal-sftp"


def render_sshd_config(
    rd: RuntimeDir,
    port: int,
    login_user: str,
    sftp: str,
    force_command: str | None = None,
    gateway_ports: str = "no",
) -> str:
    lines = [
        "# Written by handy-colab for this runtime only; the system's sshd is not touched.",
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {rd.host_key}",
        f"PidFile {rd.sshd_pid}",
        f"AuthorizedKeysFile {rd.authorized_keys}",
        # Our state dir is 0700 and the file 0600, but its parents (e.g. /tmp) may not pass
        # sshd's ownership walk; the check buys nothing here.
        "StrictModes no",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "HostbasedAuthentication no",
        "PermitEmptyPasswords no",
        "PermitRootLogin prohibit-password",
        f"AllowUsers {login_user}",
        "UsePAM no",
        "PermitUserEnvironment no",
        "AllowTcpForwarding yes",
        "AllowStreamLocalForwarding yes",
        f"GatewayPorts {gateway_ports}",
        "X11Forwarding no",
        "PrintMotd no",
        "PrintLastLog no",
        "UseDNS no",
        "ClientAliveInterval 15",
        "ClientAliveCountMax 4",
        "MaxSessions 64",
        "MaxStartups 64:30:128",
        # Same user on both ends, so no privilege boundary to guard: a client's SetEnv and
        # SendEnv all reach the session (and win over the notebook's values there).
        "AcceptEnv *",
        f"Subsystem sftp {sftp}",
        "LogLevel INFO",
    ]
    if force_command:
        # Every session (shell, exec, subsystem) starts through the launcher, which gives
        # it the notebook's environment and directory (server/session.py).
        lines.append(f"ForceCommand {force_command}")
        # sshd runs ForceCommand through the user's shell (`bash -c LAUNCHER`), and Debian's
        # bash reads ~/.bashrc in a `-c` shell that sees SSH_CLIENT at shell level 1. That
        # shell only execs the launcher, and the launcher's own shell reads ~/.bashrc again:
        # at level 2 the first one skips it (the launcher starts from level 0 again), so the
        # file runs once per session, as with a plain sshd. It wins over a client's SetEnv.
        lines.append("SetEnv SHLVL=1")
    return "\n".join(lines) + "\n"


class OpenSSHServer(Server):
    """Runs and watches one dedicated sshd."""

    kind = "openssh"

    def __init__(self, cfg: RuntimeConfig, rd: RuntimeDir, host_key: PrivateKey) -> None:
        super().__init__(cfg, rd, host_key)
        self.proc: WatchedProcess | None = None
        self.sshd = ensure_sshd()

    def prepare(self) -> None:
        self.write_keys_and_port()
        sftp = find_sftp_server()
        launcher = ensure_launcher(self.rd, None if sftp == "internal-sftp" else sftp)
        atomic_write(
            self.rd.sshd_config,
            render_sshd_config(
                self.rd,
                self.port,
                self.cfg.login_user,
                sftp,
                force_command(launcher),
                self.cfg.gateway_ports,
            ),
            mode=0o600,
        )
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(parents=True, exist_ok=True, mode=0o755)
        res = run_subprocess([self.sshd, "-t", "-f", str(self.rd.sshd_config)], timeout=30)
        if res.returncode != 0:
            raise ServerError(f"sshd rejected its config: {res.stderr.strip()[-300:]}")

    def start(self, timeout: float = 15.0) -> None:
        self.stop()
        self.proc = WatchedProcess(
            [self.sshd, "-D", "-e", "-f", str(self.rd.sshd_config)],
            label="sshd",
            on_exit=self.on_exit,
        )
        status, _line = self.proc.wait_for(_READY, _FAIL, timeout)
        if status != "ready":
            tail = " | ".join(self.proc.last_lines(5)) or "no output"
            self.stop()
            if "in use" in tail or "Cannot bind" in tail:
                raise ServerError(
                    f"127.0.0.1:{self.port} is already in use. Fix: set config "
                    f"field 'server.port' to a free port (or 0)"
                )
            raise ServerError(f"sshd did not start ({status}): {tail}")
        log.info("sshd listening on 127.0.0.1:%d (pid %d)", self.port, self.proc.pid)
