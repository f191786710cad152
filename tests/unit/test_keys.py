"""keys: classification by content, fingerprints, the stable host key, 0600 copies."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from handy_colab import keys as K
from handy_colab.errors import ConfigError, KeyFileError
from handy_colab.fsutil import atomic_write, backup, read_text_or_empty

SSH_KEYGEN = "/usr/bin/ssh-keygen"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _keygen_public(path: Path) -> str:
    out = subprocess.run(
        [SSH_KEYGEN, "-y", "-f", str(path)], check=True, capture_output=True, text=True
    ).stdout
    return " ".join(out.split()[:2])


# --------------------------------------------------------------------------- load_private_key


@pytest.mark.parametrize(
    ("kind", "marker", "key_type"),
    [
        ("rsa_pem", b"-----BEGIN RSA PRIVATE KEY-----", "ssh-rsa"),
        ("ed25519", b"-----BEGIN OPENSSH PRIVATE KEY-----", "ssh-ed25519"),
        ("ecdsa", b"-----BEGIN OPENSSH PRIVATE KEY-----", "ecdsa-sha2-nistp256"),
        ("rsa_openssh", b"-----BEGIN OPENSSH PRIVATE KEY-----", "ssh-rsa"),
    ],
)
def test_load_private_key_classifies_unencrypted_keys(
    tmp_path: Path, keys: Any, kind: str, marker: bytes, key_type: str
) -> None:
    path = keys.copy_private(kind, tmp_path / "no_extension")
    assert path.read_bytes().startswith(marker)

    key = K.load_private_key(path)

    assert key is not None
    assert key.path == path
    assert key.data == path.read_bytes()
    assert key.public_line.split()[0] == key_type
    # No comment in public_line, and it matches what OpenSSH derives.
    assert len(key.public_line.split()) == 2
    assert key.public_line == keys.blob(kind)


def test_load_private_key_pkcs8_pem(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    priv = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "pkcs8.pem"
    path.write_bytes(
        priv.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)  # ssh-keygen -y refuses group/world-readable keys
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    key = K.load_private_key(path)
    assert key is not None
    assert key.public_line == _keygen_public(path)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"hello world\n",
        b"\x00\x01\x02binary",
        b"-----BEGIN RSA PRIVATE KEY-----\nnot base64 at all\n-----END RSA PRIVATE KEY-----\n",
        b"-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
        b'{"tunnel_options": {}}',
    ],
    ids=["empty", "text", "binary", "garbage-pem", "garbage-openssh", "json"],
)
def test_load_private_key_returns_none_for_non_keys(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "file"
    path.write_bytes(content)
    assert K.load_private_key(path) is None


def test_load_private_key_public_key_file_is_not_private(tmp_path: Path, keys: Any) -> None:
    for kind in ("ed25519", "rsa_pem", "ecdsa"):
        assert K.load_private_key(keys.copy_public(kind, tmp_path)) is None


def test_load_private_key_missing_file_or_directory(tmp_path: Path) -> None:
    assert K.load_private_key(tmp_path / "missing") is None
    assert K.load_private_key(tmp_path) is None


@pytest.mark.parametrize("kind", ["enc_ed25519", "enc_rsa_pem"])
def test_load_private_key_encrypted_raises_key_file_error(
    tmp_path: Path, keys: Any, kind: str
) -> None:
    path = keys.copy_private(kind, tmp_path / "locked.pem")
    with pytest.raises(KeyFileError) as info:
        K.load_private_key(path)
    msg = str(info.value)
    assert isinstance(info.value, ConfigError)
    assert "\n" not in msg
    assert str(path) in msg
    assert "passphrase" in msg
    assert "Fix:" in msg
    assert "ssh-keygen -p" in msg


def test_load_private_key_encrypted_pkcs8(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    priv = ed25519.Ed25519PrivateKey.generate()
    path = tmp_path / "enc8.pem"
    path.write_bytes(
        priv.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret-pass"),
        )
    )
    with pytest.raises(KeyFileError, match="Fix:"):
        K.load_private_key(path)


# --------------------------------------------------------------------------- public keys


def test_parse_public_key_line(keys: Any) -> None:
    line = keys.public_line("laptop")
    pk = K.parse_public_key_line("  " + line + "  extra words\n", "src")
    assert pk is not None
    assert pk.line == line  # type, base64, first comment word
    assert pk.blob == keys.blob("laptop")
    assert pk.source == "src"
    no_comment = K.parse_public_key_line(keys.blob("ecdsa"), "config")
    assert no_comment is not None
    assert no_comment.line == no_comment.blob == keys.blob("ecdsa")


@pytest.mark.parametrize(
    "line",
    [
        "",
        "   ",
        "# ssh-ed25519 AAAA",
        "ssh-ed25519",
        "ssh-ed25519 not-base64!!",
        "ssh-ed25519 AAAAB3NzaC1yc2E",
        "hello world",
        "SHA256:abcdef",
    ],
)
def test_parse_public_key_line_rejects(line: str) -> None:
    assert K.parse_public_key_line(line, "x") is None


def test_parse_public_key_line_rejects_mismatched_type(keys: Any) -> None:
    blob = keys.blob("rsa_pem").split()[1]
    assert K.parse_public_key_line(f"ssh-ed25519 {blob}", "x") is None


def test_load_public_keys(tmp_path: Path, keys: Any) -> None:
    ak = tmp_path / "authorized_keys"
    ak.write_text(
        "# comment line\n\n"
        f"{keys.public_line('laptop')}\n"
        "garbage line\n"
        f"{keys.public_line('rsa_pem')}\n"
    )
    found = K.load_public_keys(ak)
    assert [k.blob for k in found] == [keys.blob("laptop"), keys.blob("rsa_pem")]
    assert {k.source for k in found} == {"authorized_keys"}
    assert K.load_public_keys(keys.private("ed25519")) == []
    assert K.load_public_keys(tmp_path / "missing") == []
    big = tmp_path / "big"
    big.write_text(keys.public_line("laptop") + "\n" + "#" * (70 * 1024))
    assert K.load_public_keys(big) == []


def test_scan_folder(tmp_path: Path, keys: Any) -> None:
    keys.copy_private("ed25519", tmp_path / "a")
    keys.copy_private("rsa_pem", tmp_path / "b.pem")
    keys.copy_private("enc_ed25519", tmp_path / "c")
    keys.copy_private("ecdsa", tmp_path / "skipped")
    keys.copy_private("ecdsa", tmp_path / ".hidden")
    keys.copy_public("laptop", tmp_path / "laptop.pub")
    (tmp_path / "sub").mkdir()
    keys.copy_private("rsa_openssh", tmp_path / "sub" / "nested")
    (tmp_path / "huge").write_bytes(keys.private("ed25519").read_bytes() + b"\n" * 70000)

    found = K.scan_folder(tmp_path, skip={"skipped"})

    assert [k.path.name for k in found.private] == ["a", "b.pem"]
    assert [k.blob for k in found.public] == [keys.blob("laptop")]
    assert len(found.encrypted_errors) == 1
    assert "passphrase" in str(found.encrypted_errors[0])


# --------------------------------------------------------------------------- fingerprint


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa", "rsa_pem", "rsa_openssh"])
def test_fingerprint_matches_ssh_keygen(keys: Any, kind: str) -> None:
    out = subprocess.run(
        [SSH_KEYGEN, "-l", "-E", "sha256", "-f", str(keys.public(kind))],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    expected = out.split()[1]
    assert expected.startswith("SHA256:")
    assert K.fingerprint(keys.public_line(kind)) == expected
    assert K.fingerprint(keys.blob(kind)) == expected


# --------------------------------------------------------------------------- host key


def test_ensure_host_key_creates_0600_key_and_is_stable(tmp_path: Path) -> None:
    folder = tmp_path / "cfg"
    folder.mkdir()

    first = K.ensure_host_key(folder)

    path = folder / "host_keys" / "ssh_host_ed25519_key"
    assert first.path == path
    assert path.is_file()
    assert _mode(path) == 0o600
    assert first.data == path.read_bytes()
    assert first.public_line.startswith("ssh-ed25519 ")
    assert len(first.public_line.split()) == 2
    pub = path.with_name("ssh_host_ed25519_key.pub")
    assert pub.read_text().split()[:2] == first.public_line.split()
    # OpenSSH can read what we wrote, and derives the same public key.
    assert _keygen_public(path) == first.public_line

    # A "runtime restart": a new call on the same folder returns the same key.
    second = K.ensure_host_key(folder)
    assert second == first
    assert path.read_bytes() == first.data
    assert sorted(p.name for p in (folder / "host_keys").iterdir()) == [
        "ssh_host_ed25519_key",
        "ssh_host_ed25519_key.pub",
    ]


def test_ensure_host_key_differs_between_folders(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert (
        K.ensure_host_key(tmp_path / "a").public_line
        != K.ensure_host_key(tmp_path / "b").public_line
    )


def test_ensure_host_key_keeps_existing_user_key(tmp_path: Path, keys: Any) -> None:
    (tmp_path / "host_keys").mkdir()
    keys.copy_private("ecdsa", tmp_path / "host_keys" / "ssh_host_ed25519_key", mode=0o644)
    key = K.ensure_host_key(tmp_path)
    assert key.public_line == keys.blob("ecdsa")


@pytest.mark.parametrize("content", [b"garbage", b""])
def test_ensure_host_key_unusable_file(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "host_keys").mkdir()
    path = tmp_path / "host_keys" / "ssh_host_ed25519_key"
    path.write_bytes(content)
    with pytest.raises(KeyFileError) as info:
        K.ensure_host_key(tmp_path)
    msg = str(info.value)
    assert str(path) in msg and "Fix:" in msg and "\n" not in msg
    assert path.read_bytes() == content  # never overwritten


def test_ensure_host_key_encrypted_file(tmp_path: Path, keys: Any) -> None:
    (tmp_path / "host_keys").mkdir()
    keys.copy_private("enc_ed25519", tmp_path / "host_keys" / "ssh_host_ed25519_key")
    with pytest.raises(KeyFileError, match="Fix:"):
        K.ensure_host_key(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write a read-only folder")
def test_ensure_host_key_read_only_folder(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(KeyFileError, match="Fix:"):
            K.ensure_host_key(tmp_path)
    finally:
        tmp_path.chmod(0o700)


def test_ensure_host_key_folder_not_writable(tmp_path: Path) -> None:
    # host_keys exists as a *file*, so the key cannot be saved under it (works as root too).
    (tmp_path / "host_keys").write_text("in the way")
    with pytest.raises(KeyFileError) as info:
        K.ensure_host_key(tmp_path)
    assert "Fix:" in str(info.value)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- private_copy


def test_private_copy_is_0600_even_from_0644(tmp_path: Path, keys: Any) -> None:
    src = keys.copy_private("ed25519", tmp_path / "drive_key", mode=0o644)
    assert _mode(src) == 0o644
    key = K.load_private_key(src)
    assert key is not None

    dest = K.private_copy(key, tmp_path / "run" / "relay_key")

    assert dest == tmp_path / "run" / "relay_key"
    assert _mode(dest) == 0o600
    assert dest.read_bytes() == src.read_bytes()
    assert _mode(src) == 0o644  # the user's file is untouched


def test_private_copy_over_existing_world_readable_file(tmp_path: Path, keys: Any) -> None:
    key = K.load_private_key(keys.private("rsa_pem"))
    assert key is not None
    dest = tmp_path / "copy"
    dest.write_text("old")
    dest.chmod(0o666)
    K.private_copy(key, dest)
    assert _mode(dest) == 0o600
    assert dest.read_bytes() == key.data


def test_private_copy_ignores_umask(tmp_path: Path, keys: Any) -> None:
    key = K.load_private_key(keys.private("ed25519"))
    assert key is not None
    old = os.umask(0)
    try:
        dest = K.private_copy(key, tmp_path / "k")
    finally:
        os.umask(old)
    assert _mode(dest) == 0o600


# --------------------------------------------------------------------------- fsutil


def test_atomic_write_mode_and_content(tmp_path: Path) -> None:
    p = tmp_path / "d" / "f"
    atomic_write(p, "hello", mode=0o640)
    assert p.read_text() == "hello"
    assert _mode(p) == 0o640
    atomic_write(p, b"bytes")
    assert p.read_bytes() == b"bytes"
    assert _mode(p) == 0o644
    assert [x.name for x in p.parent.iterdir()] == ["f"]  # no temp files left


def test_backup_is_unique_and_identical(tmp_path: Path) -> None:
    p = tmp_path / "config"
    assert backup(p) is None
    p.write_text("Host a\n")
    b1, b2 = backup(p), backup(p)
    assert b1 is not None and b2 is not None
    assert b1 != b2
    assert b1.read_text() == b2.read_text() == "Host a\n"
    assert b1.name.startswith("config.handy-colab-backup-")


def test_read_text_or_empty(tmp_path: Path) -> None:
    assert read_text_or_empty(tmp_path / "nope") == ""
    (tmp_path / "yes").write_text("x")
    assert read_text_or_empty(tmp_path / "yes") == "x"
