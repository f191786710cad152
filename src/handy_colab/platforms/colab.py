"""Google Colab: how a Colab kernel is recognised, its terms warning, and Google Drive.

Google's ``google.colab`` module only exists on Colab (and on Kaggle, whose image is built
on Colab's), so it is imported inside the functions that need it, never at module import:
``google_colab()`` is that one import, and tests replace it. Building a config folder from
Colab's secrets is colab_secrets.py.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config import CONFIG_FILE
from ..errors import PlatformError
from .base import PlatformName

log = logging.getLogger(__name__)

NAME: PlatformName = "colab"
LABEL = "Google Colab"

# Set by the Colab runtime for every kernel; COLAB_GPU is set (to 0) on CPU runtimes too.
_VARS = ("COLAB_RELEASE_TAG", "COLAB_GPU", "COLAB_BACKEND_VERSION")


def workdir(root: Path) -> Path:
    return root / "content"


def detected(env: Mapping[str, str]) -> bool:
    """Colab by its environment (the module alone is weaker: ``module_present``)."""
    return any(env.get(var) is not None for var in _VARS)


def module_present() -> bool:
    try:
        return importlib.util.find_spec("google.colab") is not None
    except (ImportError, ValueError):
        # find_spec imports the parent package "google"; a broken or absent one is "no".
        return False


# --------------------------------------------------------------------------- Colab's terms

COLAB_TERMS_WARNING = (
    "Note: Google Colab's terms disallow remote shells such as SSH (and remote desktops) on "
    "runtimes used free of charge; use paid compute (Colab Pro, Pro+ or Pay As You Go compute "
    "units) for SSH access. You are responsible for complying with Colab's terms "
    "(https://research.google.com/colaboratory/faq.html)."
)

_terms_lock = threading.Lock()
_terms_warned = False


def colab_terms_warning_once() -> str | None:
    """The terms warning the first time it is asked for in this process, None afterwards."""
    global _terms_warned
    with _terms_lock:
        if _terms_warned:
            return None
        _terms_warned = True
        return COLAB_TERMS_WARNING


# --------------------------------------------------------------------------- Google Drive

DRIVE_ROOT = Path("/content/drive")


def mount_drive_if_needed(
    folder: Path, *, drive_root: Path = DRIVE_ROOT, timeout_ms: int = 120000
) -> bool:
    """Mount Google Drive when ``folder`` lies on it and it is not mounted yet.

    Returns True when it mounted Drive. The paths are compared as written (made absolute but
    not resolved): before the mount nothing under ``drive_root`` exists to resolve, and a
    symlink into Drive is a choice of the user's that says nothing about where Drive is.
    """
    absolute = Path(os.path.abspath(folder))
    root = Path(os.path.abspath(drive_root))
    if not absolute.is_relative_to(root):
        return False
    # Colab mounts a FUSE file system at drive_root; MyDrive covers a mount the check misses.
    if os.path.ismount(root) or (root / "MyDrive").is_dir():
        return False
    try:
        drive = google_colab("drive")
    except Exception:
        # ImportError off Colab; anything else from a google-colab package installed where
        # no Colab kernel runs. Either way Colab's Drive service is not reachable from here.
        raise PlatformError(
            f"{folder}: lies under {root}, but Google Drive is not mounted and Colab's "
            f"google.colab module is not available here. Fix: run this in a Colab notebook, "
            f"or mount Drive yourself, or pass a local config folder"
        ) from None
    log.info("mounting Google Drive at %s for %s", root, folder)
    try:
        drive.mount(str(root), timeout_ms=timeout_ms)
    except Exception as exc:
        raise PlatformError(
            f"{folder}: mounting Google Drive at {root} failed: {_one_line(exc)}. Fix: mount "
            f"it in a notebook cell (from google.colab import drive; "
            f"drive.mount('{root}')), then run again"
        ) from None
    if not absolute.exists():
        raise PlatformError(
            f"{folder}: not found on your Drive. Fix: create that folder on Google Drive "
            f"with {CONFIG_FILE} and your keys in it, or pass the folder's right path "
            f"(Drive's top level is {root / 'MyDrive'})"
        )
    return True


# --------------------------------------------------------------------------- google.colab


def google_colab(submodule: str) -> Any:
    """``google.colab.<submodule>``; raises ImportError off Colab. Untyped, hence Any."""
    # Imported here, never at the top: off Colab the module is absent, and on Colab importing
    # it pulls in IPython, which the CLI on a laptop must not pay for.
    return importlib.import_module(f"google.colab.{submodule}")


def google_colab_or_error(submodule: str, purpose: str) -> Any:
    """``google_colab(submodule)``, or a PlatformError saying it is needed to ``purpose``."""
    try:
        return google_colab(submodule)
    except Exception:  # see mount_drive_if_needed
        raise PlatformError(
            f"cannot {purpose}: Colab's google.colab module is not available here. Fix: run "
            f"this in a Colab notebook, or pass a config folder instead"
        ) from None


def _one_line(exc: BaseException) -> str:
    for line in str(exc).splitlines():
        if line.strip():
            text = line.strip()
            return text if len(text) <= 200 else text[:197] + "..."
    return type(exc).__name__
