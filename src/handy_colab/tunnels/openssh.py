"""Reverse tunnel with the OpenSSH client: ``ssh -N -R ...`` to any OpenSSH relay.

Works the same against a VPS of the user's and an ``ssh -R`` service such as portmap.io.
It never prompts (BatchMode), fails fast when the forward is refused
(ExitOnForwardFailure) and pins the relay's host key.

The tunnel's ssh is also a ControlMaster (ControlPersist no: it lives exactly as long as the
tunnel), so the private-mode check rides the tunnel's own connection: ``ssh -O forward -L``
asks the running ssh for a loopback port to the relay's socket, with no new login to the
relay every 10 s (and a check that then also tests the very connection that carries the
sessions).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from ..config import RuntimeConfig
from ..errors import TunnelError
from ..fsutil import atomic_write
from ..state import RuntimeDir
from ..streamlocal import forwarded_port, read_banner
from .common import (
    RELAY_ALIAS,
    CheckTimeout,
    check_public,
    free_port,
    prepare_relay_files,
    private_banner_error,
    probe_banner,
)
from .relayport import RelayTunnel

_READY = re.compile(r"remote forward success for: listen")
# Only ssh's own error lines (not its debug chatter) decide a failure.
_FAIL = re.compile(
    r"^(?!debug)(.*(remote port forwarding failed|Permission denied|Host key verification failed"
    r"|REMOTE HOST IDENTIFICATION HAS CHANGED|Connection refused|Connection timed out"
    r"|No route to host|Could not resolve hostname|Connection closed by|Network is unreachable"
    r"|kex_exchange_identification|Too many authentication failures))"
)


# The tunnel's own connection to the relay carries only forwarding requests and the
# sessions' SSH, which is end-to-end encrypted with a key exchange of its own between laptop
# and runtime (OpenSSH's post-quantum default, unchanged). So the tunnel offers ML-KEM (fast,
# OpenSSH 9.9+) or curve25519 first, not OpenSSH 9.0-9.8's default sntrup761, whose key
# generation was ~85 ms of every relay log-in here (docs/benchmarks.md): `up` and every
# reconnect wait for that log-in. Only modern algorithms; no SHA-1.
TUNNEL_KEX = (
    "mlkem768x25519-sha256",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "ecdh-sha2-nistp256",
    "ecdh-sha2-nistp384",
    "ecdh-sha2-nistp521",
    "diffie-hellman-group-exchange-sha256",
    "diffie-hellman-group16-sha512",
    "diffie-hellman-group18-sha512",
    "diffie-hellman-group14-sha256",
)


@functools.lru_cache(maxsize=4)
def tunnel_kex(ssh: str) -> str | None:
    """KexAlgorithms for the tunnel: those of TUNNEL_KEX that ``ssh`` knows, in that order;
    None (ssh's own default) if it cannot say."""
    try:
        res = subprocess.run(
            [ssh, "-Q", "kex"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    known = set(res.stdout.split())
    chosen = [k for k in TUNNEL_KEX if k in known]
    return ",".join(chosen) if res.returncode == 0 and chosen else None


# sun_path is 108 bytes; ssh binds "PATH.XXXXXXXXXXXXXXXX" first and renames it.
_MAX_CONTROL_PATH = 107 - 17


def find_ssh() -> str:
    path = shutil.which("ssh")
    if path is None:
        raise TunnelError(
            "the OpenSSH client `ssh` is not installed. Fix: install "
            "openssh-client (apt-get install openssh-client)",
            permanent=True,
        )
    return path


class OpenSSHTunnel(RelayTunnel):
    kind = "openssh"
    ready = _READY
    fail = _FAIL

    def __init__(self, cfg: RuntimeConfig, rd: RuntimeDir, local_port: int) -> None:
        super().__init__(cfg, local_port)
        self.rd = rd
        self.ssh = find_ssh()
        control = rd.path / "tunnel.ctl"
        # Too long a path for a Unix socket: no multiplexing, the check logs in instead.
        self.control: Path | None = (
            control if len(os.fsencode(control)) <= _MAX_CONTROL_PATH else None
        )
        self._prepare()

    def _prepare(self) -> None:
        relay = self.cfg.ssh_relay
        known, pinned = prepare_relay_files(self.cfg, self.rd)
        strict = "yes" if pinned else "accept-new"
        options = {
            "HostName": relay.host,
            "Port": str(relay.port),
            "User": relay.user,
            "IdentityFile": str(self.rd.relay_key),
            "IdentitiesOnly": "yes",
            "IdentityAgent": "none",
            "BatchMode": "yes",
            "PasswordAuthentication": "no",
            "KbdInteractiveAuthentication": "no",
            "StrictHostKeyChecking": strict,
            "UserKnownHostsFile": f'"{known}"',
            "GlobalKnownHostsFile": "/dev/null",
            "HashKnownHosts": "no",
            "UpdateHostKeys": "no",
            "CheckHostIP": "no",
            **({"KexAlgorithms": kex} if (kex := tunnel_kex(self.ssh)) else {}),
            "ExitOnForwardFailure": "yes",
            "ServerAliveInterval": "5",
            "ServerAliveCountMax": "3",
            # Short: a blocked SYN is retried by the next attempt anyway (TCP's own retry
            # schedule would otherwise hold an attempt long after the network is back).
            "ConnectTimeout": "5",
            "TCPKeepAlive": "yes",
            # The check's channel to the relay's socket (private mode) rides this
            # connection; ControlPersist no: the master is the tunnel, nothing outlives it.
            "ControlMaster": "yes" if self.control else "no",
            "ControlPath": f'"{self.control}"' if self.control else "none",
            "ControlPersist": "no",
            "ForwardAgent": "no",
            "ForwardX11": "no",
            "RequestTTY": "no",
            "LogLevel": "INFO",
        }
        body = "".join(f"    {k} {v}\n" for k, v in options.items())
        atomic_write(
            self.rd.tunnel_config,
            f"# Written by handy-colab; the relay hop of runtime "
            f"{self.cfg.name}.\nHost {RELAY_ALIAS}\n{body}",
            mode=0o600,
        )

    def forward_spec(self) -> str:
        relay = self.cfg.ssh_relay
        target = f"127.0.0.1:{self.local_port}"
        if self.cfg.mode == "private":
            return f"{relay.socket_path}:{target}"
        bind = f"{relay.bind_address}:" if relay.bind_address else ""
        return f"{bind}{relay.remote_port}:{target}"

    def argv(self) -> list[str]:
        return [
            self.ssh,
            "-F",
            str(self.rd.tunnel_config),
            "-v",
            "-N",
            "-R",
            self.forward_spec(),
            RELAY_ALIAS,
        ]

    @property
    def program(self) -> str:
        return self.ssh

    def forward_desc(self) -> str:
        return self.forward_spec()

    def start(self, timeout: float) -> None:
        # A SIGKILLed master leaves its socket behind, and ssh then runs without one.
        if self.control is not None:
            self.stop()
            with contextlib.suppress(OSError):
                self.control.unlink()
        super().start(timeout)

    def check(self, timeout: float) -> None:
        # The Tunnel contract is TunnelError only: a local OSError (no temp space for the
        # check's socket, ssh gone) is a failed check like any other.
        try:
            self._check(timeout)
        except OSError as exc:
            raise TunnelError(f"end-to-end check could not run: {exc}") from None

    def _check(self, timeout: float) -> None:
        relay = self.cfg.ssh_relay
        if self.cfg.mode != "private":
            check_public(self.cfg, self.endpoint, timeout)
            return
        if self.control is not None and self.control.exists():
            banner = self._banner_over_master(timeout)
        else:
            prefix = [self.ssh, "-F", str(self.rd.tunnel_config)]
            with forwarded_port(prefix, RELAY_ALIAS, relay.socket_path, timeout) as port:
                banner = read_banner(port, timeout)
        err = private_banner_error(self.cfg, banner)
        if err is not None:
            raise err

    def _mux(self, op: str, spec: str, timeout: float) -> subprocess.CompletedProcess[str]:
        assert self.control is not None
        return subprocess.run(
            [
                *(self.ssh, "-F", str(self.rd.tunnel_config), "-S", str(self.control)),
                # The config says ControlMaster yes (for the tunnel): with it, ssh would
                # ignore -O and log in afresh instead of asking the running master.
                *("-o", "ControlMaster=no", "-O", op, "-L", spec, RELAY_ALIAS),
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=max(0.5, timeout),
        )

    def _banner_over_master(self, timeout: float) -> str:
        """Private mode: the banner of the relay's socket, through a loopback forward that
        the tunnel's own ssh opens (``-O forward``) and drops again (``-O cancel``)."""
        relay = self.cfg.ssh_relay
        deadline = time.monotonic() + timeout
        spec = f"127.0.0.1:{free_port()}:{relay.socket_path}"
        try:
            res = self._mux("forward", spec, timeout)
        except subprocess.TimeoutExpired:
            # The master did not answer its control socket: frozen or swamped.
            raise CheckTimeout(
                f"the tunnel's ssh did not answer its control socket within {timeout:.0f}s"
            ) from None
        if res.returncode != 0:
            err = (res.stderr.strip().splitlines() or ["failed"])[-1]
            raise TunnelError(
                f"the tunnel's ssh could not forward {relay.socket_path} for the check: {err}"
            )
        try:
            outcome, text = probe_banner(
                "127.0.0.1", int(spec.split(":")[1]), max(0.1, deadline - time.monotonic())
            )
        finally:
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                self._mux("cancel", spec, 5.0)
        if outcome == "timeout":
            raise CheckTimeout(
                f"{relay.socket_path} on the relay gave no SSH banner within {timeout:.0f}s "
                f"through the tunnel's connection: it is frozen or overloaded"
            )
        return text if outcome == "line" else ""
