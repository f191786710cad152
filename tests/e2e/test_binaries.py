"""The pinned-binary mechanism against a real HTTP server in the release's layout
(BASE/VERSION/ASSET): success with the real cloudflared, a tampered file refused (never
executed, never cached), an unreachable server; each failure one line through `up`."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from handy_colab.binaries import Asset, BinarySpec, Installer, platform_key
from handy_colab.errors import BinaryError
from handy_colab.tunnels.cloudflared import CLOUDFLARED
from tests import webserver
from tests.cfrig import CLOUDFLARED_BIN
from tests.e2e.cfhelpers import need_peers, one_line_error

REPO = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def serve(root: Path) -> Iterator[str]:
    with webserver.serve(root) as base:
        yield f"{base}/releases/download"


def release_dir(root: Path, asset: str, data: bytes) -> Path:
    d = root / "releases" / "download" / CLOUDFLARED.version
    d.mkdir(parents=True)
    (d / asset).write_bytes(data)
    return d / asset


def spec_for(data: bytes) -> BinarySpec:
    """The shipped spec with this build's digest (the official asset cannot be fetched here)."""
    plat = platform_key()
    asset = CLOUDFLARED.assets[plat]
    return BinarySpec(
        name="cloudflared",
        version=CLOUDFLARED.version,
        base_url="https://unused.invalid",
        assets={plat: Asset(asset.filename, hashlib.sha256(data).hexdigest())},
        url_env="HANDY_COLAB_TEST_UNUSED",
        config_hint="cloudflared",
    )


def test_download_verify_cache_then_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    need_peers()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # nothing on PATH to prefer
    data = CLOUDFLARED_BIN.read_bytes()
    spec = spec_for(data)
    asset = spec.assets[platform_key()]
    release_dir(tmp_path / "www", asset.filename, data)
    cache = tmp_path / "cache"
    seen: list[tuple[int, int | None]] = []
    with serve(tmp_path / "www") as base:
        got = Installer(spec, base_url=base, cache=cache).resolve(lambda d, t: seen.append((d, t)))
    assert got.source == "download"
    assert got.path.is_relative_to(cache) and os.access(got.path, os.X_OK)
    assert seen[-1] == (len(data), len(data))
    out = subprocess.run([str(got.path), "--version"], capture_output=True, text=True, check=True)
    assert CLOUDFLARED.version in out.stdout
    # What each start costs: the running file hashed again (about 20 ms here).
    t0 = time.perf_counter()
    got.check()
    assert time.perf_counter() - t0 < 1.0
    st = got.path.stat()
    assert (st.st_mode & 0o777, st.st_uid) == (0o500, os.geteuid())
    assert (got.path.parent.stat().st_mode & 0o777) == 0o700
    # Second time: from the cache, verified again, no server needed.
    again = Installer(spec, base_url="http://127.0.0.1:9/x", cache=cache).resolve()
    assert (again.source, again.path) == ("cache", got.path)
    # A cached copy altered afterwards is never run: it is fetched again (here: cannot be).
    got.path.write_bytes(b"#!/bin/sh\necho altered\n")
    with pytest.raises(BinaryError, match="cannot download"):
        Installer(spec, base_url="http://127.0.0.1:9/x", cache=cache).resolve()
    assert not got.path.exists()


def _folder(tmp: Path, **cloudflared: object) -> Path:
    folder = tmp / "cfg"
    folder.mkdir()
    key = tmp / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    shutil.copy(f"{key}.pub", folder / "laptop.pub")
    (folder / "user_config.json").write_text(json.dumps({"cloudflared": cloudflared}))
    return folder


def _up(tmp: Path, folder: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.update(
        HANDY_COLAB_STATE_DIR=str(tmp / "state"),
        HANDY_COLAB_CACHE_DIR=str(tmp / "cache"),
        # No cloudflared on PATH: only the download can provide it.
        PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin",
    )
    exe = str(Path(sys.executable).parent / "handy-colab")
    return subprocess.run(
        [exe, "up", str(folder), "--timeout", "20"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_tampered_download_is_refused_unexecuted_uncached(tmp_path: Path) -> None:
    marker = tmp_path / "EXECUTED"
    fake = f"#!/bin/sh\ntouch {marker}\necho cloudflared version {CLOUDFLARED.version}\n"
    asset = CLOUDFLARED.assets[platform_key()]
    release_dir(tmp_path / "www", asset.filename, fake.encode())
    with serve(tmp_path / "www") as base:
        line = one_line_error(_up(tmp_path, _folder(tmp_path, download_url=base)))
    assert "sha256" in line and "does not match the digest pinned" in line
    assert asset.sha256 in line and "not executed, not cached" in line
    assert not marker.exists()
    cached = [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.name != ".lock"]
    assert cached == []
    assert "PRIVATE" not in line


def test_unreachable_mirror_isone_line_error(tmp_path: Path) -> None:
    line = one_line_error(_up(tmp_path, _folder(tmp_path, download_url="http://127.0.0.1:9/dl")))
    assert "cannot download cloudflared" in line and "http://127.0.0.1:9/dl/" in line
    assert "refused" in line.lower()


def test_path_copy_is_used_only_when_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A cloudflared on PATH, even the pinned version, is never picked up unasked: only
    `binary: "PATH"` (or the name, or the environment variable) runs it, and says so."""
    need_peers()
    on_path = tmp_path / "bin" / "cloudflared"
    on_path.parent.mkdir()
    shutil.copy(CLOUDFLARED_BIN, on_path)
    spec = spec_for(b"x")
    monkeypatch.setenv("PATH", f"{on_path.parent}:/usr/bin:/bin")
    monkeypatch.delenv("HANDY_COLAB_CLOUDFLARED_BINARY", raising=False)
    with pytest.raises(BinaryError, match="cannot download"):
        Installer(spec, base_url="http://127.0.0.1:9/x", cache=tmp_path / "c").resolve()
    for named in ("PATH", "cloudflared"):
        with caplog.at_level(logging.INFO, logger="handy_colab.binaries"):
            got = Installer(spec, explicit=named, cache=tmp_path / "c").resolve()
        assert (got.source, got.path, got.version) == ("PATH", on_path, CLOUDFLARED.version)
        assert f"from PATH ({on_path})" in caplog.text and "not checked" in caplog.text
        caplog.clear()
    # The shipped spec reads the same choice from its environment variable.
    monkeypatch.setenv("HANDY_COLAB_CLOUDFLARED_BINARY", "PATH")
    got = Installer(CLOUDFLARED, cache=tmp_path / "c").resolve()
    assert (got.source, got.path) == ("PATH", on_path)
    # Named but absent: one line, with the fix.
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(BinaryError) as exc:
        Installer(CLOUDFLARED, cache=tmp_path / "c").resolve()
    assert "no cloudflared is on PATH" in str(exc.value) and "Fix:" in str(exc.value)


def test_unsupported_platform_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BinaryError) as exc:
        Installer(CLOUDFLARED, system="Darwin", machine="arm64").resolve()
    msg = str(exc.value)
    assert "darwin-arm64" in msg and "linux-amd64" in msg and "Fix:" in msg and "\n" not in msg


def test_tampered_frpc_archive_is_refused_unexecuted_uncached(tmp_path: Path) -> None:
    """The frp route's binary comes through the same mechanism: a release archive that does
    not match the pinned digest is refused before anything is taken out of it."""
    import io
    import tarfile

    from handy_colab.tunnels.frp import FRPC

    marker = tmp_path / "EXECUTED"
    asset = FRPC.assets[platform_key()]
    assert asset.member is not None
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        data = f"#!/bin/sh\ntouch {marker}\necho 0.71.0\n".encode()
        info = tarfile.TarInfo(asset.member)
        info.size, info.mode = len(data), 0o755
        tf.addfile(info, io.BytesIO(data))
    d = tmp_path / "www" / "releases" / "download" / f"v{FRPC.version}"
    d.mkdir(parents=True)
    (d / asset.filename).write_bytes(buf.getvalue())
    folder = tmp_path / "cfg"
    folder.mkdir()
    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    shutil.copy(f"{key}.pub", folder / "laptop.pub")
    with serve(tmp_path / "www") as base:
        (folder / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
        frp = {
            "server": "127.0.0.1",
            "remote_port": 6022,
            "ca_file": "ca.pem",
            "download_url": base,
        }
        (folder / "user_config.json").write_text(json.dumps({"frp": frp}))
        line = one_line_error(_up(tmp_path, folder))
    assert "does not match the digest pinned" in line and asset.sha256 in line
    assert f"/v{FRPC.version}/{asset.filename}" in line
    assert not marker.exists()
    cached = [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.name != ".lock"]
    assert cached == []


def test_route_refuses_to_start_a_program_changed_after_verification(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tunnel verified the real cloudflared when it was made; the file is then replaced
    (same path, other bytes) before a (re)start: the route stops with one permanent error and
    the replacement never runs."""
    from handy_colab.config import load_config
    from handy_colab.errors import TunnelError
    from handy_colab.state import RuntimeDir
    from handy_colab.tunnels import cloudflared

    need_peers()
    data = CLOUDFLARED_BIN.read_bytes()
    spec = spec_for(data)
    release_dir(tmp_path / "www", spec.assets[platform_key()].filename, data)
    monkeypatch.setenv("HANDY_COLAB_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("HANDY_COLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("HANDY_COLAB_CLOUDFLARED_BINARY", raising=False)
    monkeypatch.setattr(cloudflared, "CLOUDFLARED", spec)
    with serve(tmp_path / "www") as base:
        cfg = load_config(_folder(tmp_path, download_url=base))
        rd = RuntimeDir.for_name(cfg.name).ensure()
        tunnel = cloudflared.CloudflaredTunnel(cfg, rd, 2222)
    assert tunnel.binary.source == "download"
    marker = tmp_path / "EXECUTED"
    path = tunnel.binary.path
    path.chmod(0o700)
    path.write_text(f"#!/bin/sh\ntouch {marker}\n")
    with pytest.raises(TunnelError) as exc:
        tunnel._launch()
    assert exc.value.permanent
    assert f"{path} changed after it was verified; not run" in str(exc.value)
    assert tunnel.proc is None and not marker.exists()
