"""Verifying the relay's host key the way OpenSSH does: known_hosts lookup, pinning, TOFU.

The embedded client decides on the relay's host key itself (`HostKeyPolicy`), reading and
writing the same files as OpenSSH's ``ssh -R`` with ``StrictHostKeyChecking yes`` or
``accept-new``, so switching clients keeps the pin.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..fsutil import atomic_write

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
