"""cloudflared's own words (its log lines) turned into one-line errors with the fix.

The lines are cloudflared 2026.3.0's, as recorded from the real binary (tests/e2e and
tests/unit/test_cloudflared.py hold them).
"""

from __future__ import annotations

import re

from ..errors import TunnelError


def last_error(lines: list[str]) -> str:
    errs = [ln for ln in lines if " ERR " in ln or ln.startswith(("failed", "error"))]
    return errs[-1] if errs else next((ln for ln in reversed(lines) if ln.strip()), "no output")


def classify(lines: list[str], token_file: str) -> TunnelError | None:
    """cloudflared's last words as one line with the fix; None when they say nothing known."""
    text = "\n".join(lines)
    if "error code: 1015" in text or "429 Too Many Requests" in text:
        return TunnelError(
            "trycloudflare.com is rate-limiting new quick tunnels from this address (HTTP 429, "
            "Cloudflare error 1015). Fix: wait a few minutes and try again (a running tunnel "
            "retries by itself), or use a named tunnel (`handy-colab help cloudflared`)",
            retry_after=60.0,
        )
    m = re.search(r"failed to request quick Tunnel: (.*)", text)
    if m:
        return TunnelError(
            f"cannot reach the quick-tunnel service to get a tunnel ({short(m.group(1))}). "
            f"Fix: check the runtime's outbound HTTPS (api.trycloudflare.com)"
        )
    if "failed to parse quick Tunnel ID" in text or "failed to unmarshal quick Tunnel" in text:
        return TunnelError(
            "the quick-tunnel service answered without a tunnel. Fix: try again later, or use a "
            "named tunnel"
        )
    if "Tunnel token is not valid" in text or "Failed to read token file" in text:
        return TunnelError(
            f"the named tunnel's token ({token_file}) is not valid. Fix: save the token from "
            f"`cloudflared tunnel token NAME` (or the dashboard) in that file again",
            permanent=True,
        )
    if "Unauthorized" in text or "Register tunnel error from server side" in text:
        return TunnelError(
            "Cloudflare refused the tunnel's credentials. Fix: check the named tunnel still "
            "exists and its token is current",
            permanent=True,
        )
    edge = [
        ln
        for ln in lines
        if (" ERR " in ln or ln.startswith("failed")) and ("edge" in ln.lower() or "7844" in ln)
    ]
    if edge:
        return TunnelError(
            f"no Cloudflare edge is reachable from the runtime ({short(edge[-1])}). Fix: allow "
            f"outbound TCP and UDP port 7844"
        )
    return None


def short(line: str) -> str:
    """A log line without its timestamp and level, at most 200 characters."""
    line = re.sub(r"^\S+Z (INF|ERR|WRN|DBG) ", "", line.strip())
    return line[:200]
