"""Platform adapters: which notebook service we run on, and thin wrappers of its own APIs.

The parts, each about one thing:

- base.py           ``Platform``, the type the rest of handy-colab sees; plain Linux
- detection.py      ``detect()``: the adapters' markers, asked in the order that matters
- colab.py          Google Colab: markers, the terms warning, mounting Google Drive
- colab_secrets.py  a config folder from Colab's secrets (colab_folder.py: its files)
- kaggle.py, paperspace.py, studio_lab.py  the other notebook services' markers and folders
"""

from __future__ import annotations

from .base import Platform, PlatformName
from .colab import COLAB_TERMS_WARNING, DRIVE_ROOT, colab_terms_warning_once, mount_drive_if_needed
from .colab_folder import PUBLIC_KEYS_FILE, RELAY_KEY_FILE, TOKEN_FILE
from .colab_secrets import (
    SECRET_CLOUDFLARED_TOKEN,
    SECRET_CONFIG,
    SECRET_PUBLIC_KEYS,
    SECRET_RELAY_KEY,
    folder_from_colab_secrets,
)
from .detection import detect

__all__ = [
    "COLAB_TERMS_WARNING",
    "DRIVE_ROOT",
    "PUBLIC_KEYS_FILE",
    "RELAY_KEY_FILE",
    "SECRET_CLOUDFLARED_TOKEN",
    "SECRET_CONFIG",
    "SECRET_PUBLIC_KEYS",
    "SECRET_RELAY_KEY",
    "TOKEN_FILE",
    "Platform",
    "PlatformName",
    "colab_terms_warning_once",
    "detect",
    "folder_from_colab_secrets",
    "mount_drive_if_needed",
]
