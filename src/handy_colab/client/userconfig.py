"""Whether the user's own ssh config already says something for an alias `connect` writes.

Our ``Include`` comes first in ``~/.ssh/config``, and ssh takes each directive from the
first block that sets it: a ``Host colab`` (or ``Host col*``, ``Match host colab``) of the
user's own would silently lose to ours. ``ssh -G`` is the truth: the alias and a name that
nothing can match are resolved against a copy of the user's config without our managed
file; any difference (beyond the name itself and hashes of it, like ControlPath's ``%C``)
means the user's config applies to the alias, and `connect` stops.

The copy makes every ``Include`` absolute (ssh resolves relative ones against the passwd
entry's ``~/.ssh``, not ``$HOME``), lists a glob's files itself without ours, and reads the
included files in place (their own relative Includes resolve as ssh resolves them).
``Match exec`` commands run, as they do for every ``ssh`` the user types.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import secrets
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..sshquote import config_word

log = logging.getLogger(__name__)
_HEX_RE = re.compile(r"\b[0-9a-f]{40}\b|\b[0-9a-f]{64}\b")
_TIMEOUT = 15


def _include_targets(value: str) -> list[str]:
    try:
        return shlex.split(value, comments=True)
    except ValueError:
        return value.split()


def _resolve(target: str, ssh_dir: Path) -> str:
    path = os.path.expanduser(target)
    return path if os.path.isabs(path) else str(ssh_dir / path)


def without_ours(text: str, ssh_dir: Path, managed: Path) -> str:
    """``text`` (the user's config) with our managed file left out of every Include, and
    every Include made absolute (globs expanded here, so ours can be left out of them)."""
    ours = {os.path.realpath(managed)}
    out = []
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key.lower() != "include" and not key.lower().startswith("include="):
            out.append(line)
            continue
        if key.lower().startswith("include="):
            value = key[len("include=") :] + " " + value
        files: list[str] = []
        for target in _include_targets(value):
            path = _resolve(target, ssh_dir)
            found = sorted(glob.glob(path)) if glob.has_magic(path) else [path]
            files += [f for f in found if os.path.realpath(f) not in ours]
        if files:
            indent = line[: len(line) - len(line.lstrip())]
            words = " ".join(config_word(f, "an included file", expands=False) for f in files)
            out.append(f"{indent}Include {words}")
    return "\n".join(out) + "\n"


def _resolved(ssh: str, config: Path | None, name: str) -> dict[str, str] | None:
    """``ssh -G`` of ``name`` with ``config`` (None: the user's own, as ssh finds it)."""
    try:
        res = subprocess.run(
            [ssh, "-G", *(["-F", str(config)] if config is not None else []), name],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=_TIMEOUT,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("cannot check your ssh config with `ssh -G`: %s", exc)
        return None
    if res.returncode != 0:
        why = (res.stderr.strip().splitlines() or ["no reason given"])[-1]
        log.warning("`ssh -G` cannot read your ssh config (%s): not checked", why)
        return None
    out: dict[str, str] = {}
    for line in res.stdout.splitlines():
        key, _, value = line.partition(" ")
        # Hashes of the name (ControlPath's %C) differ between any two names.
        value = _HEX_RE.sub("<hash>", value)
        out[key] = f"{out[key]}\n{value}" if key in out else value
    return out


def _differs(got: str | None, base: str | None, alias: str, probe: str) -> bool:
    """Whether a setting differs beyond the name itself (``host``, ``hostname``, a %h)."""
    if got == base:
        return False
    return got is None or base is None or got.replace(alias, probe) != base


def _pattern_matches(pattern: str, name: str) -> bool:
    """OpenSSH's Host pattern: ``*`` and ``?`` wildcards, case-sensitive (measured)."""
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, name) is not None


def _host_line_matches(patterns: list[str], name: str) -> bool:
    hit = False
    for pat in patterns:
        negated = pat.startswith("!")
        if _pattern_matches(pat[1:] if negated else pat, name):
            if negated:
                return False
            hit = True
    return hit


def _describe(user_config: Path, ssh_dir: Path, managed: Path, name: str, keys: list[str]) -> str:
    """Which line of the user's files applies to ``name`` (best effort; ssh -G decided)."""
    seen: set[str] = {os.path.realpath(managed)}
    files = [str(user_config)]
    while files:
        path = files.pop(0)
        if os.path.realpath(path) in seen:
            continue
        seen.add(os.path.realpath(path))
        try:
            lines = Path(path).read_text(errors="replace").splitlines()
        except OSError:
            continue
        for number, raw in enumerate(lines, 1):
            key, _, value = raw.strip().partition(" ")
            words = _include_targets(value)
            if key.lower() == "host" and _host_line_matches(words, name):
                return f"{path} line {number} ({raw.strip()[:60]})"
            if key.lower() == "match" and name in value:
                return f"{path} line {number} ({raw.strip()[:60]})"
            if key.lower() == "include":
                for target in words:
                    resolved = _resolve(target, ssh_dir)
                    files += sorted(glob.glob(resolved)) if glob.has_magic(resolved) else [resolved]
    return f"your ssh config (it sets {', '.join(keys[:3])} for it)"


def user_definition(
    aliases: list[str], user_config: Path, managed: Path, ssh: str = "ssh"
) -> str | None:
    """None when nothing in the user's own config (outside ``managed``) applies to any of
    ``aliases``; else which alias and where, e.g. "'colab': ~/.ssh/config line 12 (Host
    col*)". Not checked (None, with a warning in the log) when ssh is missing or cannot
    read the config: ssh itself would then fail the same way."""
    if not user_config.is_file():
        return None
    program = shutil.which(ssh)
    if program is None:
        log.warning(
            "no `ssh` on PATH: whether your ssh config already uses %s is not checked",
            ", ".join(aliases),
        )
        return None
    ssh_dir = user_config.parent
    try:
        text = without_ours(user_config.read_text(errors="replace"), ssh_dir, managed)
    except Exception as exc:
        log.warning("cannot read %s to check it: %s", user_config, exc)
        return None
    with tempfile.TemporaryDirectory(prefix="hc-usercfg-") as tmp:
        copy = Path(tmp) / "config"
        copy.write_text(text)
        empty = Path(tmp) / "empty"
        empty.write_text("")
        probe = _probe_name()
        base = _resolved(program, copy, probe)
        if base is None:
            return None
        for alias in aliases:
            got, default = _resolved(program, copy, alias), _resolved(program, empty, alias)
            if got is None or default is None:
                return None
            # What the alias gets that every other name does not, and ssh would not give it
            # by itself (a `Host * !colab` leaves colab at ssh's defaults: nothing of theirs).
            differ = sorted(
                k
                for k in set(got) | set(base)
                if _differs(got.get(k), base.get(k), alias, probe) and got.get(k) != default.get(k)
            )
            if differ:
                where = _describe(user_config, ssh_dir, managed, alias, differ)
                return f"'{alias}': {where}"
    return None


# OpenSSH's own defaults (readconf.c), for when ssh cannot be asked.
_DEFAULT_SHARED = (
    "~/.ssh/known_hosts",
    "~/.ssh/known_hosts2",
    "/etc/ssh/ssh_known_hosts",
    "/etc/ssh/ssh_known_hosts2",
)


def reads_for_every_host(known_hosts: Path, ssh: str = "ssh") -> bool:
    """Whether the user's ssh checks host keys in ``known_hosts`` for a host our Host blocks
    do not name (its ``UserKnownHostsFile``/``GlobalKnownHostsFile`` for any other name):
    a line there vouches for its host name to every ``ssh`` the user types."""
    files = [os.path.expanduser(f) for f in _DEFAULT_SHARED]
    program = shutil.which(ssh)
    if program is not None:
        got = _resolved(program, None, _probe_name())
        if got is not None:
            for key in ("userknownhostsfile", "globalknownhostsfile"):
                files += [os.path.expanduser(f) for f in got.get(key, "").split()]
    target = os.path.realpath(known_hosts)
    return any(os.path.realpath(f) == target for f in files)


def _probe_name() -> str:
    return f"hc-probe-{secrets.token_hex(6)}"
