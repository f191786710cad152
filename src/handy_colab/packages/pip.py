"""The config's ``python_packages``: each one checked, then installed with pip if missing.

pip runs without ``--upgrade`` or ``--force-reinstall``, one spec at a time, so whatever
the notebook already has that satisfies a dependency stays exactly as it is, and a bad
spec fails alone. A spec with credentials in a URL goes to pip in a private requirements
file, never on argv.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
from collections.abc import Sequence

from ..proc import run_subprocess
from .common import CREDENTIALS, PackageResult, Steps, failure_reason, one_line, redact
from .presence import Presence, python_presence

log = logging.getLogger(__name__)


def _python_fix(spec: str) -> str:
    return (
        f" Fix: check the name and version of {redact(spec)!r} in user_config.json field "
        "'python_packages' (or remove it), and that this runtime can reach the package index."
    )


def install_python(
    specs: Sequence[str], python: str, steps: Steps, timeout: float
) -> list[PackageResult]:
    """One result per spec, in order; each missing one is installed by its own pip run."""
    n = len(specs)
    steps.say(f"checking {n} python package{'s' if n != 1 else ''}")
    known = python_presence(python, specs)
    out: list[PackageResult] = []
    for idx, spec in enumerate(specs):
        p = known.get(spec, Presence(False, None, None))
        if not spec.strip() or spec.lstrip().startswith("-"):
            detail = "not a package spec (empty, or a pip option)." + _python_fix(spec)
            out.append(steps.done(PackageResult("python", spec, "failed", detail)))
            continue
        if p.present:
            detail = p.note or p.version or "present"
            out.append(steps.done(PackageResult("python", spec, "present", detail)))
            continue
        steps.step(f"python package {spec}: installing...")
        ok, reason, pip_said = _pip_install(python, spec, timeout)
        if not ok:
            detail = reason + _python_fix(spec)
            out.append(steps.done(PackageResult("python", spec, "failed", detail)))
            continue
        # What this install brought in may satisfy later entries too: ask about them now.
        pending = [
            s for s in specs[idx + 1 :] if not known.get(s, Presence(False, None, None)).present
        ]
        probe = spec if not CREDENTIALS.search(spec) else (p.name or "")
        after = python_presence(python, [s for s in [probe, *pending] if s])
        known.update({s: after[s] for s in pending if s in after})
        version = after[probe].version if probe in after else None
        detail = version or pip_said or "done"
        out.append(steps.done(PackageResult("python", spec, "installed", detail)))
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
        if CREDENTIALS.search(spec):
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
    return True, "", one_line(said[-1].removeprefix("Successfully installed ")) if said else ""
