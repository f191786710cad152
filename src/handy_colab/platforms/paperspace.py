"""Paperspace Gradient notebooks: how one is recognised, and its notebook folder."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from .base import PlatformName

NAME: PlatformName = "paperspace"
LABEL = "Paperspace Gradient"

# Gradient notebooks export PAPERSPACE_* (PAPERSPACE_NOTEBOOK_REPO_ID, PAPERSPACE_CLUSTER_ID,
# ...). PAPERSPACE_API_KEY is the gradient CLI's credential, found on laptops too.
_PREFIX = "PAPERSPACE_"
_NOT_MARKERS = {"PAPERSPACE_API_KEY"}


def workdir(root: Path) -> Path:
    return root / "notebooks"


def detected(env: Mapping[str, str], root: Path) -> bool:
    return any(
        var.startswith(_PREFIX) and var not in _NOT_MARKERS and value for var, value in env.items()
    )
