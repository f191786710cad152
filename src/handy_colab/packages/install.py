"""The config's extra packages in one call: Python packages (pip.py), then OS ones (apt.py).

Each package is checked first and installed only when missing, one at a time, so a bad
name is reported by name and the rest still go in; nothing here raises for a single
package. Every progress line is redacted and logged before the caller sees it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from .apt import install_os
from .common import PackageResult, Progress, redact
from .pip import install_python

log = logging.getLogger(__name__)


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
        results += install_python(python_packages, python, say, timeout)
    if os_packages:
        results += install_os(os_packages, say, timeout)
    return results
