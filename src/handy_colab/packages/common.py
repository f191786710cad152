"""What pip and apt-get installs share: the result type, progress, and reading their verdicts.

Both halves (pip.py, apt.py) report one ``PackageResult`` per config entry through the same
``Steps`` (whole lines, the step under way, a bar over the packages), and both tools end a
failure the same way (a last ``ERROR:``/``E:`` line), so the types and the output reading
live here, once.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Literal

from ..progress import Bar, Reporter, Say

log = logging.getLogger(__name__)

PackageKind = Literal["python", "os"]
Status = Literal["present", "installed", "failed"]
Progress = Say  # kept: packages exports it (a callable that takes whole lines)


@dataclass(frozen=True)
class PackageResult:
    """The outcome for one entry of ``python_packages`` or ``os_packages``."""

    kind: PackageKind
    spec: str  # exactly as written in the config
    status: Status
    detail: str  # one line: the version, or for a failure the reason and a fix

    @property
    def failure_line(self) -> str:
        """The warning `up` gives for a failed entry (the notebook's block matches on it)."""
        return f"{self.kind} package {self.spec} failed: {self.detail}"


# user:password@ or token@ inside a URL: never on a command line or in a log line.
CREDENTIALS = re.compile(r"(://)[^/@\s]+@")
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


def redact(text: str) -> str:
    """``text`` with any credentials inside URLs replaced by ``****``."""
    return CREDENTIALS.sub(r"\1****@", text)


def one_line(text: str, limit: int = 300) -> str:
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
            return one_line(hits[-1])
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("error:"):
            reason = lines[i].strip()
            after = lines[i + 1].strip() if i + 1 < len(lines) else ""
            if after.startswith(_CROSS):
                reason += f" ({after.lstrip(_CROSS + ' ').strip()})"
            return one_line(reason)
    for line in reversed(lines):
        text = line.strip().lstrip(_DECORATION).strip()
        if text and not _NOISE.search(text):
            return one_line(text)
    return f"exit code {returncode}" if returncode is not None else "no output"


def report(say: Progress, r: PackageResult) -> PackageResult:
    """Say ``r`` as one progress line; return it."""
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


class Steps:
    """Where pip.py and apt.py report, for the caller's ``Reporter``: whole lines (``say``),
    the step under way (``step``: a live line on a bar, a line in a log) and each result
    (``done``: its line, and the bar over the packages moves). Everything is redacted and
    logged first."""

    def __init__(self, reporter: Reporter, bar: Bar) -> None:
        self._reporter, self._bar, self._count = reporter, bar, 0

    def say(self, line: str) -> None:
        line = redact(line)
        log.info("%s", line)
        self._reporter.say(line)

    def step(self, line: str) -> None:
        line = redact(line)
        log.info("%s", line)
        self._bar.step(line)

    def done(self, r: PackageResult) -> PackageResult:
        report(self.say, r)
        self._count += 1
        self._bar.update(self._count)
        return r
