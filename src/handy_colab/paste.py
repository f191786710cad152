"""The pasted ``hc1:`` line: the descriptor's JSON, zlib-compressed, in unpadded base64url.

What people paste is not always what was printed: a chat app wraps it in quotes (typographic
ones too), a terminal wraps it over lines, a second paste doubles it, the whole printed
command comes along (``handy-colab connect 'hc1:...'``), ``HC1:`` arrives in capitals.
Each of these is undone when what is left is unambiguous: the body is only ever read as
base64url, every character outside that alphabet is refused (never skipped, as b64decode
would), a doubled body counts only when its halves are equal and the whole does not decode,
and inflation is bounded. Anything else is one ConfigError line.
"""

from __future__ import annotations

import base64
import json
import re
import zlib
from typing import Any

from .errors import ConfigError

PASTE_PREFIX = "hc1:"
PASTE_MAX = 64 * 1024  # the inflated JSON, at most
PASTE_LINE_MAX = 16 * 1024  # the pasted line itself (an RSA-keyed one is about 1000)
_BODY_RE = re.compile(r"^[A-Za-z0-9_-]+$")  # urlsafe base64, unpadded
_QUOTES = {"'": "'", '"': '"', "`": "`", "\u2018": "\u2019", "\u201c": "\u201d"}
_COMMAND_RE = re.compile(r"^(?:\$\s*)?handy-colab\s+connect\s+", re.I)
_SPACE_RE = re.compile(r"\s+")
_WHERE = "the pasted hc1: line"
_FIX = f"Fix: copy the whole line again from the runtime's output (it starts with {PASTE_PREFIX})"


def _unwrap(text: str) -> str:
    """``text`` without what a copy adds around the line: spaces, the printed command,
    matching quotes or backticks."""
    line = text.strip()
    for _ in range(3):
        before = line
        line = _COMMAND_RE.sub("", line).strip()
        if len(line) >= 2 and _QUOTES.get(line[0]) == line[-1]:
            line = line[1:-1].strip()
        if line == before:
            break
    return line


def is_paste(source: str) -> bool:
    """Whether a `connect` argument is meant as a pasted line (else a file or folder)."""
    return _unwrap(source[: 4 * PASTE_LINE_MAX])[:4].lower() == PASTE_PREFIX


def encode(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":"), sort_keys=True)
    return PASTE_PREFIX + base64.urlsafe_b64encode(zlib.compress(raw.encode(), 9)).decode().rstrip(
        "="
    )


def _damaged(why: str) -> ConfigError:
    return ConfigError(f"{_WHERE} is damaged ({why}). {_FIX}")


def _inflate(body: str) -> bytes:
    try:
        packed = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except ValueError as exc:
        raise _damaged(str(exc)) from None
    inflate = zlib.decompressobj()
    try:
        # Bounded: a crafted line must not inflate into gigabytes.
        raw = inflate.decompress(packed, PASTE_MAX)
    except zlib.error as exc:
        raise _damaged(str(exc)) from None
    if inflate.unconsumed_tail:
        raise _damaged("too long")
    if not inflate.eof:
        raise _damaged("cut short: the end of the line is missing")
    if inflate.unused_data:
        raise _damaged("something follows the end of the line")
    return raw


def decode(text: str) -> dict[str, Any]:
    """The JSON object a pasted line carries (not yet validated as a descriptor)."""
    if len(text) > 4 * PASTE_LINE_MAX:
        raise ConfigError(f"{_WHERE} is too long. {_FIX}")
    line = _unwrap(text)
    if line[:4].lower() != PASTE_PREFIX:
        raise ConfigError(f"{_WHERE} is not one. {_FIX}")
    # A terminal or mail client wrapped it: line breaks and spaces are never part of it.
    body = _SPACE_RE.sub("", line[4:])
    parts = re.split(r"(?i)hc1:", body)
    if len(parts) > 1 and all(p == parts[0] for p in parts):
        body = parts[0]  # pasted twice (or more), prefix and all
    if len(body) > PASTE_LINE_MAX:
        raise ConfigError(f"{_WHERE} is too long. {_FIX}")
    if not _BODY_RE.match(body):
        raise _damaged("a character that is not base64url")
    try:
        raw = _inflate(body)
    except ConfigError:
        half = len(body) // 2
        if len(body) % 2 or body[:half] != body[half:]:
            raise
        raw = _inflate(body[:half])  # the body pasted twice without its prefix
    try:
        data = json.loads(raw)
    except RecursionError:
        raise _damaged("nested too deeply") from None
    except ValueError as exc:
        raise _damaged(f"{exc}"[:80]) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{_WHERE} holds no descriptor. {_FIX}")
    return data
