"""SageMaker Studio Lab: how its JupyterLab is recognised, and its project folder.

Studio Lab is inferred, not documented as an API: its JupyterLab runs as the user
"studio-lab-user" with HOME=/home/studio-lab-user, the persistent project directory, and
that is what other tools check for (amplpy, for one). No marker variable is documented.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from .base import PlatformName

NAME: PlatformName = "sagemaker-studio-lab"
LABEL = "SageMaker Studio Lab"

_USER = "studio-lab-user"


def workdir(root: Path) -> Path:
    return root / "home" / _USER


def detected(env: Mapping[str, str], root: Path) -> bool:
    return (
        env.get("HOME", "").rstrip("/") == f"/home/{_USER}"
        or _USER in (env.get("USER"), env.get("LOGNAME"))
        or workdir(root).is_dir()
    )
