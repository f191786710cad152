"""keyformat: the standard-library reader agrees with ssh-keygen and cryptography on every key
type and format it reads, refuses what they refuse, and leaves the rest to cryptography."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest

from handy_colab import keyformat as KF
from handy_colab import keys as K
from handy_colab.errors import KeyFileError

SSH_KEYGEN = "/usr/bin/ssh-keygen"

# name -> ssh-keygen arguments; every type and both formats the reader handles.
SPECS = {
    "ed25519": ["-t", "ed25519"],
    "rsa2048": ["-t", "rsa", "-b", "2048"],
    "rsa3072_pem": ["-t", "rsa", "-b", "3072", "-m", "PEM"],
    "rsa1024_pem": ["-t", "rsa", "-b", "1024", "-m", "PEM"],
    "ecdsa256": ["-t", "ecdsa", "-b", "256"],
    "ecdsa384": ["-t", "ecdsa", "-b", "384"],
    "ecdsa521": ["-t", "ecdsa", "-b", "521"],
}


def _keygen(path: Path, args: list[str], passphrase: str = "") -> Path:
    subprocess.run(
        [SSH_KEYGEN, "-q", *args, "-N", passphrase, "-C", "c", "-f", str(path)], check=True
    )
    return path


def _keygen_public(path: Path) -> str:
    out = subprocess.run(
        [SSH_KEYGEN, "-y", "-f", str(path)], check=True, capture_output=True, text=True
    ).stdout
    return " ".join(out.split()[:2])


def _cryptography_public(data: bytes) -> str:
    from cryptography.hazmat.primitives import serialization

    loader = (
        serialization.load_ssh_private_key
        if KF.OPENSSH_BEGIN in data
        else serialization.load_pem_private_key
    )
    pub = loader(data, password=None).public_key()
    return pub.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("kf")
    out = {name: _keygen(d / name, args) for name, args in SPECS.items()}
    out["enc_ed25519"] = _keygen(d / "enc_ed25519", SPECS["ed25519"], "pass-word")
    out["enc_rsa_pem"] = _keygen(d / "enc_rsa_pem", SPECS["rsa3072_pem"], "pass-word")
    return out


@pytest.mark.parametrize("name", sorted(SPECS))
def test_private_key_public_line_matches_ssh_keygen_and_cryptography(
    made: dict[str, Path], name: str
) -> None:
    data = made[name].read_bytes()
    reader = KF.rsa_pem_public_line if KF.RSA_BEGIN in data else KF.openssh_public_line
    line = reader(data)
    assert line is not None
    assert line == _keygen_public(made[name]) == _cryptography_public(data)
    # And the public line the reader derived passes its own public key check.
    kind, b64 = line.split()
    assert KF.check_public_line(kind, b64) is True


@pytest.mark.parametrize("name", ["enc_ed25519", "enc_rsa_pem"])
def test_encrypted_keys_are_recognised(made: dict[str, Path], name: str) -> None:
    data = made[name].read_bytes()
    reader = KF.rsa_pem_public_line if KF.RSA_BEGIN in data else KF.openssh_public_line
    with pytest.raises(KF.Encrypted):
        reader(data)
    with pytest.raises(KeyFileError, match="passphrase"):
        K.load_private_key(made[name])


@pytest.mark.parametrize("name", ["ed25519", "rsa2048", "rsa3072_pem", "ecdsa384"])
def test_damaged_keys_are_not_read_as_keys(made: dict[str, Path], name: str) -> None:
    data = made[name].read_bytes()
    begin = KF.RSA_BEGIN if KF.RSA_BEGIN in data else KF.OPENSSH_BEGIN
    reader = KF.rsa_pem_public_line if begin == KF.RSA_BEGIN else KF.openssh_public_line
    body = base64.b64decode(b"".join(data.split(b"-----")[2].split()))
    end = b"-----END" + data.split(b"-----END", 1)[1]

    def pem(raw: bytes) -> bytes:
        return begin + b"\n" + base64.encodebytes(raw) + end

    assert reader(pem(body)) is not None  # the rebuild itself is faithful
    for cut in (1, 7, len(body) // 2, len(body) - 1):
        assert reader(pem(body[:cut])) is None, cut
    assert reader(pem(body + b"\0\0\0\0")) is None
    if begin == KF.RSA_BEGIN:
        # A modulus that is not p*q: flip a bit inside n (the 2nd integer of the sequence).
        flipped = bytearray(body)
        flipped[20] ^= 0x01
        assert reader(pem(bytes(flipped))) is None
    else:
        # The private section's two check words disagree (what a wrong passphrase gives).
        at = len(b"openssh-key-v1\0")
        for skip in ("string", "string", "string", "uint32", "string", "uint32"):
            at += 4 + (int.from_bytes(body[at : at + 4], "big") if skip == "string" else 0)
        flipped = bytearray(body)
        flipped[at] ^= 0xFF
        assert reader(pem(bytes(flipped))) is None


@pytest.mark.parametrize("name", sorted(SPECS))
def test_public_lines_agree_with_cryptography(made: dict[str, Path], name: str) -> None:
    from cryptography.hazmat.primitives import serialization

    kind, b64 = Path(f"{made[name]}.pub").read_text().split()[:2]
    assert KF.check_public_line(kind, b64) is True
    serialization.load_ssh_public_key(f"{kind} {b64}".encode())
    raw = base64.b64decode(b64)
    for bad in (raw[:-1], raw + b"\0", raw[:20]):
        assert KF.check_public_line(kind, base64.b64encode(bad).decode()) is False
    other = "ssh-ed25519" if kind != "ssh-ed25519" else "ssh-rsa"
    assert KF.check_public_line(other, b64) is False
    assert KF.check_public_line(kind, b64 + "!") is False


def test_other_types_and_formats_go_to_cryptography(tmp_path: Path) -> None:
    blob = base64.b64encode(b"\0\0\0\x07ssh-dss" + b"\0" * 20).decode()
    assert KF.check_public_line("ssh-dss", blob) is None
    sk = "sk-ssh-ed25519@openssh.com"
    assert KF.check_public_line(sk, blob) is None
    # PKCS#8 is not read here; load_private_key still reads it through cryptography.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    path = tmp_path / "p8"
    path.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    assert KF.openssh_public_line(path.read_bytes()) is None
    key = K.load_private_key(path)
    assert key is not None and key.public_line.startswith("ssh-ed25519 ")


def test_reading_the_common_keys_does_not_import_cryptography(made: dict[str, Path]) -> None:
    """The point of the reader: `up`, the supervisor and `connect` start without it."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from handy_colab.keys import load_private_key, parse_public_key_line\n"
        "for p in sys.argv[1:]:\n"
        "    k = load_private_key(Path(p))\n"
        "    assert k is not None and parse_public_key_line(k.public_line, 'x')\n"
        "print(sorted(m for m in sys.modules if m.startswith('cryptography')))\n"
    )
    files = [str(made[n]) for n in ("ed25519", "rsa2048", "rsa3072_pem", "ecdsa521")]
    out = subprocess.run(
        [sys.executable, "-c", code, *files], check=True, capture_output=True, text=True
    ).stdout
    assert out.strip() == "[]"
