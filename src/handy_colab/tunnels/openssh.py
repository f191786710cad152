"""Reverse tunnel with the OpenSSH client: ``ssh -N -R ...`` to any OpenSSH relay.

Works the same against a VPS of the user's and an ``ssh -R`` service such as portmap.io.
It never prompts (BatchMode), fails fast when the forward is refused
(ExitOnForwardFailure) and pins the relay's host key.
"""

from __future__ import annotations

import re
import shutil

from ..config import RuntimeConfig
from ..errors import TunnelError
from ..fsutil import atomic_write
from ..state import RuntimeDir
from ..streamlocal import forwarded_port, read_banner
from .common import RELAY_ALIAS, check_public, prepare_relay_files, private_banner_error
from .relayport import RelayTunnel

_READY = re.compile(r"remote forward success for: listen")
# Only ssh's own error lines (not its debug chatter) decide a failure.
_FAIL = re.compile(
    r"^(?!debug)(.*(remote port forwarding failed|Permission denied|Host key verification failed"
    r"|REMOTE HOST IDENTIFICATION HAS CHANGED|Connection refused|Connection timed out"
    r"|No route to host|Could not resolve hostname|Connection closed by|Network is unreachable"
    r"|kex_exchange_identification|Too many authentication failures))"
)


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
            "ExitOnForwardFailure": "yes",
            "ServerAliveInterval": "5",
            "ServerAliveCountMax": "3",
            # Short: a blocked SYN is retried by the next attempt anyway (TCP's own retry
            # schedule would otherwise hold an attempt long after the network is back).
            "ConnectTimeout": "5",
            "TCPKeepAlive": "yes",
            "ControlMaster": "no",
            "ControlPath": "none",
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

    def check(self, timeout: float) -> None:
        # The Tunnel contract is TunnelError only: a local OSError (no temp space for the
        # check's socket, ssh gone) is a failed check like any other.
        try:
            self._check(timeout)
        except OSError as exc:
            raise TunnelError(f"end-to-end check could not run: {exc}") from None

    def _check(self, timeout: float) -> None:
        relay = self.cfg.ssh_relay
        if self.cfg.mode == "private":
            prefix = [self.ssh, "-F", str(self.rd.tunnel_config)]
            with forwarded_port(prefix, RELAY_ALIAS, relay.socket_path, timeout) as port:
                banner = read_banner(port, timeout)
            err = private_banner_error(self.cfg, banner)
            if err is not None:
                raise err
            return
        check_public(self.cfg, self.endpoint, timeout)
