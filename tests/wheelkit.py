"""Build handy-colab's sdist and wheel the way a release would, and install them into fresh
virtual environments that share nothing with the dev venv (test_wheel, test_newcomer)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.rig import REPO

# The runtime dependencies as pyproject.toml names them (a wheelhouse of them keeps the
# fresh venvs off the index where a test wants that).
DEPENDENCIES = ("cryptography>=41", "asyncssh>=2.14", "websockets>=15", "tqdm>=4.66")
# Never copied: what a build or the dev setup leaves in a checkout, and what is not source.
_NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "__pycache__",
    "*.egg-info",
    "build",
    "dist",
    "node_modules",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    "results",
)


def run(argv: list[str], timeout: float = 300, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)


def checkout_snapshot() -> set[str]:
    """What a build could leave in the checkout: its top level and src/ entries."""
    return {p.name for p in REPO.iterdir()} | {f"src/{p.name}" for p in (REPO / "src").iterdir()}


def build_dists(tmp: Path) -> tuple[Path, Path]:
    """(sdist, wheel) built by `python -m build` from a copy of the checkout: setuptools
    writes build/ and an egg-info into the tree it builds, never into the checkout."""
    tree = tmp / "src-copy"
    shutil.copytree(REPO, tree, ignore=_NOT_SOURCE)
    out = tmp / "dist"
    res = run(
        [sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(out), str(tree)]
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    [sdist] = out.glob("handy_colab-*.tar.gz")
    [wheel] = out.glob("handy_colab-*.whl")
    shutil.rmtree(tree)
    return sdist, wheel


def wheelhouse(tmp: Path) -> Path:
    """The dependencies as wheels, fetched once: fresh venvs then install offline."""
    wh = tmp / "wheelhouse"
    res = run([sys.executable, "-m", "pip", "download", "-q", "-d", str(wh), *DEPENDENCIES])
    assert res.returncode == 0, res.stderr[-3000:]
    return wh


def fresh_venv(path: Path, *install: str) -> Path:
    """A new venv at ``path`` with ``pip install INSTALL...`` run in it; its bin/."""
    res = run([sys.executable, "-m", "venv", str(path)], timeout=120)
    assert res.returncode == 0, res.stderr
    bin_dir = path / "bin"
    res = run(
        [str(bin_dir / "python"), "-m", "pip", "install", "-q", *install], env=clean_env(bin_dir)
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return bin_dir


def clean_env(
    bin_dir: Path, base: dict[str, str] | None = None, *extra_path: Path
) -> dict[str, str]:
    """``base`` (default: this environment) with only ``bin_dir``, ``extra_path`` and the
    system's /usr/bin:/bin on PATH, and nothing that would point Python at the dev venv."""
    env = dict(os.environ if base is None else base)
    for key in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP"):
        env.pop(key, None)
    env["PATH"] = os.pathsep.join([str(bin_dir), *map(str, extra_path), "/usr/bin", "/bin"])
    return env
