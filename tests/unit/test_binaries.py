"""binaries.Installer on release archives (.tar.gz, .zip) served from file:// URLs: the
archive is what is pinned and cached, the program is taken out of the verified archive."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from handy_colab.binaries import Asset, BinarySpec, Installer, platform_key
from handy_colab.errors import BinaryError

PROGRAM = b"#!/bin/sh\necho 'frpc version 0.70.1'\n"


def _tgz(path: Path, members: dict[str, bytes], symlink: str | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            tf.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo(symlink)
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tf.addfile(info)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def _spec(filename: str, data: bytes, member: str) -> BinarySpec:
    return BinarySpec(
        name="frpc",
        version="0.70.1",
        base_url="https://unused.invalid",
        assets={platform_key(): Asset(filename, hashlib.sha256(data).hexdigest(), member)},
        url_env="HANDY_COLAB_TEST_UNUSED",
        config_hint="frp",
    )


@pytest.fixture(autouse=True)
def _no_path_copy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))


def test_tar_member_extracted_and_cached(tmp_path: Path) -> None:
    name = "frp_0.70.1_linux_amd64.tar.gz"
    data = _tgz(tmp_path / "www" / "0.70.1" / name, {"frp_0.70.1_linux_amd64/frpc": PROGRAM})
    spec = _spec(name, data, "frp_0.70.1_linux_amd64/frpc")
    base = (tmp_path / "www").as_uri()
    got = Installer(spec, base_url=base, cache=tmp_path / "c").resolve()
    assert got.source == "download" and got.path.name == "frpc"
    assert got.path.read_bytes() == PROGRAM and os.access(got.path, os.X_OK)
    # The archive is kept (not executable); the next resolve verifies it and needs no server.
    archive = got.path.parent / name
    assert archive.read_bytes() == data and not os.access(archive, os.X_OK)
    got.path.write_bytes(b"#!/bin/sh\necho altered\n")
    again = Installer(spec, base_url="file:///nonexistent", cache=tmp_path / "c").resolve()
    assert again.source == "cache" and again.path.read_bytes() == PROGRAM


def test_zip_member(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("frp_0.70.1_windows_amd64/frpc.exe", PROGRAM)
    www = tmp_path / "www" / "0.70.1"
    www.mkdir(parents=True)
    (www / "frp.zip").write_bytes(buf.getvalue())
    spec = _spec("frp.zip", buf.getvalue(), "frp_0.70.1_windows_amd64/frpc.exe")
    got = Installer(spec, base_url=(tmp_path / "www").as_uri(), cache=tmp_path / "c").resolve()
    assert got.path.name == "frpc.exe" and got.path.read_bytes() == PROGRAM


def test_tampered_archive_refused_and_not_cached(tmp_path: Path) -> None:
    name = "frp.tar.gz"
    good = _tgz(tmp_path / "good.tgz", {"d/frpc": PROGRAM})
    _tgz(tmp_path / "www" / "0.70.1" / name, {"d/frpc": b"#!/bin/sh\ntouch /tmp/x\n"})
    spec = _spec(name, good, "d/frpc")
    with pytest.raises(BinaryError, match="does not match the digest pinned"):
        Installer(spec, base_url=(tmp_path / "www").as_uri(), cache=tmp_path / "c").resolve()
    assert [p.name for p in (tmp_path / "c").rglob("*") if p.is_file()] == [".lock"]


@pytest.mark.parametrize("member", ["d/missing", "d/link"])
def test_member_must_be_a_regular_file(tmp_path: Path, member: str) -> None:
    name = "frp.tar.gz"
    data = _tgz(tmp_path / "www" / "0.70.1" / name, {"d/frpc": PROGRAM}, symlink="d/link")
    spec = _spec(name, data, member)
    with pytest.raises(BinaryError, match="cannot take") as err:
        Installer(spec, base_url=(tmp_path / "www").as_uri(), cache=tmp_path / "c").resolve()
    assert "Fix:" in str(err.value) and "\n" not in str(err.value)
