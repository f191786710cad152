"""Which platform this process runs on: the adapters' markers asked in a fixed order.

Detection looks at environment variables first, then at well-known paths, so a runtime
started with a scrubbed environment (a service manager, ``env -i``) is still recognised.
The order is the point of this module: several platforms share markers (see
``_detect_name``), so each adapter says what it looks like and this decides between them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from . import colab, kaggle, paperspace, studio_lab
from .base import GENERIC, GENERIC_LABEL, Platform, PlatformName, current_user

log = logging.getLogger(__name__)

_LABELS: dict[PlatformName, str] = {
    colab.NAME: colab.LABEL,
    kaggle.NAME: kaggle.LABEL,
    paperspace.NAME: paperspace.LABEL,
    studio_lab.NAME: studio_lab.LABEL,
    GENERIC: GENERIC_LABEL,
}
# The platform's notebook folder under ``root``; the generic platform has none.
_WORKDIRS: dict[PlatformName, Callable[[Path], Path]] = {
    colab.NAME: colab.workdir,
    kaggle.NAME: kaggle.workdir,
    paperspace.NAME: paperspace.workdir,
    studio_lab.NAME: studio_lab.workdir,
}


def detect(environ: Mapping[str, str] | None = None, root: Path = Path("/")) -> Platform:
    """Which platform this process runs on, with that platform's defaults.

    ``root`` prefixes every well-known path, so tests can use a temporary tree.
    """
    env = os.environ if environ is None else environ
    name = _detect_name(env, root)
    workdir = _WORKDIRS[name](root) if name in _WORKDIRS else None
    platform = Platform(name=name, label=_LABELS[name], workdir=workdir, user=current_user(env))
    log.debug("platform: %s (workdir %s, user %s)", platform.label, workdir, platform.user)
    return platform


def _detect_name(env: Mapping[str, str], root: Path) -> PlatformName:
    # Kaggle comes before Colab: Kaggle's notebook image is built on Colab's, so COLAB_* and
    # google.colab are present there too (kagglehub changed its Colab check for this reason),
    # and no Kaggle marker is known on Colab. Among the rest, Colab wins.
    if kaggle.detected(env, root):
        return kaggle.NAME
    if colab.detected(env):
        return colab.NAME
    if paperspace.detected(env, root):
        return paperspace.NAME
    if studio_lab.detected(env, root):
        return studio_lab.NAME
    # The module alone is the weakest signal (anyone may `pip install google-colab`), so it
    # only decides when nothing more specific matched: a Colab kernel whose environment was
    # scrubbed.
    if colab.module_present():
        return colab.NAME
    return GENERIC
