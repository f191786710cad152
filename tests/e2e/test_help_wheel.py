"""The help pages reach a pip user: a wheel built from the source tree holds
handy_colab/docs/*.md, and `handy-colab help` run from that wheel alone prints them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _source_copy(dest: Path) -> Path:
    """The checkout's files as git sees them (tracked and new, not ignored), so the build
    writes its build/ and *.egg-info into the copy, never into the checkout."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        src = REPO / name.decode()
        if src.is_file():
            (dest / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name.decode())
    return dest


def _checkout_state() -> str:
    return subprocess.run(
        ["git", "status", "--porcelain", "--ignored"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_the_wheel_ships_the_help_pages(tmp_path: Path) -> None:
    before = _checkout_state()
    tree = _source_copy(tmp_path / "src-copy")
    out = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(tree)],
        check=True,
        timeout=300,
    )
    (wheel,) = out.glob("handy_colab-*.whl")
    pages = sorted(p.name for p in (REPO / "docs").glob("*.md"))
    with zipfile.ZipFile(wheel) as zf:
        shipped = sorted(
            n.removeprefix("handy_colab/docs/")
            for n in zf.namelist()
            if n.startswith("handy_colab/docs/")
        )
        assert shipped == pages
        for name in pages:
            assert zf.read(f"handy_colab/docs/{name}") == (REPO / "docs" / name).read_bytes()
        zf.extractall(tmp_path / "installed")

    # Run from the wheel's files alone (ahead of the editable checkout on sys.path): the
    # pages are found in the package, not in a docs/ beside it.
    probe = (
        "import sys, handy_colab, handy_colab.userdocs as u;"
        f"assert handy_colab.__file__.startswith({str(tmp_path)!r}), handy_colab.__file__;"
        "print(u.docs_dir(), file=sys.stderr);"
        "from handy_colab.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path / "installed")}
    res = subprocess.run(
        [sys.executable, "-c", probe, "help", "config"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert res.stderr.strip() == str(tmp_path / "installed" / "handy_colab" / "docs")
    assert res.stdout == (REPO / "docs" / "config.md").read_text()
    listing = subprocess.run(
        [sys.executable, "-c", probe, "help"], capture_output=True, text=True, env=env
    )
    assert listing.returncode == 0, listing.stderr
    for name in pages:
        assert f"  {name.removesuffix('.md')} " in listing.stdout, listing.stdout

    assert _checkout_state() == before  # nothing left in the checkout
