"""Which Python requirement specs the target interpreter already satisfies.

Presence is judged by the target interpreter itself (the notebook's Python, which need not
be the one running this code), in one child process that reads ``importlib.metadata`` and
parses requirements with that interpreter's ``packaging`` (or the copy vendored in its
pip). The script it runs is long and must stay plain old Python, hence its own module.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from ..proc import run_subprocess
from .common import CREDENTIALS, failure_reason

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Presence:
    """What the target interpreter says about one requirement spec."""

    present: bool
    version: str | None  # of the installed distribution with that name, satisfying or not
    name: str | None  # the distribution name, when the spec names one
    note: str = ""  # why it is present without a version (a marker that does not apply)


# Runs inside the target interpreter, which may be older than ours: plain syntax only.
# argv: the specs; stdout: one JSON list of [present, version, name, note], in order.
_CHECK_SCRIPT = r"""
import json, re, sys
if sys.path and sys.path[0] in ("", "."):
    del sys.path[0]  # never let the cwd shadow packaging or pip
try:
    from importlib import metadata as md
except ImportError:
    try:
        import importlib_metadata as md
    except ImportError:
        md = None
Requirement = None
try:
    from packaging.requirements import Requirement
except Exception:
    try:
        from pip._vendor.packaging.requirements import Requirement
    except Exception:
        Requirement = None

def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()

_by_name = {}
_scanned = []

def find(name):
    if md is None:
        return None
    try:
        d = md.distribution(name)
        if d.version:
            return d
    except Exception:
        pass
    # Before 3.10, distribution() does not normalise names (Foo_Bar vs foo-bar).
    if not _scanned:
        _scanned.append(True)
        for d in md.distributions():
            try:
                n = d.metadata["Name"]
            except Exception:
                continue
            if n and d.version:
                _by_name.setdefault(norm(n), d)
    return _by_name.get(norm(name))

def contains(specifier, version):
    # prereleases=True only matters when the installed version is itself a prerelease.
    try:
        return specifier.contains(version, prereleases=True)
    except Exception:
        return False

def satisfied(req, seen):
    d = find(req.name)
    if d is None:
        return False, None
    version = d.version
    if req.specifier and not contains(req.specifier, version):
        return False, version
    for r in (d.requires or []) if req.extras else []:
        try:
            sub = Requirement(r)
        except Exception:
            continue
        if sub.marker is None or sub.marker.evaluate({"extra": ""}):
            continue  # a base dependency: pip saw to it when this was installed
        if not any(sub.marker.evaluate({"extra": e}) for e in req.extras):
            continue
        key = norm(sub.name) + str(sorted(sub.extras)) + str(sub.specifier)
        if key in seen:
            continue
        seen.add(key)
        if not satisfied(sub, seen)[0]:
            return False, version
    return True, version

def check(spec):
    s = spec.strip()
    if Requirement is None:
        if md is not None and re.match(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$", s):
            d = find(s)
            return [d is not None, d.version if d else None, s, ""]
        return [False, None, None, ""]
    try:
        req = Requirement(s)
    except Exception:
        return [False, None, None, ""]
    if req.marker is not None and not req.marker.evaluate():
        return [True, None, req.name, "marker does not apply here: " + str(req.marker)]
    if getattr(req, "url", None):
        d = find(req.name)
        return [False, d.version if d else None, req.name, ""]
    ok, version = satisfied(req, set())
    return [ok, version, req.name, ""]

out = []
for spec in sys.argv[1:]:
    try:
        out.append(check(spec))
    except Exception:
        out.append([False, None, None, ""])
sys.stdout.write(json.dumps(out) + "\n")
"""

# "name @ url" or "name[extra] @ url": the name, read here when the spec cannot be sent.
_DIRECT_NAME = re.compile(r"^\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(?:\[[^\]]*\])?\s*@")


def python_presence(
    python: str, specs: Sequence[str], *, timeout: float = 120.0
) -> dict[str, Presence]:
    """Which ``specs`` the interpreter ``python`` already satisfies, in one child process.

    A spec that is not a plain requirement (a URL, a path, ``name @ url``, or not
    parseable) is never present: pip gets it. When the check itself cannot run, every spec
    counts as missing, and pip then says for each what is wrong.
    """
    result: dict[str, Presence] = {}
    sendable: list[str] = []
    for spec in dict.fromkeys(specs):
        if CREDENTIALS.search(spec):
            # A spec with credentials is a URL, so never present; keep it off argv.
            m = _DIRECT_NAME.match(spec)
            result[spec] = Presence(False, None, m.group(1) if m else None)
        else:
            sendable.append(spec)
    if not sendable:
        return result
    answers: list[list[object]] = []
    try:
        res = run_subprocess([python, "-c", _CHECK_SCRIPT, *sendable], timeout=timeout)
        if res.returncode == 0:
            answers = json.loads(res.stdout.strip().splitlines()[-1])
        else:
            log.warning("package check with %s failed: %s", python, failure_reason(res.stderr))
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError) as exc:
        log.warning("package check with %s failed: %s", python, exc)
    for i, spec in enumerate(sendable):
        row = answers[i] if i < len(answers) and isinstance(answers[i], list) else []
        if len(row) == 4:
            present, version, name, note = row
            result[spec] = Presence(
                present is True,
                version if isinstance(version, str) else None,
                name if isinstance(name, str) else None,
                note if isinstance(note, str) else "",
            )
        else:
            result[spec] = Presence(False, None, None)
    return result
