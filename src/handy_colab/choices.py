"""The names of the parts a user picks between, with no dependency at all.

The command line offers them before it has read anything (`up --server`, `up --route`), and
importing the whole config model for that would put its imports in front of every command.
"""

from __future__ import annotations

import re
from typing import Literal

# The folder's config file, and the name the seed's README told users to upload it under.
CONFIG_FILE = "user_config.json"
SEED_README_CONFIG_FILE = "mapping_config.json"
# A plain name (an frp proxy's): letters, digits, '.', '_', '-'.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
# A runtime's name: a Host alias in ssh_config and a file name. No dot (nor colon), so it
# never looks like a host name or an IP address: a descriptor cannot name `github.com`.
RUNTIME_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")
RUNTIME_NAME_RULE = "a letter, then letters, digits, '_' or '-' (at most 63; no dot)"


def runtime_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a runtime's name (None: it can)."""
    if not RUNTIME_NAME_RE.match(name):
        return f"must be {RUNTIME_NAME_RULE}"
    if name.lower() == "localhost":
        return "must not be localhost"
    if name.lower().endswith("-relay"):
        return "must not end in -relay (the relay's own alias is NAME-relay)"
    return None


# A relay socket path: it lands in ssh_config (ProxyCommand), sshd_config (PermitOpen [..]) and
# a quoted authorized_keys option, so only characters none of them would split or interpret.
SOCKET_PATH_RE = re.compile(r"^/[A-Za-z0-9._/+-]{1,200}$")
# What `relay-setup` accepts: private mode's account lives in its own root, whose one
# writable folder is /tmp, so its socket is a file there.
RELAY_SETUP_SOCKET_RE = re.compile(r"^/tmp/[A-Za-z0-9._+-]{1,100}$")

# Which implementation runs a part: "auto" picks OpenSSH where it is usable, else embedded.
Backend = Literal["auto", "openssh", "embedded"]
BACKENDS = ("auto", "openssh", "embedded")
# How the laptop reaches the runtime: an SSH relay (`ssh -R`), Cloudflare's edge, or frps.
Route = Literal["relay", "cloudflared", "frp"]
ROUTES = ("relay", "cloudflared", "frp")
# What the deprecated `up --tunnel` takes: the relay route's clients, or another route.
TUNNEL_CHOICES = ("auto", "openssh", "embedded", "cloudflared", "frp")
# What runtime.up's ``tunnel`` (and the supervisor's --tunnel) take: those, and "relay" for
# `up --route relay` without --relay-client (the relay route, with the config's client).
TUNNEL_REQUESTS = (*TUNNEL_CHOICES, "relay")


def suggest_runtime_name(name: str) -> str:
    """A valid name close to ``name``, for the fix of an error message."""
    text = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-_")[:63] or "colab"
    text = text if text[0].isalpha() else f"rt-{text}"[:63]
    return text if runtime_name_problem(text) is None else "colab"
