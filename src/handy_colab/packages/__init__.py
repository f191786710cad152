"""The config's extra packages: ``python_packages`` (pip) and ``os_packages`` (apt-get).

The parts, each about one thing:

- install.py   ``install_packages()``: both kinds, in order, with progress (a bar, lines)
- common.py    ``PackageResult``, ``Steps`` (progress), and reading pip's/apt-get's verdict
- presence.py  which Python specs the target interpreter already satisfies
- pip.py       installing the missing Python packages
- apt.py       installing the missing OS packages
"""

from __future__ import annotations

from .common import PackageKind, PackageResult, Progress, Status, failure_reason, redact
from .install import install_packages
from .presence import Presence, python_presence

__all__ = [
    "PackageKind",
    "PackageResult",
    "Presence",
    "Progress",
    "Status",
    "failure_reason",
    "install_packages",
    "python_presence",
    "redact",
]
