"""What a user reads points only to what a user has: no string the package can show names a
checkout file (docs/x.md), and every `handy-colab help TOPIC` it names is a topic."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import handy_colab
from handy_colab import userdocs

PACKAGE = Path(handy_colab.__file__).parent
CHECKOUT_PATH = re.compile(r"\bdocs/")
HELP_TOPIC = re.compile(r"handy-colab help ([a-z][a-z0-9-]*)")


def _docstring_ids(tree: ast.AST) -> set[int]:
    """Docstrings and bare string statements: for developers, never shown to a user."""
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            ids.add(id(node.value))
    return ids


def user_strings(source: str) -> list[tuple[int, str]]:
    """(line, text) of each string literal and f-string (its fixed parts, with the
    placeholders as {}) a program could show: all but docstrings; comments are not strings."""
    tree = ast.parse(source)
    skip = _docstring_ids(tree)
    inner: set[int] = set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = []
            for value in node.values:
                inner.add(id(value))
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    parts.append(value.value)
                else:
                    parts.append("{}")
            found.append((node.lineno, "".join(parts)))
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in skip
            and id(node) not in inner
        ):
            found.append((node.lineno, node.value))
    return found


def _package_strings() -> list[tuple[str, int, str]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for line, text in user_strings(path.read_text()):
            out.append((str(path.relative_to(PACKAGE)), line, text))
    assert len(out) > 1000  # the package's sources were read
    return out


STRINGS = _package_strings()


def test_no_user_visible_string_names_a_checkout_doc() -> None:
    bad = [f"{f}:{line}: {text!r}" for f, line, text in STRINGS if CHECKOUT_PATH.search(text)]
    assert bad == [], "use `handy-colab help TOPIC` instead:\n" + "\n".join(bad)


def test_every_help_topic_named_exists() -> None:
    topics = {t.name for t in userdocs.topics()}
    named = {(f, line, m) for f, line, text in STRINGS for m in HELP_TOPIC.findall(text)}
    assert named, "no message points to `handy-colab help TOPIC`"
    assert [n for n in named if n[2] not in topics] == []


def test_the_scan_sees_what_it_must_and_skips_what_it_may() -> None:
    # The check can fail: a message in a plain string, an f-string or a concatenation is seen;
    # a docstring and a comment are not.
    source = '''
"""Module doc: see docs/config.md."""
def f(x):
    """Function doc (docs/frp.md)."""
    # comment: docs/relay.md
    a = "Fix: see docs/config.md"
    b = f"{x}: bad. Fix: read docs/{x}.md"
    c = ("one " "docs/" "two")
    raise ValueError(f"{x} (docs/frp.md)")
'''
    hits = [line for line, text in user_strings(source) if CHECKOUT_PATH.search(text)]
    assert hits == [6, 7, 8, 9]
