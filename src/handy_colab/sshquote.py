"""Quoting for the two tokenizers a value written into an ssh config passes through.

- ``ProxyCommand`` is taken verbatim to the end of its line, expanded for ssh's ``%``
  tokens, and run by the user's shell (``exec ...``); Windows' OpenSSH runs it without a
  shell (CreateProcessW), splitting on double quotes. A word from outside (a synced folder's
  path, the interpreter's path) is quoted for that shell and has every ``%`` doubled.
- ``IdentityFile`` and ``UserKnownHostsFile`` are split into words by ssh itself (double
  quotes, backslash escapes ``\\ " '``), then expanded for ``%`` tokens and ``${VAR}``.
  ``Include`` is split the same way but expanded for neither (only ``~`` and globs).

A newline or other control character ends the directive whatever the quoting: such values
are refused, never written. Sources: ../shared/notes/security.md; measured with OpenSSH 9.2
``ssh -G`` (tests/unit/test_sshquote.py).
"""

from __future__ import annotations

import re
import shlex

from .errors import ClientConfigError

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_PLAIN_RE = re.compile(r"^[A-Za-z0-9_./:@+=,~-]+$")  # needs no quotes in ssh's own splitter


def _refuse(value: str, what: str, why: str) -> ClientConfigError:
    return ClientConfigError(
        f"{what} {value!r:.80} {why}, so it cannot go into an ssh config. Fix: move or rename "
        f"it to a path without that"
    )


def check_printable(value: str, what: str) -> str:
    if _CONTROL_RE.search(value):
        raise _refuse(value, what, "holds a line break or control character")
    return value


def proxy_word(value: str, what: str = "the path", windows: bool = False) -> str:
    """One word of a ProxyCommand, as its shell (or CreateProcessW on Windows) reads it back
    exactly, after ssh has expanded ``%%`` to ``%``."""
    check_printable(value, what)
    if windows:
        if '"' in value:
            raise _refuse(value, what, "holds a double quote")
        word = f'"{value}"'  # Windows' ssh wants its program's path quoted, even a plain one
    else:
        word = shlex.quote(value)
    return word.replace("%", "%%")


def proxy_line(argv: list[str], what: str = "the path", windows: bool = False) -> str:
    return " ".join(proxy_word(a, what, windows) for a in argv)


def unquote_proxy(command: str) -> list[str]:
    """The argv a ProxyCommand written by ``proxy_line`` runs (POSIX shell rules; our
    commands hold no other shell syntax and no ``%`` token but ``%%``)."""
    return shlex.split(command.replace("%%", "%"))


def config_word(value: str, what: str = "the path", expands: bool = True) -> str:
    """A value of IdentityFile/UserKnownHostsFile (``expands``: ssh expands ``%`` and
    ``${VAR}`` in it) or Include (``expands=False``), as ssh's word splitter reads it."""
    check_printable(value, what)
    if expands and "${" in value:
        # ssh offers no escape for "${": it would read an environment variable.
        raise _refuse(value, what, "holds '${'")
    word = value.replace("%", "%%") if expands else value
    if _PLAIN_RE.match(word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unquote_config_word(word: str) -> str:
    """The path ``config_word`` wrote (for reading our own blocks back)."""
    if len(word) >= 2 and word[0] == word[-1] == '"':
        word = re.sub(r"\\([\\\"'])", r"\1", word[1:-1])
    return word.replace("%%", "%")


def host_options(body: str, alias: str) -> dict[str, str]:
    """The options of ``Host alias`` in ``body`` (a marked block, or a whole config file
    `connect` wrote), values unquoted as ssh reads them; first value wins."""
    options: dict[str, str] = {}
    current = None
    for raw in body.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        if key.lower() == "host":
            current = value.split()[0] if value.split() else None
            continue
        if current == alias and key.lower() not in options:
            value = value.strip()
            if key.lower() != "proxycommand":
                value = unquote_config_word(value)
            options[key.lower()] = value
    return options
