"""The config's ``os_packages``: each one checked with dpkg-query, installed with apt-get.

Installing needs root and apt-get; without them a missing package fails with the fix, a
present one is still reported present. ``apt-get update`` runs at most once, and only when
an install says the package lists are stale.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from collections.abc import Sequence

from ..proc import run_subprocess
from .common import PackageResult, Steps, failure_reason

log = logging.getLogger(__name__)

# apt-get's answers that fresh package lists may fix.
_STALE_LISTS = re.compile(
    r"Unable to locate package|has no installation candidate|maybe run apt-get update"
)
# Debian package names, optionally :arch and =version or /release; no options, no spaces.
_DEB_SPEC = re.compile(r"^([A-Za-z0-9][A-Za-z0-9+.\-]*(?::[A-Za-z0-9\-]+)?)(?:=(\S+)|/(\S+))?$")
_INSTALLED_STATES = {"installed", "triggers-pending", "triggers-awaiting"}


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


def install_os(specs: Sequence[str], steps: Steps, timeout: float) -> list[PackageResult]:
    """One result per spec, in order; each missing one is installed by its own apt-get run."""
    n = len(specs)
    steps.say(f"checking {n} os package{'s' if n != 1 else ''}")
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
            out.append(steps.done(PackageResult("os", spec, "failed", detail)))
            continue
        name, want_version = m.group(1), m.group(2)
        have = _dpkg_version(dpkg_query, name) if dpkg_query else None
        if have is not None and want_version in (None, have):
            out.append(steps.done(PackageResult("os", spec, "present", have)))
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
            out.append(steps.done(PackageResult("os", spec, "failed", detail)))
            continue
        steps.step(f"os package {spec}: installing...")
        reason = _apt_install(apt_get, spec, env, timeout)
        if reason is not None and not update_ran and _STALE_LISTS.search(reason):
            steps.step("os packages: refreshing package lists (apt-get update)...")
            update_ran = True
            update_error = _apt_update(apt_get, env, timeout)
            reason = _apt_install(apt_get, spec, env, timeout)
        if reason is not None:
            if update_error is not None:
                reason += f" (apt-get update also failed: {update_error})"
            detail = reason + _os_fix(name)
            out.append(steps.done(PackageResult("os", spec, "failed", detail)))
            continue
        version = _dpkg_version(dpkg_query, name) or "done"
        out.append(steps.done(PackageResult("os", spec, "installed", version)))
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
