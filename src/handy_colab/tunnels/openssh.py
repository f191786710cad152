"""Reverse tunnel with the OpenSSH client: ``ssh -N -R ...`` to any OpenSSH relay.

Works the same against a VPS of the user's and an ``ssh -R`` service such as portmap.io.
It never prompts (BatchMode), fails fast when the forward is refused
(ExitOnForwardFailure) and pins the relay's host key.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import socket
import subprocess

from ..config import RuntimeConfig
from ..errors import TunnelError
from ..fsutil import atomic_write
from ..keys import fingerprint, private_copy
from ..proc import WatchedProcess
from ..state import RuntimeDir
from ..streamlocal import first_line, forwarded_socket, read_banner
from .base import Tunnel

log = logging.getLogger(__name__)

RELAY_ALIAS = "handy-colab-relay"
_READY = re.compile(r"remote forward success for: listen")
# Only ssh's own error lines (not its debug chatter) decide a failure.
_FAIL = re.compile(
    r"^(?!debug)(.*(remote port forwarding failed|Permission denied|Host key verification failed"
    r"|REMOTE HOST IDENTIFICATION HAS CHANGED|Connection refused|Connection timed out"
    r"|No route to host|Could not resolve hostname|Connection closed by|Network is unreachable"
    r"|kex_exchange_identification|Too many authentication failures))"
)


def known_hosts_pattern(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def find_ssh() -> str:
    path = shutil.which("ssh")
    if path is None:
        raise TunnelError(
            "the OpenSSH client `ssh` is not installed. Fix: install "
            "openssh-client (apt-get install openssh-client)",
            permanent=True,
        )
    return path


def classify(lines: list[str], cfg: RuntimeConfig, key_name: str) -> TunnelError:
    """Turn ssh's last words into one actionable line."""
    relay = cfg.relay
    where = f"{relay.user}@{relay.host}:{relay.port}"
    text = "\n".join(lines)
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text or (
        "Host key verification failed" in text and "No " not in text
    ):
        source = "config field 'relay.host_key'" if relay.host_key else f"{cfg.relay_known_hosts}"
        return TunnelError(
            f"relay {relay.host}:{relay.port} presented a host key that does not match the one "
            f"pinned in {source}; refusing to connect. Fix: if the relay really was reinstalled, "
            f"verify its new key out of band and update {source}",
            permanent=True,
        )
    if "Host key verification failed" in text:
        return TunnelError(
            f"relay {relay.host}:{relay.port} host key is not pinned. Fix: set "
            f"'relay.host_key' or delete {cfg.relay_known_hosts} to record it "
            f"on first use",
            permanent=True,
        )
    if "Permission denied" in text or "Too many authentication failures" in text:
        return TunnelError(
            f"relay {where} refused the key {key_name} "
            f"({fingerprint(cfg.relay.key.public_line)}). Fix: add its public key to that "
            f"account's authorized_keys on the relay, or correct 'relay.user'",
            permanent=True,
        )
    m = re.search(r"remote port forwarding failed for listen (port|path) (\S+)", text)
    if m and m.group(1) == "path":
        return TunnelError(
            f"relay {relay.host} refused to create the socket {m.group(2)} for {relay.user}. "
            f"Fix: set 'StreamLocalBindUnlink yes' and 'AllowStreamLocalForwarding yes' in the "
            f"relay's sshd_config (see `handy-colab relay-setup`), or change 'relay.socket_path'"
        )
    if m:
        return TunnelError(
            f"relay {relay.host} refused to listen on port {m.group(2)}: it is taken (maybe a "
            f"stale tunnel) or not permitted for {relay.user}. Fix: stop whatever holds it, "
            f"or choose another 'relay.remote_port'"
        )
    for needle, why in (
        ("Could not resolve hostname", "its name does not resolve"),
        ("Connection refused", "connection refused"),
        ("Connection timed out", "connection timed out"),
        ("No route to host", "no route to host"),
        ("Network is unreachable", "network unreachable"),
        ("kex_exchange_identification", "it closed the connection at hello"),
        ("Connection closed by", "it closed the connection"),
    ):
        if needle in text:
            return TunnelError(
                f"relay {relay.host}:{relay.port} is unreachable ({why}). Fix: "
                f"check 'relay.host'/'relay.port' and that the relay's sshd runs"
            )
    tail = next((ln for ln in reversed(lines) if ln and not ln.startswith("debug")), "no output")
    return TunnelError(f"tunnel to relay {where} ended: {tail}")


class OpenSSHTunnel(Tunnel):
    kind = "openssh"

    def __init__(self, cfg: RuntimeConfig, rd: RuntimeDir, local_port: int) -> None:
        super().__init__(cfg, local_port)
        self.rd = rd
        self.ssh = find_ssh()
        self.proc: WatchedProcess | None = None
        self._prepare()

    def _prepare(self) -> None:
        relay = self.cfg.relay
        private_copy(relay.key, self.rd.relay_key)
        if relay.host_key:
            atomic_write(
                self.rd.known_hosts,
                f"{known_hosts_pattern(relay.host, relay.port)} {relay.host_key}\n",
            )
            known, strict = self.rd.known_hosts, "yes"
        else:
            # Trust on first use: recorded into the config folder, pinned from then on
            # (accept-new refuses a changed key, it only adds unknown hosts).
            known, strict = self.cfg.relay_known_hosts, "accept-new"
            if not known.exists() and not os.access(self.cfg.folder, os.W_OK):
                # ssh would warn and connect unpinned, every time: refuse instead.
                raise TunnelError(
                    f"{self.cfg.folder} is read-only, so the relay's host key cannot be "
                    f"recorded on first use. Fix: set 'relay.host_key' in user_config.json "
                    f"(from `ssh-keyscan -p {relay.port} {relay.host}`), or make the folder "
                    f"writable for the first `up`",
                    permanent=True,
                )
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
        relay = self.cfg.relay
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

    def start(self, timeout: float) -> None:
        self.stop()
        try:
            self.proc = WatchedProcess(self.argv(), label="tunnel", on_exit=self.on_exit)
        except OSError as exc:
            raise TunnelError(f"cannot run {self.ssh}: {exc}") from None
        status, _ = self.proc.wait_for(_READY, _FAIL, timeout)
        if status == "ready":
            log.info("relay accepted the forward %s (pid %d)", self.forward_spec(), self.proc.pid)
            return
        if status == "timeout":
            self.stop()
            raise TunnelError(
                f"relay {self.cfg.relay.host}:{self.cfg.relay.port} did not confirm "
                f"the forward within {timeout:.0f}s. Fix: check the relay is "
                f"reachable from the runtime"
            )
        err = self.failure()
        self.stop()
        raise err

    def failure(self) -> TunnelError:
        if self.proc is None:
            return TunnelError("tunnel is not running")
        # Give ssh a moment to print its last lines and exit, so they all count.
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.proc.wait(2)
        return classify(self.proc.last_lines(30), self.cfg, self.cfg.relay.key.path.name)

    def check(self, timeout: float) -> None:
        # The Tunnel contract is TunnelError only: a local OSError (no temp space for the
        # check's socket, ssh gone) is a failed check like any other.
        try:
            self._check(timeout)
        except OSError as exc:
            raise TunnelError(f"end-to-end check could not run: {exc}") from None

    def _check(self, timeout: float) -> None:
        relay = self.cfg.relay
        if self.cfg.mode == "private":
            prefix = [self.ssh, "-F", str(self.rd.tunnel_config)]
            with forwarded_socket(prefix, RELAY_ALIAS, relay.socket_path, timeout) as local:
                banner = read_banner(local, timeout)
            if not banner.startswith("SSH-"):
                raise TunnelError(
                    f"the relay accepted the forward but {relay.socket_path} on it does not "
                    f"answer with the runtime's SSH banner (got {banner[:40]!r}). Fix: allow "
                    f"'AllowStreamLocalForwarding yes' for {relay.user} on the relay"
                )
            return
        connected, banner = _tcp_banner(relay.public_host, relay.remote_port, timeout)
        if banner.startswith("SSH-"):
            return
        port = relay.remote_port
        if connected:
            # Seen for real: the relay binds [::]:PORT while another program holds
            # 0.0.0.0:PORT, so the forward "succeeds" but IPv4 clients reach the other one.
            raise TunnelError(
                f"relay port {port} answers, but not with the runtime's SSH server (got "
                f"{banner[:40]!r}): the port is taken by another program on the relay. Fix: "
                f"free it, or choose another 'relay.remote_port'"
            )
        if "refused" in banner.lower():
            raise TunnelError(
                f"the relay accepted the forward but {self.endpoint} refuses connections. "
                f"Fix: set 'GatewayPorts yes' in the relay's sshd_config for public mode (or "
                f"use mode private), and open port {port} in its firewall"
            )
        raise TunnelError(
            f"{self.endpoint} cannot be reached from the runtime ({banner}): the network to "
            f"the relay is down or a firewall drops port {port}. Fix: check the runtime's "
            f"outbound network; the supervisor keeps retrying"
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def last_lines(self, n: int = 5) -> list[str]:
        return self.proc.last_lines(n) if self.proc else []

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None


def _tcp_banner(host: str, port: int, timeout: float) -> tuple[bool, str]:
    """(connected, first line or error): tells "nobody listens" from "someone else answers"."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        return False, exc.strerror or str(exc)
    with sock:
        sock.settimeout(timeout)
        return True, first_line(sock)
