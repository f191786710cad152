"""The names of the parts a user picks between, with no dependency at all.

The command line offers them before it has read anything (`up --server`, `up --tunnel`), and
importing the whole config model for that would put its imports in front of every command.
"""

from __future__ import annotations

from typing import Literal

# Which implementation runs a part: "auto" picks OpenSSH where it is usable, else embedded.
Backend = Literal["auto", "openssh", "embedded"]
BACKENDS = ("auto", "openssh", "embedded")
# How the laptop reaches the runtime: an SSH relay (`ssh -R`), Cloudflare's edge, or frps.
Route = Literal["relay", "cloudflared", "frp"]
ROUTES = ("relay", "cloudflared", "frp")
# What `up --tunnel` takes: the relay route's two clients, or another route.
TUNNEL_CHOICES = ("auto", "openssh", "embedded", "cloudflared", "frp")
