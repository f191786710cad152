"""The README's Layout section names every module of the package, and only what exists."""

from __future__ import annotations

import re
from pathlib import Path

import handy_colab

ROOT = Path(handy_colab.__file__).parent
README = ROOT.parent.parent / "README.md"


def _layout(text: str) -> str:
    section = text.split("\n## Layout", 1)[1]
    return section.split("```", 2)[1]


def _named(block: str) -> set[str]:
    """The names the block mentions: ``x.py``, ``dir/``, ``dir/x.py``."""
    return set(re.findall(r"[\w./]+\.py|\w+/", block))


def _last(name: str) -> str:
    """``a/b.py`` -> ``b.py``; ``a/`` -> ``a/``."""
    return name.rstrip("/").split("/")[-1] + ("/" if name.endswith("/") else "")


def _missing(block: str, root: Path) -> list[str]:
    named = _named(block)
    short = {_last(n) for n in named}
    out = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "__init__.py":
            continue
        rel = path.relative_to(root).as_posix()
        # Named by its path, or by its own name (modules are listed next to their folder).
        if rel not in named and path.name not in short:
            out.append(rel)
    return out


def _stale(block: str, root: Path) -> list[str]:
    there = {p.name for p in root.rglob("*.py")}
    there |= {p.name + "/" for p in root.rglob("*") if p.is_dir() and p.name != "__pycache__"}
    there |= {root.name + "/", "src/"}
    return sorted(n for n in _named(block) if _last(n) not in there)


def test_every_module_is_in_the_layout() -> None:
    assert _missing(_layout(README.read_text()), ROOT) == []


def test_the_layout_names_nothing_that_is_gone() -> None:
    assert _stale(_layout(README.read_text()), ROOT) == []


def test_the_checks_see_a_wrong_layout(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    for f in ("__init__.py", "a.py", "sub/__init__.py", "sub/b.py", "sub/c.py"):
        (pkg / f).write_text("")
    block = "pkg/\n  a.py  one\n  sub/  b.py, gone.py\n"
    assert _missing(block, pkg) == ["sub/c.py"]
    assert _stale(block, pkg) == ["gone.py"]
