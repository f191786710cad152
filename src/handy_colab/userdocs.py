"""The user docs (the checkout's docs/*.md) as `handy-colab help` topics.

A wheel carries them as handy_colab/docs/*.md (setup.py copies them in at build time, so the
pages exist once, in docs/); an editable install has no such folder and reads the checkout's.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .errors import HandyColabError


@dataclass(frozen=True)
class Topic:
    name: str  # the page's file name without .md: what `handy-colab help NAME` takes
    title: str  # the page's first heading
    path: Path


def docs_dir() -> Path | None:
    """The folder the pages are read from: the package's own copy, else the checkout's."""
    shipped = resources.files("handy_colab") / "docs"
    # A wheel is installed as files on disk, so the Traversable is a real directory.
    if shipped.is_dir():
        return Path(str(shipped))
    checkout = Path(__file__).resolve().parents[2] / "docs"
    return checkout if checkout.is_dir() else None


def topics() -> list[Topic]:
    """Every page, by name."""
    folder = docs_dir()
    if folder is None:
        return []
    found = []
    for path in sorted(folder.glob("*.md")):
        first = path.read_text(encoding="utf-8").split("\n", 1)[0]
        found.append(Topic(path.stem, first.lstrip("#").strip() or path.stem, path))
    return found


def page(name: str) -> str:
    """The text of topic ``name``; a one-line error naming the topics when there is none."""
    known = topics()
    if not known:
        raise HandyColabError(
            "this installation of handy-colab has no help pages. Fix: reinstall it from a wheel "
            "or the source tree (pip install handy-colab), which ship them"
        )
    for topic in known:
        if topic.name == name.lower().removesuffix(".md"):
            return topic.path.read_text(encoding="utf-8")
    names = ", ".join(t.name for t in known)
    raise HandyColabError(
        f"no help topic '{name}'. Fix: use one of {names} (`handy-colab help` lists them)"
    )
