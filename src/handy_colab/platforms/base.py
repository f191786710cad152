"""What every platform adapter is: a name, a label, a notebook folder and the session user.

``Platform`` is the one type the rest of handy-colab sees (notebook.py, runtime.py); the
adapters (colab.py, kaggle.py, ...) only supply its values, and detection.py picks one.
Plain Linux (a VPS, an HPC node, a laptop) is the generic platform: no notebook folder.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

PlatformName = Literal["colab", "kaggle", "paperspace", "sagemaker-studio-lab", "linux"]

GENERIC: PlatformName = "linux"
GENERIC_LABEL = "Linux"


@dataclass(frozen=True)
class Platform:
    name: PlatformName
    label: str
    workdir: Path | None  # the platform's notebook directory; None on plain Linux
    user: str  # the user SSH sessions log in as: whoever runs this process

    @property
    def python(self) -> str:
        """The interpreter sessions should use: the one running handy-colab.

        That is the environment ``pip install handy-colab`` went into, normally the notebook
        kernel's, so packages installed from the notebook import in an SSH session too.
        """
        return sys.executable

    def default_workdir(self, cwd: Path) -> Path:
        """Where SSH sessions start when the config does not say.

        The caller's cwd is what the user sees in the notebook, except when it is ``/`` or
        gone: that is a service manager's cwd, not a choice, so fall back to the platform's
        notebook directory, then to the home directory.
        """
        if cwd != Path("/") and cwd.is_dir():
            return cwd
        if self.workdir is not None and self.workdir.is_dir():
            return self.workdir
        return Path.home()


def current_user(env: Mapping[str, str]) -> str:
    """Who runs this process, even where the passwd database does not know the uid."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        # A container may run under a uid with no passwd entry and no USER/LOGNAME.
        return env.get("USER") or str(os.getuid())
