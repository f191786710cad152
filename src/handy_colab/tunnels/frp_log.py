"""frpc's own words (its log lines, its admin API's proxy errors) as one-line errors.

Messages are matched by their text, not frp's ``file:line`` prefixes, which move between
versions.
"""

from __future__ import annotations

import re

from ..errors import TunnelError
from .frp_config import FrpConfig


def _detail(text: str, pattern: str) -> str:
    m = re.search(pattern, text)
    return m.group(1).strip()[:160] if m else ""


def classify(lines: list[str], s: FrpConfig) -> TunnelError | None:
    """None when the lines say nothing this knows."""
    text = "\n".join(lines)
    where = f"frps {s.server}:{s.port}"
    if "token in login doesn't match" in text or "authorization failed" in text.lower():
        source = str(s.token_file) if s.token_file else "no token (frp.token_file)"
        return TunnelError(
            f"{where} refused the token ({source}). Fix: copy frps's auth.token into that file",
            permanent=True,
        )
    if "certificate signed by unknown authority" in text or "x509:" in text:
        detail = _detail(text, r"(x509: [^\"\n]*)")
        return TunnelError(
            f"{where} presented a certificate that the pinned CA ({s.ca_file}) does not vouch "
            f"for ({detail}); refusing to connect. Fix: if frps's certificate really changed, "
            f"put its CA in {s.ca_file} (see `handy-colab frps-setup`)",
            permanent=True,
        )
    if "port not allowed" in text:
        return TunnelError(
            f"{where} does not allow remote port {s.remote_port}. Fix: use a port in frps's "
            f"allowPorts, or add it there",
            permanent=True,
        )
    if "port already used" in text or "port unavailable" in text:
        return TunnelError(
            f"{where}: remote port {s.remote_port} is taken. Fix: stop whatever holds it on "
            f"the frps host, or choose another frp.remote_port"
        )
    if "already exists" in text:
        # A replaced runtime: frps still holds the old session's proxy until it times out.
        return TunnelError(
            f"{where} still holds proxy {s.proxy_name} of an earlier session (proxy already "
            f"exists). Fix: wait for frps to drop it; the supervisor retries"
        )
    m = re.search(r"connect to server error: (.*)", text)
    if m:
        return TunnelError(
            f"{where} is unreachable ({m.group(1).strip()[:160]}). Fix: check frp.server and "
            f"frp.port, and that frps runs and its port is open"
        )
    return None
