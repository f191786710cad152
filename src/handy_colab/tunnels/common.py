"""What every tunnel backend shares: host-key files, error wording, the end-to-end checks.

Both clients (OpenSSH's ``ssh -R`` and the embedded asyncssh one) read the same pinned and
trust-on-first-use files and report a failure with the same one line, so switching
backends keeps the pin and `status` reads the same whichever client runs.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import RuntimeConfig
from ..errors import TunnelError
from ..fsutil import atomic_write
from ..keys import fingerprint, private_copy
from ..state import RuntimeDir
from ..streamlocal import first_line

# The relay hop's Host alias in the OpenSSH client's config; the embedded client's check
# errors name it too, so a failed private-mode check reads the same whichever client runs.
RELAY_ALIAS = "handy-colab-relay"

# Printed by the embedded client when the TOFU line cannot be written (OpenSSH would only
# warn and go on unpinned; we refuse instead). Matched by `classify`.
RECORD_FAILED = "cannot record the relay host key"


def known_hosts_pattern(host: str, port: int) -> str:
    """The host field OpenSSH writes and looks up (CheckHostIP no, no HostKeyAlias)."""
    return host if port == 22 else f"[{host}]:{port}"


# OpenSSH 9.2's default HostKeyAlgorithms without the certificate ones (a relay's plain host
# key is what gets pinned). The embedded client offers them in this order so that on first
# use it records the same key type OpenSSH would.
OPENSSH_HOST_KEY_ALGS = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "rsa-sha2-512",
    "rsa-sha2-256",
)
_TYPE_NAMES = {
    "ssh-ed25519": "ED25519",
    "ssh-rsa": "RSA",
    "sk-ssh-ed25519@openssh.com": "ED25519-SK",
    "sk-ecdsa-sha2-nistp256@openssh.com": "ECDSA-SK",
}


def key_type_of_alg(alg: str) -> str:
    """The key type a host key algorithm signs with (rsa-sha2-* are ssh-rsa keys)."""
    return "ssh-rsa" if alg.startswith("rsa-sha2-") else alg


def type_name(key_type: str) -> str:
    """OpenSSH's short name of a key type, as in its messages ("ED25519", "ECDSA")."""
    if key_type.startswith("ecdsa-sha2-"):
        return "ECDSA"
    return _TYPE_NAMES.get(key_type, key_type)


def host_key_fingerprint(blob: str) -> str:
    """SHA256:... of a "type base64" key, as OpenSSH prints it."""
    try:
        raw = base64.b64decode(blob.split()[1], validate=True)
    except (IndexError, ValueError):
        return "(invalid key)"
    return "SHA256:" + base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")


def _glob_match(name: str, pattern: str) -> bool:
    """OpenSSH's match_pattern: only '*' and '?' are special ('[' is literal, as in [host]:port)."""
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, name, flags=re.DOTALL) is not None


def _hosts_field_matches(hosts: str, name: str) -> bool:
    """OpenSSH's known_hosts host field: one hashed name, or a comma list with !negation."""
    if hosts.startswith("|1|"):
        try:
            _, _, salt, digest = hosts.split("|")
            mac = hmac.new(base64.b64decode(salt), name.encode(), hashlib.sha1).digest()
            return hmac.compare_digest(mac, base64.b64decode(digest))
        except ValueError:
            return False
    name = name.lower()
    found = False
    for pat in hosts.split(","):
        negated = pat.startswith("!")
        if _glob_match(name, pat[1:].lower() if negated else pat.lower()):
            if negated:
                return False  # a negated match rules the whole line out
            found = True
    return found


@dataclass
class KnownKeys:
    keys: list[str] = field(default_factory=list)  # "type base64" trusted for the host
    revoked: list[str] = field(default_factory=list)

    @property
    def types(self) -> set[str]:
        return {k.split()[0] for k in self.keys}


def parse_known_hosts(text: str, name: str) -> KnownKeys:
    """The keys ``text`` (OpenSSH known_hosts format) holds for ``name`` ("[host]:port").

    Lines OpenSSH would skip (malformed, unknown markers) are skipped; @cert-authority lines
    are left out, since no certificate host key algorithm is ever offered.
    """
    out = KnownKeys()
    for raw in text.splitlines():
        fields = raw.split()
        if not fields or fields[0].startswith("#"):
            continue
        marker = None
        if fields[0].startswith("@"):
            marker, fields = fields[0], fields[1:]
        if len(fields) < 3 or marker not in (None, "@revoked"):
            continue
        if not _hosts_field_matches(fields[0], name):
            continue
        blob = f"{fields[1]} {fields[2]}"
        (out.revoked if marker else out.keys).append(blob)
    return out


def preferred_host_key_algs(known_types: set[str], supported: list[str] | None = None) -> list[str]:
    """OpenSSH's order with the algorithms of already known key types moved to the front.

    That is what ssh does (order_hostkeyalgs): a relay with several host keys then shows the
    pinned one rather than another type that would look like a changed key.
    """
    algs = [a for a in OPENSSH_HOST_KEY_ALGS if supported is None or a in supported]
    first = [a for a in algs if key_type_of_alg(a) in known_types]
    return first + [a for a in algs if a not in first]


@dataclass
class Verdict:
    ok: bool
    lines: list[str]  # what to report, in OpenSSH's wording (classify reads it)


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Serialise TOFU writers of one folder (two runtimes may share it).

    Best effort: a file system without flock (some FUSE mounts) still gets the atomic write.
    """
    fd = -1
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        if fd >= 0:
            os.close(fd)


def _umask() -> int:
    """The process umask, read without changing it (os.umask would race other threads)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022


class HostKeyPolicy:
    """StrictHostKeyChecking yes (``strict``) or accept-new, on one known_hosts file.

    Matches OpenSSH with CheckHostIP no and HashKnownHosts no: the host is looked up as
    ``known_hosts_pattern(host, port)``, an unknown host is appended as one plain line (accept-
    new only), a known host whose key differs is refused and never re-pinned. Deliberately
    stricter than ssh in one case: a key of another type than the pinned one(s) is refused as
    changed (ssh's accept-new would add it), since it is offered only once the relay no longer
    has the pinned key.
    """

    def __init__(self, known_hosts: Path, strict: bool, host: str, port: int) -> None:
        self.path = known_hosts
        self.strict = strict
        self.name = known_hosts_pattern(host, port)

    def known(self) -> KnownKeys:
        try:
            text = self.path.read_text(errors="replace")
        except FileNotFoundError:
            text = ""
        return parse_known_hosts(text, self.name)

    def verify(self, blob: str) -> Verdict:
        """Decide on the key ``blob`` ("type base64") the relay presented."""
        try:
            return self._verify(blob)
        except OSError as exc:
            # An unreadable pin file is no pin: refuse (never connect unverified).
            return Verdict(
                False,
                [
                    f"No {type_name(blob.split()[0])} host key is known for {self.name}: "
                    f"cannot read {self.path} ({exc.strerror or exc}).",
                    "Host key verification failed.",
                ],
            )

    def _verify(self, blob: str) -> Verdict:
        if self.strict:
            return self._judge(self.known(), blob)
        with _folder_lock(self.path.parent):
            # Read again under the lock: another runtime may have pinned it meanwhile.
            known = self.known()
            verdict = self._judge(known, blob)
            if verdict.ok or verdict.lines:  # decided; only an unknown host is recorded
                return verdict
            return self._record(blob)

    def _judge(self, known: KnownKeys, blob: str) -> Verdict:
        ktype = blob.split()[0]
        fp = host_key_fingerprint(blob)
        if blob in known.revoked:
            return Verdict(
                False,
                [
                    f"@@@ WARNING: REVOKED HOST KEY DETECTED! {type_name(ktype)} key {fp} for "
                    f"{self.name} is marked as revoked.",
                    "Host key verification failed.",
                ],
            )
        if blob in known.keys:
            return Verdict(
                True,
                [
                    f"Host '{self.name}' is known and matches the {type_name(ktype)} "
                    f"host key {fp} ({self.path})."
                ],
            )
        if known.keys:
            pinned = ", ".join(host_key_fingerprint(k) for k in known.keys)
            return Verdict(
                False,
                [
                    "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @",
                    f"The {type_name(ktype)} host key for {self.name} is {fp}; pinned: {pinned}.",
                    "Host key verification failed.",
                ],
            )
        if self.strict:
            return Verdict(
                False,
                [
                    f"No {type_name(ktype)} host key is known for {self.name} and you have "
                    f"requested strict checking.",
                    "Host key verification failed.",
                ],
            )
        return Verdict(False, [])  # unknown: the caller records it

    def _record(self, blob: str) -> Verdict:
        line = f"{self.name} {blob}\n"
        target = self.path.resolve()  # a symlinked file stays a symlink
        try:
            try:
                old = target.read_bytes()
                mode = target.stat().st_mode & 0o777
            except FileNotFoundError:
                old = b""
                mode = 0o666 & ~_umask()  # what ssh's fopen("a") would create
            sep = b"" if not old or old.endswith(b"\n") else b"\n"
            atomic_write(target, old + sep + line.encode(), mode=mode)
        except OSError as exc:
            return Verdict(
                False,
                [
                    f"{RECORD_FAILED} in {self.path} ({exc.strerror or exc}); refusing to "
                    f"connect unpinned.",
                    "Host key verification failed.",
                ],
            )
        return Verdict(
            True,
            [
                f"Warning: Permanently added '{self.name}' ({type_name(blob.split()[0])}) to "
                f"the list of known hosts."
            ],
        )


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


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now (for a child's metrics, admin API...)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def local_json(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """(HTTP status, decoded JSON) of a child's API on 127.0.0.1 (metrics, admin); (0, None)
    when it does not answer. Never through a proxy: an https_proxy/http_proxy set for the
    notebook must not carry requests to our own children."""
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


def check_public(cfg: RuntimeConfig, endpoint: str, timeout: float) -> None:
    """Public mode: the relay's port must answer with the runtime's SSH banner."""
    relay = cfg.ssh_relay
    connected, banner = tcp_banner(relay.public_host, relay.remote_port, timeout)
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
            f"the relay accepted the forward but {endpoint} refuses connections. "
            f"Fix: set 'GatewayPorts yes' in the relay's sshd_config for public mode (or "
            f"use mode private), and open port {port} in its firewall"
        )
    raise TunnelError(
        f"{endpoint} cannot be reached from the runtime ({banner}): the network to "
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
