"""Kaggle notebooks: how a Kaggle kernel is recognised, and its working folder.

Kaggle's image is built on Colab's, so detection.py asks this module before colab.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from .base import PlatformName

NAME: PlatformName = "kaggle"
LABEL = "Kaggle"

# Set by Kaggle's kernel runner (kagglehub keys on KAGGLE_KERNEL_RUN_TYPE). Deliberately not
# the whole KAGGLE_* prefix: KAGGLE_USERNAME/KAGGLE_KEY are the Kaggle CLI's credentials and
# sit in many a laptop's environment.
_VARS = (
    "KAGGLE_KERNEL_RUN_TYPE",
    "KAGGLE_URL_BASE",
    "KAGGLE_DATA_PROXY_TOKEN",
    "KAGGLE_DATA_PROXY_URL",
    "KAGGLE_USER_SECRETS_TOKEN",
)


def workdir(root: Path) -> Path:
    return root / "kaggle" / "working"


def detected(env: Mapping[str, str], root: Path) -> bool:
    return any(env.get(var) for var in _VARS) or workdir(root).is_dir()
