"""The two private key formats users have, and public key lines, read with the standard library.

Every start of `up`, of the supervisor and of `connect` classifies key files or a host key
line, and importing cryptography (its Rust extension and OpenSSL) is 20-70 ms of each of
those starts on the machines measured (docs/benchmarks.md), on the path to a working ssh.
What classification needs is only the public half and whether a passphrase guards the key,
and both formats that matter here carry that in a simple documented layout:

* ``openssh-key-v1`` (what ``ssh-keygen`` writes; OpenSSH's PROTOCOL.key): the public key
  is stored in clear before the (maybe encrypted) private section;
* PKCS#1 ``RSA PRIVATE KEY`` PEM (portmap.io's keys): a DER sequence whose second and
  third integers are the modulus and public exponent.

Anything else (PKCS#8, EC PEM, security keys, DSA) returns ``None`` here and the caller
falls back to cryptography, so every format it read before is still read the same way.
ssh and asyncssh load and check the files themselves before they use them.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct

OPENSSH_BEGIN = b"-----BEGIN OPENSSH PRIVATE KEY-----"
RSA_BEGIN = b"-----BEGIN RSA PRIVATE KEY-----"
_MAGIC = b"openssh-key-v1\0"

# The key types this reader knows how to check; others go to cryptography.
_ECDSA = {
    "ecdsa-sha2-nistp256": (b"nistp256", 32),
    "ecdsa-sha2-nistp384": (b"nistp384", 48),
    "ecdsa-sha2-nistp521": (b"nistp521", 66),
}
KNOWN_TYPES = frozenset({"ssh-ed25519", "ssh-rsa", *_ECDSA})


class Encrypted(Exception):
    """The key is readable but protected by a passphrase."""


class _Reader:
    """SSH wire format (RFC 4251 section 5): uint32 lengths, strings, mpints."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ValueError("truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def uint32(self) -> int:
        value: int = struct.unpack(">I", self.take(4))[0]
        return value

    def string(self) -> bytes:
        return self.take(self.uint32())

    def mpint(self) -> int:
        raw = self.string()
        if raw[:1] and raw[0] & 0x80:
            raise ValueError("negative mpint")
        return int.from_bytes(raw, "big")

    def done(self) -> bool:
        return self.pos == len(self.data)


def check_public_blob(blob: bytes) -> str:
    """The key type of a public key blob; ValueError if it is not a well-formed known key.

    The layout is checked (type, lengths, no trailing bytes, RSA numbers that can be a
    key); an ECDSA point is not checked to lie on its curve: ssh does that before use.
    """
    r = _Reader(blob)
    kind = r.string().decode("ascii")
    if kind == "ssh-ed25519":
        if len(r.string()) != 32:
            raise ValueError("bad ed25519 key")
    elif kind == "ssh-rsa":
        e, n = r.mpint(), r.mpint()
        if e < 3 or e % 2 == 0 or e >= n or n % 2 == 0 or n.bit_length() < 512:
            raise ValueError("bad rsa key")
    elif kind in _ECDSA:
        curve, size = _ECDSA[kind]
        point = r.string() if r.string() == curve else b""
        if len(point) != 1 + 2 * size or point[0] != 4:
            raise ValueError("bad ecdsa key")
    else:
        raise ValueError(f"unknown key type {kind}")
    if not r.done():
        raise ValueError("trailing data")
    return kind


def public_line_of_blob(blob: bytes) -> str:
    return f"{check_public_blob(blob)} {base64.b64encode(blob).decode()}"


def _pem_body(data: bytes, begin: bytes) -> tuple[list[bytes], bytes]:
    """The header lines and the decoded body of the first ``begin`` PEM block."""
    start = data.index(begin) + len(begin)
    end = data.index(b"-----END", start)
    lines = data[start:end].strip().splitlines()
    headers = [ln.strip() for ln in lines if b":" in ln]
    body = b"".join(ln.strip() for ln in lines if b":" not in ln)
    return headers, base64.b64decode(body, validate=True)


def openssh_public_line(data: bytes) -> str | None:
    """The public line of an ``openssh-key-v1`` file; None if this reader cannot say.

    Raises Encrypted when the private section is protected by a passphrase.
    """
    try:
        _headers, raw = _pem_body(data, OPENSSH_BEGIN)
        r = _Reader(raw)
        if r.take(len(_MAGIC)) != _MAGIC:
            return None
        cipher, _kdf, _kdf_options = r.string(), r.string(), r.string()
        if r.uint32() != 1:
            return None
        blob = r.string()
        private = r.string()
        if not r.done():
            return None
        line = public_line_of_blob(blob)
        if cipher != b"none":
            raise Encrypted
        # Unencrypted: two equal check words, then the same key type as the public blob.
        p = _Reader(private)
        if p.uint32() != p.uint32() or p.string() != _Reader(blob).string():
            return None
        return line
    except (ValueError, binascii.Error, UnicodeDecodeError, struct.error):
        return None


def _der_item(raw: bytes, pos: int, tag: int) -> tuple[bytes, int]:
    """The contents of the DER item of ``tag`` at ``pos``, and the position after it."""
    if pos + 2 > len(raw) or raw[pos] != tag:
        raise ValueError("unexpected DER")
    length, pos = raw[pos + 1], pos + 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or pos + count > len(raw):
            raise ValueError("bad DER length")
        length, pos = int.from_bytes(raw[pos : pos + count], "big"), pos + count
    if pos + length > len(raw):
        raise ValueError("truncated DER")
    return raw[pos : pos + length], pos + length


def _mpint(value: int) -> bytes:
    # One byte more than the bits need: a leading 0 keeps a high bit from reading negative.
    return _string(value.to_bytes(value.bit_length() // 8 + 1, "big"))


def rsa_pem_public_line(data: bytes) -> str | None:
    """The public line of a PKCS#1 ``RSA PRIVATE KEY`` PEM; None if this reader cannot say.

    Raises Encrypted for an OpenSSL-encrypted one (its ``Proc-Type: 4,ENCRYPTED`` header).
    """
    try:
        headers, raw = _pem_body(data, RSA_BEGIN)
        if any(re.match(rb"Proc-Type:\s*4,\s*ENCRYPTED", h) for h in headers):
            raise Encrypted
        seq, end = _der_item(raw, 0, 0x30)
        if end != len(raw):
            return None
        numbers, pos = [], 0
        while pos < len(seq):
            item, pos = _der_item(seq, pos, 0x02)
            numbers.append(int.from_bytes(item, "big", signed=True))
        if len(numbers) != 9 or numbers[0] != 0:
            return None
        n, e, p, q = numbers[1], numbers[2], numbers[4], numbers[5]
        if p * q != n:
            return None
        return public_line_of_blob(_string(b"ssh-rsa") + _mpint(e) + _mpint(n))
    except (ValueError, binascii.Error, UnicodeDecodeError, struct.error):
        return None


def _string(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def check_public_line(kind: str, b64: str) -> bool | None:
    """Whether ``kind b64`` is a well-formed public key of that type; None for a type this
    reader does not know (the caller asks cryptography)."""
    if kind not in KNOWN_TYPES:
        return None
    try:
        return check_public_blob(base64.b64decode(b64, validate=True)) == kind
    except (ValueError, binascii.Error, UnicodeDecodeError, struct.error):
        return False
