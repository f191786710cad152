"""Typed access to the JSON of user_config.json, with one-line errors naming file and field."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .errors import ConfigError


class Fields:
    """Typed access to one JSON object, with errors that name file and field."""

    def __init__(self, file: Path, prefix: str, data: Any, allowed: set[str]) -> None:
        self.file = file
        self.prefix = prefix
        if not isinstance(data, dict):
            raise self.error("", f"must be a JSON object, not {typename(data)}", "use {...}")
        self.data: dict[str, Any] = data
        for key in data:
            if key not in allowed:
                import difflib  # only for a mistyped key

                close = difflib.get_close_matches(key, sorted(allowed), n=1)
                hint = (
                    f"did you mean '{close[0]}'?"
                    if close
                    else (f"known fields: {', '.join(sorted(allowed))}")
                )
                raise self.error(key, "is not a known field", hint)

    def where(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix and key else (self.prefix or key)

    def error(self, key: str, problem: str, fix: str) -> ConfigError:
        name = self.where(key)
        subject = f"field '{name}' " if name else ""
        return ConfigError(f"{self.file}: {subject}{problem}. Fix: {fix}")

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def str_(self, key: str, default: str | None = None) -> str | None:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, str) or not value.strip():
            raise self.error(
                key,
                f"must be a non-empty string, not {typename(value)}",
                f'write it as "{key}": "..."',
            )
        return value.strip()

    def port(self, key: str, default: int | None = None, allow_zero: bool = False) -> int | None:
        value = self.data.get(key)
        if value is None:
            return default
        port = as_port(value, allow_zero)
        if port is None:
            low = 0 if allow_zero else 1
            raise self.error(
                key,
                f"must be a port number {low}-65535, not {value!r}",
                f'write it as "{key}": 2222',
            )
        return port

    def str_list(self, key: str) -> list[str]:
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(key, "must be a list of strings", f'write it as "{key}": ["..."]')
        return list(value)

    def sub(self, key: str, allowed: set[str]) -> Fields:
        value = self.data.get(key)
        # Only a missing/null section is "absent": [] or false is a mistake worth naming.
        return Fields(self.file, self.where(key), {} if value is None else value, allowed)


def as_port(value: Any, allow_zero: bool = False, strict: bool = False) -> int | None:
    """The port number ``value`` stands for (an int, or unless ``strict`` a decimal string)."""
    if not strict and isinstance(value, str) and re.fullmatch(r"[0-9]{1,5}", value.strip()):
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if (0 if allow_zero else 1) <= value <= 65535 else None


def typename(value: Any) -> str:
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }.get(type(value), "a value")


def parse_config_text(raw: bytes, where: str) -> Any:
    """user_config.json's bytes (a file, or a Colab secret) as JSON; ConfigError naming
    ``where`` when they are not UTF-8 or not JSON."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(
            f"{where}: is not UTF-8 text. Fix: save the file as UTF-8 "
            f"(Notepad: Save As > Encoding UTF-8)"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{where}: invalid JSON at line {exc.lineno} column {exc.colno}: "
            f"{exc.msg}. Fix: correct the JSON syntax there"
        ) from None
