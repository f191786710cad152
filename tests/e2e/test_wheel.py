"""handy-colab is installable without a release: `python -m build` makes an sdist and a wheel
that `twine check` accepts, the wheel holds every file the package runs or opens, and a
fresh venv that installs it (its dependencies from the index) runs `handy-colab demo`."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from handy_colab import __version__
from tests.e2e.conftest import need
from tests.rig import REPO
from tests.wheelkit import build_dists, checkout_snapshot, clean_env, fresh_venv, run

pytestmark = pytest.mark.e2e

PKG = REPO / "src" / "handy_colab"


def need_build_tools() -> None:
    missing = [m for m in ("build", "twine") if importlib.util.find_spec(m) is None]
    need(missing, "the packaging tools (scripts/setup.sh test installs them)")


def _files_opened_by_path() -> set[str]:
    """Package files the code reaches through ``__file__`` (run as scripts, or read): the
    module itself names them, e.g. ``relayhop.__file__``; data would sit beside it."""
    found = set()
    for path in PKG.rglob("*.py"):
        for m in re.finditer(r"(\w+)\.__file__", path.read_text()):
            mod = m.group(1)
            found |= {
                f"handy_colab/{p.relative_to(PKG).as_posix()}" for p in PKG.rglob(f"{mod}.py")
            }
    return found


def test_build_twine_check_and_demo_from_a_fresh_venv(tmp_path: Path) -> None:
    need_build_tools()
    t0 = time.monotonic()
    before = checkout_snapshot()
    sdist, wheel = build_dists(tmp_path)
    assert checkout_snapshot() == before  # nothing left in the checkout
    assert wheel.name == f"handy_colab-{__version__}-py3-none-any.whl"
    res = run([sys.executable, "-m", "twine", "check", "--strict", str(sdist), str(wheel)])
    assert res.returncode == 0, res.stdout + res.stderr

    names = set(zipfile.ZipFile(wheel).namelist())
    # Every file of the package (modules and any data beside them), none of its bytecode.
    want = {
        f"handy_colab/{p.relative_to(PKG).as_posix()}"
        for p in PKG.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert want - names == set()
    opened = _files_opened_by_path()
    assert "handy_colab/client/relayhop.py" in opened  # the check finds what it looks for
    for script in ("server/asyncssh_server.py", "tunnels/asyncssh_client.py"):
        opened.add(f"handy_colab/{script}")
    assert opened - names == set()
    assert f"handy_colab-{__version__}.dist-info/entry_points.txt" in names

    venv = tmp_path / "venv"
    bin_dir = fresh_venv(venv, str(wheel))  # the dependencies from the index
    env = clean_env(bin_dir)
    probe = "import handy_colab; print(handy_colab.__version__, handy_colab.__file__)"
    res = run([str(bin_dir / "python"), "-c", probe], env=env, cwd=tmp_path)
    version, where = res.stdout.split()
    assert version == __version__ and Path(where).is_relative_to(venv), res.stdout
    exe = str(bin_dir / "handy-colab")  # the console script pip made from entry_points.txt
    res = run([exe, "--version"], env=env, cwd=tmp_path)
    assert res.stdout.strip() == f"handy-colab {__version__}", res.stdout + res.stderr
    res = subprocess.run(
        [exe, "demo"], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path
    )
    assert res.returncode == 0, res.stderr + res.stdout
    assert "through the relay" in res.stdout and "temporary files removed" in res.stdout

    # init's own wheel, built by the installed copy, holds the same package files.
    code = (
        "import io, zipfile; from handy_colab import selfwheel; "
        "print('\\n'.join(zipfile.ZipFile(io.BytesIO(selfwheel.build().data)).namelist()))"
    )
    res = run([str(bin_dir / "python"), "-c", code], env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    pkg_files = {n for n in names if n.startswith("handy_colab/")}
    assert {n for n in res.stdout.split() if n.startswith("handy_colab/")} == pkg_files
    print(f"test_wheel: {time.monotonic() - t0:.1f}s")
