"""What every tunnel backend shares: host-key files, error wording, the end-to-end checks.

Both clients (OpenSSH's ``ssh -R`` and the embedded asyncssh one) read the same pinned and
trust-on-first-use files (verification itself: `.hostkeys`) and report a failure with the
same one line, so switching backends keeps the pin and `status` reads the same whichever
client runs.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from ..config import RuntimeConfig
from ..errors import TunnelError
from ..fsutil import atomic_write
from ..keys import fingerprint, private_copy
from ..state import RuntimeDir
from ..streamlocal import first_line

# Host-key verification lives in .hostkeys; these names stay importable from here.
from .hostkeys import (
    OPENSSH_HOST_KEY_ALGS as OPENSSH_HOST_KEY_ALGS,
)
from .hostkeys import (
    RECORD_FAILED as RECORD_FAILED,
)
from .hostkeys import (
    HostKeyPolicy as HostKeyPolicy,
)
from .hostkeys import (
    KnownKeys as KnownKeys,
)
from .hostkeys import (
    Verdict as Verdict,
)
from .hostkeys import (
    host_key_fingerprint as host_key_fingerprint,
)
from .hostkeys import (
    known_hosts_pattern as known_hosts_pattern,
)
from .hostkeys import (
    parse_known_hosts as parse_known_hosts,
)
from .hostkeys import (
    preferred_host_key_algs as preferred_host_key_algs,
)

# The relay hop's Host alias in the OpenSSH client's config; the embedded client's check
# errors name it too, so a failed private-mode check reads the same whichever client runs.
RELAY_ALIAS = "handy-colab-relay"


def read_only_error(cfg: RuntimeConfig) -> TunnelError:
    relay = cfg.ssh_relay
    return TunnelError(
        f"{cfg.folder} is read-only, so the relay's host key cannot be "
        f"recorded on first use. Fix: set 'relay.host_key' in user_config.json "
        f"(from `ssh-keyscan -p {relay.port} {relay.host}`), or make the folder "
        f"writable for the first `up`",
        permanent=True,
    )


def prepare_relay_files(cfg: RuntimeConfig, rd: RuntimeDir) -> tuple[Path, bool]:
    """Write the relay key's 0600 copy and the pin file; return (known_hosts, strict).

    ``strict``: the key is pinned in the config (``rd.known_hosts``, nothing is ever added);
    otherwise trust on first use into the config folder's ``relay_known_hosts``.
    """
    relay = cfg.ssh_relay
    private_copy(relay.key, rd.relay_key)
    if relay.host_key:
        atomic_write(
            rd.known_hosts,
            f"{known_hosts_pattern(relay.host, relay.port)} {relay.host_key}\n",
        )
        return rd.known_hosts, True
    # Trust on first use: recorded into the config folder, pinned from then on
    # (accept-new refuses a changed key, it only adds unknown hosts).
    known = cfg.relay_known_hosts
    if not known.exists() and not os.access(cfg.folder, os.W_OK):
        # ssh would warn and connect unpinned, every time: refuse instead.
        raise read_only_error(cfg)
    return known, False


def classify(lines: list[str], cfg: RuntimeConfig, key_name: str) -> TunnelError:
    """Turn the client's last words (OpenSSH's wording) into one actionable line."""
    relay = cfg.ssh_relay
    where = f"{relay.user}@{relay.host}:{relay.port}"
    text = "\n".join(lines)
    m = re.search(RECORD_FAILED + r" in \S+ \((.*?)\);", text)
    if m:
        if not os.access(cfg.folder, os.W_OK):
            return read_only_error(cfg)
        return TunnelError(
            f"the relay's host key cannot be recorded in {cfg.relay_known_hosts} "
            f"({m.group(1)}), and the tunnel never connects unpinned. Fix: free space or make "
            f"it writable, or set 'relay.host_key' in user_config.json",
            permanent=True,
        )
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
            f"({fingerprint(cfg.ssh_relay.key.public_line)}). Fix: add its public key to that "
            f"account's authorized_keys on the relay, or correct 'relay.user'",
            permanent=True,
        )
    m = re.search(r"remote port forwarding failed for listen (port|path) (\S+)", text)
    if m and m.group(1) == "path":
        return TunnelError(
            f"relay {relay.host} refused to create the socket {m.group(2)} for {relay.user}. "
            f"Fix: set 'StreamLocalBindUnlink yes' and 'AllowStreamLocalForwarding yes' in the "
            f"relay's sshd_config (see `handy-colab relay-setup`), or change 'relay.socket_path' "
            f"(a relay set up by relay-setup takes only a file in /tmp, e.g. "
            f"/tmp/handy-colab-ME-NAME.sock)"
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


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now (for a child's metrics, admin API...)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def local_json(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """(HTTP status, decoded JSON) of a child's API on 127.0.0.1 (metrics, admin); (0, None)
    when it does not answer. Never through a proxy: an https_proxy/http_proxy set for the
    notebook must not carry requests to our own children."""
    # Imported here: urllib pulls in http, email and ssl, and only the cloudflared and frp
    # routes ask their programs' local APIs anything.
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with opener.open(req, timeout=2) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"null")
        except ValueError:
            return exc.code, None
    except (OSError, ValueError):
        return 0, None


def state_write_error(rd: RuntimeDir, program: str, exc: OSError) -> TunnelError:
    """A tunnel's files could not be written into the private state dir."""
    return TunnelError(
        f"{rd.path}: cannot write {program}'s files ({exc.strerror or exc}). Fix: free space "
        f"there, or set HANDY_COLAB_STATE_DIR to a writable local folder"
    )


def tcp_banner(host: str, port: int, timeout: float) -> tuple[bool, str]:
    """(connected, first line or error): tells "nobody listens" from "someone else answers"."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        return False, exc.strerror or str(exc)
    with sock:
        sock.settimeout(timeout)
        return True, first_line(sock)


class CheckTimeout(TunnelError):
    """The end-to-end check got no answer in time: inconclusive on its own.

    A tunnel busy with many sessions may answer late, a frozen one never does; the
    supervisor tells them apart by whether the tunnel's client moved data meanwhile. Every
    other TunnelError from a check is a definite answer (refused, wrong banner, closed).
    """


def probe_banner(host: str, port: int, timeout: float) -> tuple[str, str]:
    """(outcome, text) of one connection that waits for the first line, within ``timeout``
    in all: "line" (text: the line), "timeout" (connect or first line not in time), "closed"
    (connected, then closed without a line), "error" (refused and the like; text: why)."""
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except TimeoutError:
        return "timeout", "connection timed out"
    except OSError as exc:
        return "error", exc.strerror or str(exc)
    data = b""
    with sock:
        try:
            while b"\n" not in data and len(data) < 256:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                sock.settimeout(left)
                chunk = sock.recv(256)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            if not data:
                return "timeout", "no banner in time"
        except OSError:
            pass
    if not data:
        return "closed", ""
    return "line", data.decode(errors="replace")


def check_public(cfg: RuntimeConfig, endpoint: str, timeout: float) -> None:
    """Public mode: the relay's port must answer with the runtime's SSH banner.

    Raises CheckTimeout when nothing came back in time, TunnelError on a definite failure.
    """
    relay = cfg.ssh_relay
    port = relay.remote_port
    outcome, text = probe_banner(relay.public_host, port, timeout)
    if outcome == "line" and text.startswith("SSH-"):
        return
    if outcome == "line":
        # Seen for real: the relay binds [::]:PORT while another program holds
        # 0.0.0.0:PORT, so the forward "succeeds" but IPv4 clients reach the other one.
        raise TunnelError(
            f"relay port {port} answers, but not with the runtime's SSH server (got "
            f"{text[:40]!r}): the port is taken by another program on the relay. Fix: "
            f"free it, or choose another 'relay.remote_port'"
        )
    if outcome == "closed":
        raise TunnelError(
            f"relay port {port} accepted the connection and closed it without an SSH banner: "
            f"the relay no longer forwards it to the runtime"
        )
    if outcome == "timeout" and text == "connection timed out":
        raise CheckTimeout(
            f"{endpoint} cannot be reached from the runtime (connection timed out): the "
            f"network to the relay is down or a firewall drops port {port}. Fix: check the "
            f"runtime's outbound network; the supervisor keeps retrying"
        )
    if outcome == "timeout":
        # Silent: our tunnel frozen or swamped, or (seen for real, see above) another program
        # holding the port for IPv4 that never speaks first.
        raise CheckTimeout(
            f"relay port {port} accepted the connection but sent no SSH banner within "
            f"{timeout:.0f}s: the port may be taken by another program on the relay, or the "
            f"tunnel is frozen or overloaded. Fix: free the port on the relay or choose "
            f"another 'relay.remote_port'; the supervisor keeps checking"
        )
    if "refused" in text.lower():
        raise TunnelError(
            f"the relay accepted the forward but {endpoint} refuses connections. "
            f"Fix: set 'GatewayPorts yes' in the relay's sshd_config for public mode (or "
            f"use mode private), and open port {port} in its firewall"
        )
    raise TunnelError(
        f"{endpoint} cannot be reached from the runtime ({text}): the network to "
        f"the relay is down or a firewall drops port {port}. Fix: check the runtime's "
        f"outbound network; the supervisor keeps retrying"
    )


def private_banner_error(cfg: RuntimeConfig, banner: str) -> TunnelError | None:
    """Private mode: None when the relay's socket answered with an SSH banner."""
    if banner.startswith("SSH-"):
        return None
    relay = cfg.ssh_relay
    return TunnelError(
        f"the relay accepted the forward but {relay.socket_path} on it does not "
        f"answer with the runtime's SSH banner (got {banner[:40]!r}). Fix: allow "
        f"'AllowStreamLocalForwarding yes' for {relay.user} on the relay"
    )


def _proc_addr(text: str) -> tuple[str, int]:
    """("ip", port) from /proc/net/tcp{,6}'s "HEX:HEX" (addresses in host byte order words)."""
    addr, port = text.split(":")
    raw = bytes.fromhex(addr)
    # Each 32-bit word is in the kernel's (little-endian here) byte order.
    fixed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(fixed)), int(port, 16)


def relay_connection(pid: int, relay_port: int) -> tuple[str, int, str, int] | None:
    """(local ip, local port, relay ip, relay port) of process ``pid``'s established TCP
    connection to ``relay_port``, read from /proc (None: not found)."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError, ValueError, IndexError), open(table) as fh:
            for line in list(fh)[1:]:
                f = line.split()
                if f[9] in inodes and f[3] == "01":
                    local, remote = _proc_addr(f[1]), _proc_addr(f[2])
                    if remote[1] == relay_port:
                        return (*local, *remote)
    return None


def reset_connection(conn: tuple[str, int, str, int]) -> bool:
    """Abort a dead tunnel's TCP connection if the kernel still holds it (SOCK_DESTROY via
    ``ss -K``): the kernel then sends an RST at once, where the FIN of an ssh that ended
    during an outage waits for TCP's next (backed-off) retransmission. The relay drops the
    session, and its listener, the moment it gets the RST. True when a socket was aborted;
    False where that is not allowed (needs CAP_NET_ADMIN) or nothing was left."""
    ss = shutil.which("ss") or next(
        (p for p in ("/usr/sbin/ss", "/sbin/ss", "/usr/bin/ss") if os.path.exists(p)), None
    )
    if ss is None:
        return False
    lip, lport, rip, rport = conn
    argv = [ss, "-K", "-tnH", "state", "all", "src", lip, "dst", rip]
    argv += ["(", "sport", "=", f":{lport}", "and", "dport", "=", f":{rport}", ")"]
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return False
    # ss lists what it aborted; with no permission it lists nothing (or fails).
    return res.returncode == 0 and bool(res.stdout.strip())
