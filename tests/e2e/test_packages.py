"""The config's python_packages/os_packages: real pip into a real venv, real apt-get.

Python packages come from wheels made here by hand and a local find-links directory (no
index, no network). OS packages need root and apt-get; under CI=true their absence is a
failure, never a skip.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from handy_colab.packages import PackageResult, install_packages

pytestmark = pytest.mark.e2e

SRC = Path(__file__).resolve().parents[2] / "src" / "handy_colab"


# -- hand-made wheels ----------------------------------------------------------------------


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def make_wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> Path:
    """A correct pure-Python wheel: a package, METADATA, WHEEL and RECORD."""
    mod = name.replace("-", "_")
    info = f"{mod}-{version}.dist-info"
    meta = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    meta += [f"Provides-Extra: {e}" for e in ("fast",) if any("extra ==" in r for r in requires)]
    meta += [f"Requires-Dist: {r}" for r in requires]
    files = {
        f"{mod}/__init__.py": f"__version__ = {version!r}\n".encode(),
        f"{info}/METADATA": ("\n".join(meta) + "\n").encode(),
        f"{info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: handy-colab-tests\n"
            b"Root-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = [f"{path},{_record_hash(data)},{len(data)}" for path, data in files.items()]
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    whl = folder / f"{mod}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return whl


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("wheels")
    make_wheel(folder, "hcdemo-dep", "1.0")
    make_wheel(folder, "hcdemo-dep", "1.1")  # newer, to tempt an upgrade of the dependency
    make_wheel(folder, "hcdemo-app", "1.0", ("hcdemo-dep>=1.0", 'hcdemo-solo; extra == "fast"'))
    make_wheel(folder, "hcdemo-solo", "1.0")
    make_wheel(folder, "hcdemo-late", "1.0")
    make_wheel(folder, "hcdemo-pre", "2.0rc1")
    return folder


@pytest.fixture(scope="module")
def base_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One venv with pip (made once: ensurepip is the slow part); tests use copies."""
    root = tmp_path_factory.mktemp("base") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, capture_output=True)
    return root


@pytest.fixture
def venv(base_venv: Path, wheels: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh venv's python, with pip pointed at the hand-made wheels only."""
    root = tmp_path / "venv"
    shutil.copytree(base_venv, root, symlinks=True)
    for var in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_REQUIRE_VIRTUALENV"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    # This machine's pip.conf adds more find-links; /dev/null makes pip read no config.
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    py = root / "bin" / "python"
    assert sys.prefix != str(root)
    return py


def vrun(py: Path, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(py), "-c", code], capture_output=True, text=True)


def pip(py: Path, *args: str) -> None:
    subprocess.run([str(py), "-m", "pip", "-q", *args], check=True, capture_output=True)


def dist_info(py: Path, name: str) -> Path:
    """The dist-info directory of ``name`` in the venv (exactly one must exist)."""
    (site,) = py.parent.parent.glob("lib/python3*/site-packages")
    (found,) = site.glob(f"{name.replace('-', '_')}-*.dist-info")
    return found


def fingerprint(path: Path) -> tuple[str, int, int, int]:
    """Which files, and their inode and mtime: a reinstall changes at least one."""
    meta = (path / "METADATA").stat()
    return path.name, path.stat().st_ino, meta.st_ino, meta.st_mtime_ns


def statuses(results: list[PackageResult]) -> list[tuple[str, str, str]]:
    return [(r.spec, r.status, r.detail) for r in results]


# -- python packages -----------------------------------------------------------------------


def test_missing_installed_failure_named_and_the_rest_still_installed(venv: Path) -> None:
    # A fresh venv has pip but no `packaging`: the check must use pip's vendored copy.
    assert vrun(venv, "import packaging").returncode != 0
    lines: list[str] = []
    specs = ["hcdemo-solo", "hc-no-such-dist", "hcdemo-late>=1"]
    got = install_packages(specs, [], python=str(venv), progress=lines.append, timeout=120)

    assert [(r.kind, r.spec, r.status) for r in got] == [
        ("python", "hcdemo-solo", "installed"),
        ("python", "hc-no-such-dist", "failed"),
        ("python", "hcdemo-late>=1", "installed"),
    ]
    assert got[0].detail == "1.0" and got[2].detail == "1.0"
    failed = got[1].detail
    assert failed.startswith("ERROR: No matching distribution found for hc-no-such-dist"), failed
    assert "Fix:" in failed and "'python_packages'" in failed and "\n" not in failed
    assert lines[0] == "checking 3 python packages"
    assert "python package hcdemo-solo: installing..." in lines
    assert "python package hcdemo-solo: installed (1.0)" in lines
    assert any(
        ln.startswith("python package hc-no-such-dist: FAILED: ERROR: No matching") for ln in lines
    ), lines
    imported = vrun(venv, "import hcdemo_solo, hcdemo_late; print(hcdemo_late.__version__)")
    assert imported.stdout.strip() == "1.0", imported.stderr

    # A second run finds them all and touches nothing.
    before = [fingerprint(dist_info(venv, n)) for n in ("hcdemo-solo", "hcdemo-late")]
    lines.clear()
    again = install_packages(
        ["hcdemo-solo", "hcdemo-late>=1"], [], python=str(venv), progress=lines.append
    )
    assert statuses(again) == [
        ("hcdemo-solo", "present", "1.0"),
        ("hcdemo-late>=1", "present", "1.0"),
    ]
    assert not any("installing" in ln for ln in lines), lines
    assert [fingerprint(dist_info(venv, n)) for n in ("hcdemo-solo", "hcdemo-late")] == before


def test_present_ones_are_left_alone_and_too_old_ones_go_to_pip(venv: Path) -> None:
    pip(venv, "install", "hcdemo-solo==1.0", "hcdemo-pre==2.0rc1")
    before = fingerprint(dist_info(venv, "hcdemo-solo")), fingerprint(dist_info(venv, "hcdemo-pre"))
    specs = [
        "hcdemo-solo",
        "HCDemo_Solo>=1.0",
        "hcdemo-pre>=1.0",  # an installed prerelease satisfies a plain specifier
        'hcdemo-late; python_version < "3"',  # the marker rules it out: nothing to install
        "hcdemo-solo>=2",  # installed but too old, and no 2.x to be had
    ]
    got = install_packages(specs, [], python=str(venv), timeout=120)
    assert [(r.spec, r.status) for r in got] == [
        ("hcdemo-solo", "present"),
        ("HCDemo_Solo>=1.0", "present"),
        ("hcdemo-pre>=1.0", "present"),
        ('hcdemo-late; python_version < "3"', "present"),
        ("hcdemo-solo>=2", "failed"),
    ]
    assert got[0].detail == "1.0" and got[2].detail == "2.0rc1"
    assert "No matching distribution found for hcdemo-solo>=2" in got[4].detail
    assert (
        fingerprint(dist_info(venv, "hcdemo-solo")),
        fingerprint(dist_info(venv, "hcdemo-pre")),
    ) == before
    assert vrun(venv, "import hcdemo_late").returncode != 0


def test_a_dependency_already_present_is_never_reinstalled(venv: Path) -> None:
    """The notebook's own packages stay as they are, though a newer version is on offer."""
    pip(venv, "install", "hcdemo-dep==1.0")
    dep_before = fingerprint(dist_info(venv, "hcdemo-dep"))
    got = install_packages(["hcdemo-app"], [], python=str(venv), timeout=120)
    assert statuses(got) == [("hcdemo-app", "installed", "1.0")]
    assert fingerprint(dist_info(venv, "hcdemo-dep")) == dep_before
    assert vrun(venv, "import hcdemo_dep; print(hcdemo_dep.__version__)").stdout.strip() == "1.0"

    # An extra whose dependency is missing: pip adds that dependency and nothing else.
    app_before = fingerprint(dist_info(venv, "hcdemo-app"))
    got = install_packages(["hcdemo-app[fast]"], [], python=str(venv), timeout=120)
    assert statuses(got) == [("hcdemo-app[fast]", "installed", "1.0")]
    assert vrun(venv, "import hcdemo_solo").returncode == 0
    assert fingerprint(dist_info(venv, "hcdemo-app")) == app_before
    assert fingerprint(dist_info(venv, "hcdemo-dep")) == dep_before


def test_an_entry_an_earlier_install_brought_in_is_reported_present(venv: Path) -> None:
    lines: list[str] = []
    got = install_packages(
        ["hcdemo-app", "hcdemo-dep"], [], python=str(venv), progress=lines.append, timeout=120
    )
    assert statuses(got) == [
        ("hcdemo-app", "installed", "1.0"),
        ("hcdemo-dep", "present", "1.1"),
    ]
    assert "python package hcdemo-dep: installing..." not in lines


def test_direct_references_go_to_pip_and_credentials_stay_out_of_sight(
    venv: Path, wheels: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PIP_RETRIES", "0")
    secret = "s3cr3t-t0ken"
    specs = [
        f"hcdemo-solo @ {(wheels / 'hcdemo_solo-1.0-py3-none-any.whl').as_uri()}",
        str(wheels / "hcdemo_late-1.0-py3-none-any.whl"),
        f"hcdemo-pre @ https://{secret}@example.invalid/hcdemo_pre-2.0-py3-none-any.whl",
    ]
    lines: list[str] = []
    with caplog.at_level("DEBUG"):
        got = install_packages(specs, [], python=str(venv), progress=lines.append, timeout=120)
    assert [(r.spec, r.status) for r in got] == [
        (specs[0], "installed"),
        (specs[1], "installed"),
        (specs[2], "failed"),
    ]
    assert got[0].detail == "1.0"
    assert got[1].detail == "hcdemo-late-1.0"  # no name in a path: pip's own words
    assert "example.invalid" in got[2].detail and "'python_packages'" in got[2].detail
    assert secret not in got[2].detail
    assert not any(secret in ln for ln in lines), lines
    assert secret not in caplog.text
    assert any("hcdemo-pre @ https://****@example.invalid" in ln for ln in lines), lines


# -- os packages ---------------------------------------------------------------------------


def need_root_apt() -> str:
    apt = shutil.which("apt-get")
    if os.geteuid() == 0 and apt is not None and shutil.which("dpkg-query") is not None:
        return apt
    if os.environ.get("CI") == "true":
        pytest.fail("CI=true but the os_packages tests need root, apt-get and dpkg-query")
    pytest.skip("needs root, apt-get and dpkg-query")


def dpkg_version(name: str) -> str | None:
    res = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Status}\t${Version}", name], capture_output=True, text=True
    )
    status, _, version = res.stdout.partition("\t")
    return version if res.returncode == 0 and status.endswith(" installed") else None


def test_os_present_and_a_bad_name_failed_by_name() -> None:
    need_root_apt()
    lines: list[str] = []
    got = install_packages(
        [],
        ["coreutils", "hc-no-such-package", "bash"],
        python=sys.executable,
        progress=lines.append,
    )
    assert [(r.kind, r.spec, r.status) for r in got] == [
        ("os", "coreutils", "present"),
        ("os", "hc-no-such-package", "failed"),
        ("os", "bash", "present"),
    ]
    assert got[0].detail == dpkg_version("coreutils") and got[2].detail == dpkg_version("bash")
    failed = got[1].detail
    assert "Unable to locate package hc-no-such-package" in failed, failed
    assert "'os_packages'" in failed and "\n" not in failed
    # The lists were refreshed once, lazily, because the name was not found.
    assert sum("apt-get update" in ln for ln in lines) == 1, lines
    assert lines[0] == "checking 3 os packages"
    assert "os package coreutils: already present" in lines[1]


SMALL_PACKAGE = "sl"  # a few KB, no dependencies beyond libc and libncurses


@pytest.fixture
def absent_small_package() -> Iterator[str]:
    apt = need_root_apt()
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    was_installed = dpkg_version(SMALL_PACKAGE) is not None
    if was_installed:
        subprocess.run([apt, "remove", "-y", "-q", SMALL_PACKAGE], check=True, env=env)
    assert dpkg_version(SMALL_PACKAGE) is None
    yield SMALL_PACKAGE
    subprocess.run([apt, "purge", "-y", "-q", SMALL_PACKAGE], capture_output=True, env=env)
    if was_installed:
        subprocess.run([apt, "install", "-y", "-q", SMALL_PACKAGE], capture_output=True, env=env)


def test_os_package_really_installed(absent_small_package: str) -> None:
    name = absent_small_package
    lines: list[str] = []
    got = install_packages([], [name], python=sys.executable, progress=lines.append)
    assert [(r.spec, r.status) for r in got] == [(name, "installed")], got
    version = dpkg_version(name)
    assert version is not None and got[0].detail == version
    assert f"os package {name}: installing..." in lines
    assert f"os package {name}: installed ({version})" in lines
    assert statuses(install_packages([], [name], python=sys.executable)) == [
        (name, "present", version)
    ]


def test_os_packages_as_a_normal_user_fail_with_a_fix() -> None:
    """As nobody: present ones are still found; missing ones need root, and say so."""
    need_root_apt()
    if shutil.which("runuser") is None or not Path("/usr/bin/python3").exists():
        pytest.skip("needs runuser and /usr/bin/python3")
    nobody = pwd.getpwnam("nobody")
    # /root (and the checkout under it) is private: nobody gets a readable copy.
    tmp = Path(tempfile.mkdtemp(prefix="hc-packages-", dir="/var/tmp"))
    try:
        tmp.chmod(0o755)
        shutil.copytree(SRC, tmp / "handy_colab", ignore=shutil.ignore_patterns("__pycache__"))
        for p in tmp.rglob("*"):
            p.chmod(0o755 if p.is_dir() else 0o644)
        script = (
            "import dataclasses, json, os\n"
            "from handy_colab.packages import install_packages\n"
            "assert os.geteuid() != 0\n"
            "r = install_packages([], ['coreutils', 'hc-no-such-package'],"
            " python='/usr/bin/python3')\n"
            "print(json.dumps([dataclasses.asdict(x) for x in r]))\n"
        )
        res = subprocess.run(
            [
                "runuser",
                "-u",
                nobody.pw_name,
                "--",
                "/usr/bin/env",
                "-i",
                "PATH=/usr/bin:/bin",
                f"PYTHONPATH={tmp}",
                "/usr/bin/python3",
                "-c",
                script,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd="/",
        )
        assert res.returncode == 0, res.stderr
        got = json.loads(res.stdout)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert [(r["spec"], r["status"]) for r in got] == [
        ("coreutils", "present"),
        ("hc-no-such-package", "failed"),
    ]
    assert got[0]["detail"] == dpkg_version("coreutils")
    detail = got[1]["detail"]
    assert "needs root and apt-get" in detail and "missing here: root" in detail, detail
    assert "Fix:" in detail and "'os_packages'" in detail
