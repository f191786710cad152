"""JSON with comments (VS Code's settings.json): parse with positions, edit in place.

Only what VS Code's own parser accepts is accepted here: JSON plus ``//`` and ``/* */``
comments and trailing commas. Anything else (single quotes, bare keys, duplicate keys, an
unterminated comment) raises `JsoncError`, so a caller can leave such a file alone instead
of guessing. Edits splice text into the original string, so every byte outside them stays.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

_NUMBER_RE = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_LITERALS = {"true": True, "false": False, "null": None}
_WS = " \t\r\n"
DEFAULT_UNIT = "    "


class JsoncError(ValueError):
    """The text is not JSONC as VS Code reads it; the message names line and column."""

    def __init__(self, text: str, pos: int, what: str) -> None:
        line = text.count("\n", 0, pos) + 1
        col = pos - (text.rfind("\n", 0, pos) + 1) + 1
        super().__init__(f"{what} at line {line} column {col}")


@dataclass
class Member:
    key: str
    key_start: int
    value: Node
    comma: int | None = None  # index of the comma after the value, if any


@dataclass
class Node:
    kind: str  # "object" | "array" | "string" | "number" | "literal"
    start: int
    end: int  # exclusive
    scalar: Any = None
    members: list[Member] = field(default_factory=list)
    items: list[Node] = field(default_factory=list)

    def member(self, key: str) -> Member | None:
        return next((m for m in self.members if m.key == key), None)

    def to_python(self) -> Any:
        if self.kind == "object":
            return {m.key: m.value.to_python() for m in self.members}
        if self.kind == "array":
            return [n.to_python() for n in self.items]
        return self.scalar


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, what: str, pos: int | None = None) -> JsoncError:
        return JsoncError(self.text, self.pos if pos is None else pos, what)

    def skip(self) -> None:
        """Skip whitespace and both kinds of comment."""
        text, n = self.text, len(self.text)
        while self.pos < n:
            c = text[self.pos]
            if c in _WS:
                self.pos += 1
            elif text.startswith("//", self.pos):
                nl = text.find("\n", self.pos)
                self.pos = n if nl < 0 else nl
            elif text.startswith("/*", self.pos):
                close = text.find("*/", self.pos + 2)
                if close < 0:
                    raise self.fail("unterminated /* comment")
                self.pos = close + 2
            else:
                return

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def value(self, depth: int = 0) -> Node:
        if depth > 200:
            raise self.fail("nesting too deep")
        c = self.peek()
        if c == "{":
            return self.obj(depth)
        if c == "[":
            return self.array(depth)
        if c == '"':
            start = self.pos
            return Node("string", start, self.pos_after_string(), self.string_at(start))
        m = _NUMBER_RE.match(self.text, self.pos)
        if m and m.end() > self.pos:
            self.pos = m.end()
            self.word_end(m.start())
            return Node("number", m.start(), m.end(), json.loads(m.group()))
        for word, val in _LITERALS.items():
            if self.text.startswith(word, self.pos):
                start, self.pos = self.pos, self.pos + len(word)
                self.word_end(start)
                return Node("literal", start, self.pos, val)
        raise self.fail("unexpected end of file" if not c else f"unexpected {c!r}")

    def word_end(self, start: int) -> None:
        c = self.peek()
        if c and (c.isalnum() or c in "_$.+-"):
            raise self.fail(f"unexpected {c!r}", start)

    def pos_after_string(self) -> int:
        """Scan the string starting at ``self.pos``; leave ``pos`` after its closing quote."""
        text, i = self.text, self.pos + 1
        while i < len(text):
            c = text[i]
            if c == "\\":
                i += 2
                continue
            if c == '"':
                self.pos = i + 1
                return self.pos
            if c in "\r\n":
                break
            i += 1
        raise self.fail("unterminated string")

    def string_at(self, start: int) -> str:
        try:
            out = json.loads(self.text[start : self.pos])
        except ValueError:
            raise self.fail("invalid string escape or control character", start) from None
        assert isinstance(out, str)
        return out

    def obj(self, depth: int) -> Node:
        node = Node("object", self.pos, self.pos)
        self.pos += 1
        self.skip()
        while self.peek() != "}":
            if self.peek() != '"':
                raise self.fail("expected a quoted key or '}'")
            key_start = self.pos
            self.pos_after_string()
            key = self.string_at(key_start)
            if node.member(key) is not None:
                raise self.fail(f"duplicate key {key!r}", key_start)
            self.skip()
            if self.peek() != ":":
                raise self.fail("expected ':'")
            self.pos += 1
            self.skip()
            member = Member(key, key_start, self.value(depth + 1))
            node.members.append(member)
            self.skip()
            if self.peek() == ",":
                member.comma = self.pos
                self.pos += 1
                self.skip()
            elif self.peek() != "}":
                raise self.fail("expected ',' or '}'")
        self.pos += 1
        node.end = self.pos
        return node

    def array(self, depth: int) -> Node:
        node = Node("array", self.pos, self.pos)
        self.pos += 1
        self.skip()
        while self.peek() != "]":
            node.items.append(self.value(depth + 1))
            self.skip()
            if self.peek() == ",":
                self.pos += 1
                self.skip()
            elif self.peek() != "]":
                raise self.fail("expected ',' or ']'")
        self.pos += 1
        node.end = self.pos
        return node


def parse(text: str) -> Node | None:
    """The document's value with positions; None when it holds only whitespace/comments."""
    p = _Parser(text)
    p.skip()
    if not p.peek():
        return None
    root = p.value()
    p.skip()
    if p.peek():
        raise p.fail("text after the end of the document")
    return root


def newline_of(text: str) -> str:
    return "\r\n" if "\r\n" in text else "\n"


def line_indent(text: str, pos: int) -> str:
    """The leading whitespace of the line holding ``pos``."""
    start = text.rfind("\n", 0, pos) + 1
    end = start
    while end < len(text) and text[end] in " \t":
        end += 1
    return text[start:end]


def own_line_indent(text: str, pos: int) -> str | None:
    """The indent before ``pos`` if only whitespace precedes it on its line, else None."""
    start = text.rfind("\n", 0, pos) + 1
    before = text[start:pos]
    return before if before.strip(" \t") == "" else None


def indent_unit(text: str, root: Node) -> str:
    """The file's indent step, from the top-level members (4 spaces when unknown)."""
    if root.kind == "object" and root.members:
        ind = own_line_indent(text, root.members[0].key_start)
        base = line_indent(text, root.start)
        if ind and ind.startswith(base) and len(ind) > len(base):
            return ind[len(base) :]
    return DEFAULT_UNIT


def _line_end_after(text: str, pos: int) -> int:
    """Where a new line may start after ``pos``: past spaces and comments on the same line,
    at its line break (before the CR of a CRLF); else at the first other character."""
    i = pos
    while i < len(text):
        if text[i] in " \t":
            i += 1
        elif text.startswith(("\r\n", "\n"), i):
            return i
        elif text.startswith("/*", i):
            i = text.index("*/", i + 2) + 2  # parse() has already seen it closed
        elif text.startswith("//", i):
            nl = text.find("\n", i)
            return len(text) if nl < 0 else (nl - 1 if text[nl - 1] == "\r" else nl)
        else:
            return i
    return i


def render(value: Any, indent: str, unit: str, nl: str) -> str:
    """A value as JSON in the file's style: objects one member a line, ``indent`` deep."""
    if isinstance(value, dict) and value:
        inner = indent + unit
        lines = [f"{inner}{json.dumps(k)}: {render(v, inner, unit, nl)}" for k, v in value.items()]
        return "{" + nl + ("," + nl).join(lines) + nl + indent + "}"
    return json.dumps(value)


def set_members(text: str, obj: Node, entries: dict[str, Any], unit: str) -> str:
    """Return ``text`` with ``obj``'s members ``entries`` set: existing ones get the new
    value in place, missing ones are added after the last member in the object's style."""
    assert obj.kind == "object"
    nl = newline_of(text)
    edits: list[tuple[int, int, str]] = []
    new: dict[str, Any] = {}
    for key, value in entries.items():
        m = obj.member(key)
        if m is None:
            new[key] = value
        elif m.value.to_python() != value:
            ind = line_indent(text, m.key_start)
            edits.append((m.value.start, m.value.end, render(value, ind, unit, nl)))
    if new:
        edits.append(_insertion(text, obj, new, unit, nl))
    out, at = [], 0
    for start, end, repl in sorted(edits, key=lambda e: e[0]):
        out += [text[at:start], repl]
        at = end
    return "".join([*out, text[at:]])


def _insertion(
    text: str, obj: Node, new: dict[str, Any], unit: str, nl: str
) -> tuple[int, int, str]:
    """One splice that adds ``new`` members to ``obj``."""
    if obj.members:
        last = obj.members[-1]
        ind = own_line_indent(text, obj.members[0].key_start)
        if ind is None:  # a one-line object stays on one line
            parts = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in new.items()]
            if last.comma is not None:
                return last.comma + 1, last.comma + 1, " " + ", ".join(parts) + ","
            return last.value.end, last.value.end, ", " + ", ".join(parts)
        lines = [f"{ind}{json.dumps(k)}: {render(v, ind, unit, nl)}" for k, v in new.items()]
        body = ("," + nl).join(lines)
        if last.comma is not None:  # the file uses trailing commas: so do we
            at = _line_end_after(text, last.comma + 1)
            return last.comma + 1, at, text[last.comma + 1 : at] + nl + body + ","
        at = _line_end_after(text, last.value.end)
        tail = text[last.value.end : at]
        if at < len(text) and text[at] not in "\r\n":  # something (the brace) on that line
            return last.value.end, at, "," + tail + nl + body + nl + line_indent(text, obj.start)
        return last.value.end, at, "," + tail + nl + body
    close = obj.end - 1
    base = line_indent(text, obj.start)
    lines = [
        f"{base}{unit}{json.dumps(k)}: {render(v, base + unit, unit, nl)}" for k, v in new.items()
    ]
    body = ("," + nl).join(lines)
    if own_line_indent(text, close) is not None:  # '}' alone on its line: add lines above it
        line_start = text.rfind("\n", 0, close) + 1
        return line_start, line_start, body + nl
    return close, close, nl + body + nl + base
