"""The download cache's checks on real files: a directory others can write, another uid's,
or a symlink is refused in one line naming it; a cached program changed after it was verified
is detected before it runs; a file we did not write is never trusted."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from handy_colab.binaries import Asset, BinarySpec, Installer, platform_key
from handy_colab.errors import BinaryError

VERSION = "2026.3.0"


def program(marker: Path) -> bytes:
    return f"#!/bin/sh\ntouch {marker}\necho cloudflared version {VERSION}\n".encode()


def spec_for(data: bytes) -> BinarySpec:
    return BinarySpec(
        name="cloudflared",
        version=VERSION,
        base_url="http://127.0.0.1:9/unreachable",  # any download attempt fails at once
        assets={platform_key(): Asset("cloudflared-asset", hashlib.sha256(data).hexdigest())},
        url_env="HANDY_COLAB_TEST_UNUSED",
        config_hint="cloudflared",
    )


def seed(cache: Path, data: bytes) -> Path:
    """A cache as a verified download leaves it: 0700 directories, a 0500 program."""
    d = cache / "bin" / f"cloudflared-{VERSION}-{platform_key()}"
    d.mkdir(parents=True, mode=0o700)
    for p in (cache, cache / "bin", d):
        p.chmod(0o700)
    target = d / "cloudflared"
    target.write_bytes(data)
    target.chmod(0o500)
    return target


def one_line(exc: pytest.ExceptionInfo[BinaryError]) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and "Fix:" in msg, msg
    return msg


def need_root() -> None:
    if os.geteuid() == 0:
        return
    if os.environ.get("CI") == "true":
        pytest.fail("CI=true but this test needs root (to chown a file to another uid)")
    pytest.skip("needs root (to chown a file to another uid)")


def test_a_verified_cache_resolves_and_its_program_runs(tmp_path: Path) -> None:
    data = program(tmp_path / "RAN")
    target = seed(tmp_path / "cache", data)
    got = Installer(spec_for(data), cache=tmp_path / "cache").resolve()
    assert (got.path, got.source, got.sha256) == (target, "cache", hashlib.sha256(data).hexdigest())
    got.check()
    out = subprocess.run([str(got.path)], capture_output=True, text=True, check=True)
    assert VERSION in out.stdout


@pytest.mark.parametrize("which", ["root", "bin", "program-dir"])
def test_cache_dir_writable_by_others_is_refused(tmp_path: Path, which: str) -> None:
    data = program(tmp_path / "RAN")
    target = seed(tmp_path / "cache", data)
    bad = {"root": tmp_path / "cache", "bin": tmp_path / "cache" / "bin"}.get(which, target.parent)
    bad.chmod(0o777)
    with pytest.raises(BinaryError) as exc:
        Installer(spec_for(data), cache=tmp_path / "cache").resolve()
    msg = one_line(exc)
    assert f"{bad}:" in msg and "writable by others (mode 777)" in msg
    assert f"chmod 700 {bad}" in msg
    assert not (tmp_path / "RAN").exists()


def test_cache_dir_of_another_owner_is_refused(tmp_path: Path) -> None:
    need_root()
    data = program(tmp_path / "RAN")
    target = seed(tmp_path / "cache", data)
    os.chown(target.parent, 65534, 65534)
    with pytest.raises(BinaryError) as exc:
        Installer(spec_for(data), cache=tmp_path / "cache").resolve()
    msg = one_line(exc)
    assert f"{target.parent}:" in msg and "owned by uid 65534" in msg and "rm -rf" in msg


def test_cached_program_of_another_owner_is_not_trusted(tmp_path: Path) -> None:
    need_root()
    data = program(tmp_path / "RAN")
    target = seed(tmp_path / "cache", data)
    os.chown(target, 65534, 65534)
    with pytest.raises(BinaryError) as exc:
        Installer(spec_for(data), cache=tmp_path / "cache").resolve()
    assert f"{target}:" in one_line(exc) and "not run" in str(exc.value)


def test_symlinked_cache_dir_is_refused(tmp_path: Path) -> None:
    data = program(tmp_path / "RAN")
    real = tmp_path / "elsewhere"
    seed(real, data)
    (tmp_path / "cache").symlink_to(real)
    with pytest.raises(BinaryError) as exc:
        Installer(spec_for(data), cache=tmp_path / "cache").resolve()
    assert f"{tmp_path / 'cache'}: the download cache is a symlink" in one_line(exc)


def test_symlinked_cached_program_is_refused(tmp_path: Path) -> None:
    data = program(tmp_path / "RAN")
    target = seed(tmp_path / "cache", data)
    real = tmp_path / "real-program"
    target.rename(real)
    target.symlink_to(real)
    with pytest.raises(BinaryError) as exc:
        Installer(spec_for(data), cache=tmp_path / "cache").resolve()
    assert f"{target}:" in one_line(exc)
    assert not (tmp_path / "RAN").exists()


def test_program_changed_after_verification_is_detected_and_not_run(tmp_path: Path) -> None:
    data = program(tmp_path / "RAN")
    target = seed(tmp_path / "cache", data)
    got = Installer(spec_for(data), cache=tmp_path / "cache").resolve()
    # Same size, one byte different: what a swap between verify and exec would look like.
    target.chmod(0o700)
    target.write_bytes(data.replace(b"RAN", b"RUN"))
    target.chmod(0o500)
    with pytest.raises(BinaryError) as exc:
        got.check()
    assert f"{target} changed after it was verified; not run" in one_line(exc)
    assert not (tmp_path / "RAN").exists() and not (tmp_path / "RUN").exists()


def test_new_cache_is_created_private(tmp_path: Path) -> None:
    cache = tmp_path / "new" / "cache"
    with pytest.raises(BinaryError, match="cannot download"):
        Installer(spec_for(b"x"), cache=cache).resolve()
    for d in (cache, cache / "bin", cache / "bin" / f"cloudflared-{VERSION}-{platform_key()}"):
        st = os.lstat(d)
        assert (st.st_mode & 0o777, st.st_uid) == (0o700, os.geteuid()), d
    assert [p.name for p in (cache / "bin").rglob("*")] == [
        f"cloudflared-{VERSION}-{platform_key()}",
        ".lock",
    ]
