"""The config's extra packages: ``python_packages`` (pip) and ``os_packages`` (apt-get).

Each package is checked first and installed only when missing, one at a time, so a bad
name is reported by name and the rest still go in; nothing here raises for a single
package. pip runs without ``--upgrade`` or ``--force-reinstall``: whatever the notebook
already has that satisfies a dependency stays exactly as it is.

Presence of Python packages is judged by the target interpreter itself (the notebook's
Python, which need not be the one running this code), in one child process that reads
``importlib.metadata`` and parses requirements with that interpreter's ``packaging`` (or
the copy vendored in its pip).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from .proc import run_subprocess

log = logging.getLogger(__name__)

PackageKind = Literal["python", "os"]
Status = Literal["present", "installed", "failed"]
Progress = Callable[[str], None]


@dataclass(frozen=True)
class PackageResult:
    """The outcome for one entry of ``python_packages`` or ``os_packages``."""

    kind: PackageKind
    spec: str  # exactly as written in the config
    status: Status
    detail: str  # one line: the version, or for a failure the reason and a fix


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

# user:password@ or token@ inside a URL: never on a command line or in a log line.
_CREDENTIALS = re.compile(r"(://)[^/@\s]+@")
# "name @ url" or "name[extra] @ url": the name, read here when the spec cannot be sent.
_DIRECT_NAME = re.compile(r"^\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(?:\[[^\]]*\])?\s*@")
# pip's rich diagnostics: a cross before the explanation, box-drawing before the details.
_CROSS = "\u00d7"
_DECORATION = _CROSS + "\u2570\u2500>\u2502 "
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# Lines that end an error report but say nothing about the package.
_NOISE = re.compile(
    r"for help visit|see above for|exception information|consider upgrading|^\[notice\]"
    r"|^(note|hint|warning|w|n):",
    re.IGNORECASE,
)
# apt-get's answers that fresh package lists may fix.
_STALE_LISTS = re.compile(
    r"Unable to locate package|has no installation candidate|maybe run apt-get update"
)
# Debian package names, optionally :arch and =version or /release; no options, no spaces.
_DEB_SPEC = re.compile(r"^([A-Za-z0-9][A-Za-z0-9+.\-]*(?::[A-Za-z0-9\-]+)?)(?:=(\S+)|/(\S+))?$")
_INSTALLED_STATES = {"installed", "triggers-pending", "triggers-awaiting"}


def redact(text: str) -> str:
    """``text`` with any credentials inside URLs replaced by ``****``."""
    return _CREDENTIALS.sub(r"\1****@", text)


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def failure_reason(output: str, returncode: int | None = None) -> str:
    """The line of pip's or apt-get's output that says why it failed.

    Both tools end with their verdict (pip ``ERROR: ...``, apt-get ``E: ...``); pip's
    newer diagnostics are ``error: <code>`` followed by a line explaining it.
    """
    lines = [_ANSI.sub("", raw).rstrip() for raw in output.splitlines()]
    lines = [line for line in lines if line.strip()]
    for prefix in ("ERROR:", "E:"):
        hits = [ln.strip() for ln in lines if ln.startswith(prefix) and not _NOISE.search(ln)]
        if hits:
            return _one_line(hits[-1])
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("error:"):
            reason = lines[i].strip()
            after = lines[i + 1].strip() if i + 1 < len(lines) else ""
            if after.startswith(_CROSS):
                reason += f" ({after.lstrip(_CROSS + ' ').strip()})"
            return _one_line(reason)
    for line in reversed(lines):
        text = line.strip().lstrip(_DECORATION).strip()
        if text and not _NOISE.search(text):
            return _one_line(text)
    return f"exit code {returncode}" if returncode is not None else "no output"


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
        if _CREDENTIALS.search(spec):
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


def install_packages(
    python_packages: Sequence[str],
    os_packages: Sequence[str],
    *,
    python: str,
    progress: Progress | None = None,
    timeout: float = 900.0,
) -> list[PackageResult]:
    """Install what is missing of ``python_packages`` (into ``python``) and ``os_packages``.

    Returns one result per entry, in order (Python packages first). ``progress`` gets one
    human line per step; ``timeout`` applies to each package's install.
    """

    def say(line: str) -> None:
        line = redact(line)
        log.info("%s", line)
        if progress is not None:
            progress(line)

    results: list[PackageResult] = []
    if python_packages:
        results += _install_python(python_packages, python, say, timeout)
    if os_packages:
        results += _install_os(os_packages, say, timeout)
    return results


def _report(say: Progress, r: PackageResult) -> PackageResult:
    what = f"{r.kind} package {r.spec}"
    if r.status == "failed":
        say(f"{what}: FAILED: {r.detail}")
    elif r.status == "installed":
        say(f"{what}: installed ({r.detail})")
    elif r.detail.startswith("marker does not apply"):
        say(f"{what}: nothing to do ({r.detail})")
    else:
        say(f"{what}: already present ({r.detail})")
    return r


def _python_fix(spec: str) -> str:
    return (
        f" Fix: check the name and version of {redact(spec)!r} in user_config.json field "
        "'python_packages' (or remove it), and that this runtime can reach the package index."
    )


def _install_python(
    specs: Sequence[str], python: str, say: Progress, timeout: float
) -> list[PackageResult]:
    n = len(specs)
    say(f"checking {n} python package{'s' if n != 1 else ''}")
    known = python_presence(python, specs)
    out: list[PackageResult] = []
    for idx, spec in enumerate(specs):
        p = known.get(spec, Presence(False, None, None))
        if not spec.strip() or spec.lstrip().startswith("-"):
            detail = "not a package spec (empty, or a pip option)." + _python_fix(spec)
            out.append(_report(say, PackageResult("python", spec, "failed", detail)))
            continue
        if p.present:
            detail = p.note or p.version or "present"
            out.append(_report(say, PackageResult("python", spec, "present", detail)))
            continue
        say(f"python package {spec}: installing...")
        ok, reason, pip_said = _pip_install(python, spec, timeout)
        if not ok:
            detail = reason + _python_fix(spec)
            out.append(_report(say, PackageResult("python", spec, "failed", detail)))
            continue
        # What this install brought in may satisfy later entries too: ask about them now.
        pending = [
            s for s in specs[idx + 1 :] if not known.get(s, Presence(False, None, None)).present
        ]
        probe = spec if not _CREDENTIALS.search(spec) else (p.name or "")
        after = python_presence(python, [s for s in [probe, *pending] if s])
        known.update({s: after[s] for s in pending if s in after})
        version = after[probe].version if probe in after else None
        detail = version or pip_said or "done"
        out.append(_report(say, PackageResult("python", spec, "installed", detail)))
    return out


def _pip_install(python: str, spec: str, timeout: float) -> tuple[bool, str, str]:
    """(ok, failure reason, what pip says it installed)."""
    argv = [
        python,
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "--progress-bar",
        "off",
    ]
    reqfile: str | None = None
    try:
        if _CREDENTIALS.search(spec):
            # argv is logged and visible in ps; a private requirements file is not.
            fd, reqfile = tempfile.mkstemp(prefix="handy-colab-req-", suffix=".txt")
            with os.fdopen(fd, "w") as f:
                f.write(spec + "\n")
            argv += ["-r", reqfile]
        else:
            argv.append(spec)
        res = run_subprocess(argv, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"pip did not finish within {timeout:g} s.", ""
    except OSError as exc:
        return False, f"cannot run {python} -m pip: {exc}.", ""
    finally:
        if reqfile is not None:
            os.unlink(reqfile)
    if res.returncode != 0:
        tail = (res.stdout + "\n" + res.stderr).strip().splitlines()[-20:]
        log.debug("pip output (last lines):\n%s", redact("\n".join(tail)))
        return False, redact(failure_reason(res.stdout + "\n" + res.stderr, res.returncode)), ""
    said = [ln for ln in res.stdout.splitlines() if ln.startswith("Successfully installed ")]
    return True, "", _one_line(said[-1].removeprefix("Successfully installed ")) if said else ""


def _os_fix(name: str) -> str:
    return (
        f" Fix: check the name {name!r} in user_config.json field 'os_packages' (or remove "
        "it), and that apt-get can reach its repositories."
    )


def _dpkg_version(dpkg_query: str, spec: str) -> str | None:
    """The installed version of ``spec`` (name, name:arch), None when not installed."""
    try:
        res = run_subprocess([dpkg_query, "-W", "-f", "${Status}\t${Version}\n", spec], timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in res.stdout.splitlines():
        status, _, version = line.partition("\t")
        words = status.split()
        if len(words) == 3 and words[2] in _INSTALLED_STATES:
            return version.strip() or "?"
    return None


def _install_os(specs: Sequence[str], say: Progress, timeout: float) -> list[PackageResult]:
    n = len(specs)
    say(f"checking {n} os package{'s' if n != 1 else ''}")
    dpkg_query = shutil.which("dpkg-query")
    apt_get = shutil.which("apt-get")
    root = os.geteuid() == 0
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # apt-get update runs at most once, and only when an install says the lists are stale.
    update_ran = False
    update_error: str | None = None
    out: list[PackageResult] = []
    for spec in specs:
        m = _DEB_SPEC.match(spec)
        if m is None:
            detail = "not a Debian package name." + _os_fix(spec)
            out.append(_report(say, PackageResult("os", spec, "failed", detail)))
            continue
        name, want_version = m.group(1), m.group(2)
        have = _dpkg_version(dpkg_query, name) if dpkg_query else None
        if have is not None and want_version in (None, have):
            out.append(_report(say, PackageResult("os", spec, "present", have)))
            continue
        if not (root and apt_get and dpkg_query):
            missing = [
                w
                for w, ok in (("root", root), ("apt-get", apt_get), ("dpkg", dpkg_query))
                if not ok
            ]
            detail = (
                f"not installed, and installing os packages needs root and apt-get (missing "
                f"here: {', '.join(missing)}). Fix: install {name} yourself (e.g. sudo apt-get "
                f"install {name}), run handy-colab as root, or remove it from user_config.json "
                "field 'os_packages'."
            )
            out.append(_report(say, PackageResult("os", spec, "failed", detail)))
            continue
        say(f"os package {spec}: installing...")
        reason = _apt_install(apt_get, spec, env, timeout)
        if reason is not None and not update_ran and _STALE_LISTS.search(reason):
            say("os packages: refreshing package lists (apt-get update)...")
            update_ran = True
            update_error = _apt_update(apt_get, env, timeout)
            reason = _apt_install(apt_get, spec, env, timeout)
        if reason is not None:
            if update_error is not None:
                reason += f" (apt-get update also failed: {update_error})"
            detail = reason + _os_fix(name)
            out.append(_report(say, PackageResult("os", spec, "failed", detail)))
            continue
        version = _dpkg_version(dpkg_query, name) or "done"
        out.append(_report(say, PackageResult("os", spec, "installed", version)))
    return out


def _apt_install(apt_get: str, spec: str, env: dict[str, str], timeout: float) -> str | None:
    """None on success, else why apt-get failed."""
    argv = [
        apt_get,
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        # Wait for a background apt (unattended upgrades) instead of failing on its lock,
        # and never stop at a config-file question on a dependency's upgrade.
        "-o",
        f"DPkg::Lock::Timeout={int(min(timeout, 300))}",
        "-o",
        "Dpkg::Options::=--force-confdef",
        "-o",
        "Dpkg::Options::=--force-confold",
        spec,
    ]
    try:
        res = run_subprocess(argv, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return f"apt-get did not finish within {timeout:g} s."
    except OSError as exc:
        return f"cannot run apt-get: {exc}."
    if res.returncode == 0:
        return None
    return failure_reason(res.stdout + "\n" + res.stderr, res.returncode)


def _apt_update(apt_get: str, env: dict[str, str], timeout: float) -> str | None:
    """None on success, else why ``apt-get update`` failed."""
    try:
        res = run_subprocess([apt_get, "update", "-q"], timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return f"apt-get update did not finish within {timeout:g} s"
    except OSError as exc:
        return f"cannot run apt-get update: {exc}"
    if res.returncode == 0:
        return None
    reason = failure_reason(res.stdout + "\n" + res.stderr, res.returncode)
    log.warning("apt-get update failed: %s", reason)
    return reason
