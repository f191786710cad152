"""What to enter in PyCharm's "SSH interpreter" dialog, and the fixed local port of
`handy-colab forward` that it connects to for routes that need a ProxyCommand.
"""

from __future__ import annotations

import zlib

from ..descriptor import Descriptor


def forward_port(name: str) -> int:
    """`handy-colab forward NAME`'s default local port: fixed per alias, so PyCharm's saved
    settings stay right across sessions, and several runtimes rarely need --port."""
    return 20000 + zlib.crc32(name.lower().encode()) % 10000


def pycharm_settings(desc: Descriptor, identity: str | None = None) -> dict[str, str]:
    """What to enter in PyCharm's "SSH interpreter" dialog (no ~/.ssh/config needed: its
    legacy parser ignores Include).

    Routes with a ProxyCommand go through `handy-colab forward`, a local port that carries
    each connection to the runtime: "First" is that command.
    """
    alias = desc.name.lower()
    out: dict[str, str] = {}
    if desc.mode == "public":
        out["Host"], out["Port"] = desc.host, str(desc.port)
    else:
        port = forward_port(alias)
        out["First"] = f"handy-colab forward {alias} --port {port}"
        out["Host"], out["Port"] = "127.0.0.1", str(port)
    out["User"] = desc.user
    out["Key"] = identity or desc.identity_hint or "your private key for one of the authorized keys"
    out["Interpreter"] = desc.python
    out["Remote folder"] = desc.start_dir
    return out
