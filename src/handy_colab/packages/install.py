"""The config's extra packages in one call: Python packages (pip.py), then OS ones (apt.py).

Each package is checked first and installed only when missing, one at a time, so a bad
name is reported by name and the rest still go in; nothing here raises for a single
package. Progress goes to the caller's ``Reporter`` (progress.py): a bar over all the
packages whose live line says the step under way, and a line per result. Every line is
redacted and logged before the caller sees it.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..progress import ProgressArg, as_reporter
from .apt import install_os
from .common import PackageResult, Steps
from .pip import install_python


def install_packages(
    python_packages: Sequence[str],
    os_packages: Sequence[str],
    *,
    python: str,
    progress: ProgressArg = None,
    timeout: float = 900.0,
) -> list[PackageResult]:
    """Install what is missing of ``python_packages`` (into ``python``) and ``os_packages``.

    Returns one result per entry, in order (Python packages first). ``progress``: a
    ``Reporter``, or a callable that gets one human line per step (as it always did);
    ``timeout`` applies to each package's install.
    """
    reporter = as_reporter(progress)
    total = len(python_packages) + len(os_packages)
    results: list[PackageResult] = []
    if not total:
        return results
    bar = reporter.bar("extra packages", total, "pkg")
    try:
        steps = Steps(reporter, bar)
        if python_packages:
            results += install_python(python_packages, python, steps, timeout)
        if os_packages:
            results += install_os(os_packages, steps, timeout)
    finally:
        bar.close()
    return results
