"""The wheel init puts into the config folder: built from the running handy-colab itself,
a valid wheel (RECORD hashes, metadata, console script) that real pip installs and whose
copy imports and reports this very version; and the warnings when the two sides' versions
differ (the descriptor's `version` on the laptop, the folder's wheel on the runtime)."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import logging
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

import handy_colab
from handy_colab import __version__, runtime, selfwheel
from handy_colab.cli import main
from handy_colab.client.connect import connect, version_mismatch
from handy_colab.descriptor import Descriptor
from handy_colab.errors import ConfigError

MakeDesc = Callable[..., Descriptor]
WHEEL = f"handy_colab-{__version__}-py3-none-any.whl"


@pytest.fixture(scope="module")
def wheel() -> selfwheel.SelfWheel:
    return selfwheel.build()


def test_version_is_the_distributions() -> None:
    import importlib.metadata as md

    assert handy_colab.__version__ == md.version("handy-colab")


def test_wheel_is_a_valid_zip_whose_record_matches(wheel: selfwheel.SelfWheel) -> None:
    assert wheel.name == WHEEL and wheel.version == __version__
    zf = zipfile.ZipFile(io.BytesIO(wheel.data))
    assert zf.testzip() is None
    info = f"handy_colab-{__version__}.dist-info"
    names = zf.namelist()
    assert names[-1] == f"{info}/RECORD"
    rows = list(csv.reader(io.StringIO(zf.read(f"{info}/RECORD").decode())))
    assert sorted(r[0] for r in rows) == sorted(names)  # every file listed, exactly once
    for name, digest, size in rows:
        if name == f"{info}/RECORD":
            assert (digest, size) == ("", "")
            continue
        data = zf.read(name)
        want = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode().rstrip("=")
        assert digest == f"sha256={want}" and int(size) == len(data), name
    wheel_file = zf.read(f"{info}/WHEEL").decode()
    assert "Wheel-Version: 1.0\n" in wheel_file and "Root-Is-Purelib: true\n" in wheel_file
    assert "Tag: py3-none-any\n" in wheel_file
    meta = zf.read(f"{info}/METADATA").decode()
    assert f"Name: handy-colab\nVersion: {__version__}\n" in meta
    for dep in ("asyncssh>=2.14", "cryptography>=41", "websockets>=15", "tqdm>=4.66"):
        assert f"Requires-Dist: {dep}\n" in meta
    assert "Requires-Python: >=3.10\n" in meta
    eps = zf.read(f"{info}/entry_points.txt").decode()
    assert "[console_scripts]\nhandy-colab = handy_colab.cli:entry\n" in eps
    # Every module of the package, none of its bytecode; the files run as scripts too.
    root = Path(handy_colab.__file__).parent
    want_py = {f"handy_colab/{p.relative_to(root).as_posix()}" for p in root.rglob("*.py")}
    assert want_py <= set(names)
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    for script in (
        "client/relayhop.py",
        "server/asyncssh_server.py",
        "tunnels/asyncssh_client.py",
    ):
        assert f"handy_colab/{script}" in names
    # Deterministic: the same package gives the same bytes (a re-run init changes nothing).
    assert selfwheel.build().data == wheel.data
    assert {zi.date_time for zi in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_pip_installs_it_and_the_copy_is_this_version(
    wheel: selfwheel.SelfWheel, tmp_path: Path
) -> None:
    path = tmp_path / wheel.name
    path.write_bytes(wheel.data)
    target = tmp_path / "target"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index"]
    res = subprocess.run(
        [*pip, "--disable-pip-version-check", "--target", str(target), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert (target / "bin" / "handy-colab").is_file()  # the console script pip made
    # -S: not this venv's site-packages (its editable install would answer instead).
    probe = (
        "import handy_colab, handy_colab.cli; "
        "print(handy_colab.__version__); print(handy_colab.__file__)"
    )
    res = subprocess.run(
        [sys.executable, "-S", "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(target)},
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    version, where = res.stdout.split()
    assert version == __version__
    assert Path(where).is_relative_to(target)
    # The copy carries the user guide, so `handy-colab help` works on the notebook too
    # (built from an editable checkout, whose pages live outside the package).
    docs = Path(handy_colab.__file__).resolve().parents[2] / "docs"
    for page in sorted(docs.glob("*.md")):
        assert (target / "handy_colab" / "docs" / page.name).read_bytes() == page.read_bytes()
    res = subprocess.run(
        [sys.executable, "-S", "-m", "handy_colab.cli", "help", "config"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(target)},
    )
    assert res.returncode == 0 and res.stdout == (docs / "config.md").read_text(), res.stderr


def test_write_replaces_an_older_wheel_and_says_so(
    wheel: selfwheel.SelfWheel, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = tmp_path / "handy_colab-0.0.9-py3-none-any.whl"
    old.write_bytes(b"old")
    other = tmp_path / "another_pkg-1.0-py3-none-any.whl"  # not ours: left alone
    other.write_bytes(b"x")
    with caplog.at_level(logging.INFO, logger="handy_colab.selfwheel"):
        assert selfwheel.write(tmp_path, wheel) is True
        path = tmp_path / WHEEL
        assert path.read_bytes() == wheel.data and old.exists()  # removal is a second step
        removed = selfwheel.remove_others(tmp_path, keep=path)
    assert removed == [old] and not old.exists() and other.exists()
    assert any("removed" in r.message and old.name in r.message for r in caplog.records)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([WHEEL, other.name])
    # The same bytes again: nothing written (init then lists nothing as written).
    before = path.stat().st_mtime_ns, path.stat().st_ino
    assert selfwheel.write(tmp_path, wheel) is False
    assert (path.stat().st_mtime_ns, path.stat().st_ino) == before
    path.write_bytes(b"an edited checkout's wheel of the same name")
    assert selfwheel.write(tmp_path, wheel) is True and path.read_bytes() == wheel.data


def test_init_writes_the_wheel_and_the_cell_installs_it(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], wheel: selfwheel.SelfWheel
) -> None:
    folder = tmp_path / "colab_data"
    assert main(["init", str(folder), "--yes"]) == 0
    out = capsys.readouterr().out
    assert (folder / WHEEL).read_bytes() == wheel.data
    drive = "/content/drive/MyDrive/colab_data"
    lines = [ln.strip() for ln in out.splitlines()]
    pip_at = lines.index(f"%pip install -q {drive}/{WHEEL}")
    assert lines[pip_at - 1] == "from google.colab import drive; drive.mount('/content/drive')"
    assert lines[pip_at + 1] == f"import handy_colab; handy_colab.up('{drive}')"
    assert f"pip install {drive}/{WHEEL} && handy-colab up {drive}" in out
    assert "come from PyPI" in out and "without internet" in out
    # A re-run with --force (a laptop upgraded since) drops the older wheel and says so.
    (folder / WHEEL).rename(folder / "handy_colab-0.0.1-py3-none-any.whl")
    assert main(["init", str(folder), "--yes", "--force"]) == 0
    out = capsys.readouterr().out
    assert "Removed the older wheel(s) handy_colab-0.0.1-py3-none-any.whl" in out
    assert sorted(p.name for p in folder.glob("*.whl")) == [WHEEL]


# ----------------------------------------------------------------- versions told both ways


def test_descriptor_carries_a_strict_version(make_descriptor: MakeDesc) -> None:
    desc = make_descriptor(version="1.2.3rc1")
    back = Descriptor.from_dict(json.loads(desc.to_json()), "t")
    assert back.version == "1.2.3rc1"
    assert Descriptor.from_paste(desc.to_paste()).version == "1.2.3rc1"
    old = json.loads(desc.to_json())
    del old["version"]  # an older runtime's descriptor
    assert Descriptor.from_dict(old, "t").version == ""
    for bad in ("1", "v1.2", "1.2\nHost x", "1.2 3", 1.2, "1." + "9" * 30 + "x" * 30):
        with pytest.raises(ConfigError, match="field 'version'"):
            Descriptor.from_dict({**old, "version": bad}, "t")


def test_connect_warns_when_major_minor_differ(
    tmp_path: Path, make_descriptor: MakeDesc, caplog: pytest.LogCaptureFixture
) -> None:
    major, minor = (int(x) for x in __version__.split(".")[:2])
    assert version_mismatch(make_descriptor(version=f"{major}.{minor}.99")) is None
    assert version_mismatch(make_descriptor(version="")) is None  # too old to say
    src = tmp_path / "d.json"
    src.write_text(make_descriptor(version=f"{major}.{minor + 1}.0").to_json())
    with caplog.at_level(logging.WARNING, logger="handy_colab.client.connect"):
        connect(src, ssh_config=tmp_path / "cfg", known_hosts=tmp_path / "kh", vscode=False)
    warned = [r.getMessage() for r in caplog.records if "runs handy-colab" in r.getMessage()]
    assert len(warned) == 1 and "\n" not in warned[0], warned
    assert f"{major}.{minor + 1}.0" in warned[0] and __version__ in warned[0]
    assert "handy-colab init" in warned[0] and "upgrade" in warned[0]
    caplog.clear()
    src.write_text(make_descriptor(version=__version__).to_json())
    with caplog.at_level(logging.WARNING, logger="handy_colab.client.connect"):
        connect(src, ssh_config=tmp_path / "cfg", known_hosts=tmp_path / "kh", vscode=False)
    assert not [r for r in caplog.records if "runs handy-colab" in r.getMessage()]


def test_up_warns_when_the_folder_holds_another_version(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert selfwheel.folder_mismatch(tmp_path) is None  # no wheel: nothing to compare
    (tmp_path / WHEEL).write_bytes(b"")
    assert selfwheel.folder_mismatch(tmp_path) is None
    (tmp_path / WHEEL).unlink()
    (tmp_path / "handy_colab-7.1.0-py3-none-any.whl").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="handy_colab.runtime"):
        runtime._warn_folder_version(tmp_path)
    [msg] = [r.getMessage() for r in caplog.records]
    assert "handy_colab-7.1.0-py3-none-any.whl" in msg and __version__ in msg
    assert "%pip install" in msg and "restart the kernel" in msg and "\n" not in msg
