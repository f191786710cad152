"""The ``cloudflared`` section of user_config.json (the cloudflared route's settings).

Kept apart from `tunnels.cloudflared` so that reading a config never imports the route's
runtime code, and apart from `config` so the relay's and this route's fields stay separate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..configfields import Fields

CLOUDFLARED_FIELDS = {"hostname", "token_file", "protocol", "binary", "download_url", "extra_args"}
# The token file looked for when a hostname is set and no token_file is named.
DEFAULT_TOKEN_FILE = "cloudflared_token"
Protocol = Literal["auto", "quic", "http2"]
# A DNS name: it lands in ssh config (ProxyCommand) and a wss:// URL, so nothing else.
HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]$"
)
# Flags handy-colab sets itself: passing them again would take the tunnel out of its hands
# (another origin, another config file, a token on the command line, no metrics to watch).
_OWN_FLAGS = {
    "--url",
    "--config",
    "--metrics",
    "--token",
    "--token-file",
    "--protocol",
    "--no-autoupdate",
    "--autoupdate-freq",
    "--loglevel",
    "--logfile",
    "--log-directory",
    "--hello-world",
    "--name",
    "--hostname",
    "--credentials-file",
    "--cred-file",
    "--origincert",
    "--pidfile",
}


@dataclass(frozen=True)
class CloudflaredConfig:
    hostname: str | None = None  # a named tunnel's fixed hostname; None = quick tunnel
    token_file: Path | None = None  # named tunnel: the file holding its token (never read here)
    protocol: Protocol = "auto"  # auto = QUIC, and HTTP/2 once QUIC is seen blocked
    binary: str | None = None  # an explicit cloudflared to run
    download_url: str | None = None  # a mirror of the release downloads
    extra_args: tuple[str, ...] = ()

    @property
    def named(self) -> bool:
        return self.hostname is not None


def valid_hostname(value: str) -> str | None:
    """The lower-cased DNS name, or None when ``value`` is not one."""
    value = value.strip().lower().rstrip(".")
    return value if HOSTNAME_RE.match(value) else None


def parse_cloudflared(folder: Path, top: Fields) -> CloudflaredConfig:
    f = top.sub("cloudflared", CLOUDFLARED_FIELDS)
    hostname = f.str_("hostname")
    if hostname is not None:
        checked = valid_hostname(hostname)
        if checked is None:
            raise f.error(
                "hostname",
                f"'{hostname}' is not a DNS host name",
                'write the named tunnel\'s public hostname, e.g. "colab.example.com"',
            )
        hostname = checked
    token_name = f.str_("token_file")
    token_file = None
    if token_name is not None or hostname is not None:
        token_file = folder / (token_name or DEFAULT_TOKEN_FILE)
        if not token_file.is_file():
            raise f.error(
                "token_file" if token_name else "hostname",
                f"needs the named tunnel's token, but {token_file} does not exist",
                f"save the token from `cloudflared tunnel token NAME` (or the dashboard) as "
                f"{token_file.name} in the folder, or leave out hostname for a quick tunnel",
            )
        if hostname is None:
            raise f.error(
                "hostname",
                "is missing (a token_file is set)",
                "set the hostname the named tunnel serves, or remove token_file for a quick tunnel",
            )
    protocol = f.str_("protocol", "auto")
    if protocol not in ("auto", "quic", "http2"):
        raise f.error(
            "protocol",
            f"'{protocol}' is not a cloudflared protocol",
            'use "auto" (QUIC, then HTTP/2 if UDP is blocked), "quic" or "http2"',
        )
    download_url = f.str_("download_url")
    if download_url is not None and not re.match(r"^https?://[^\s]+$", download_url):
        raise f.error(
            "download_url",
            f"'{download_url}' is not an http(s) URL",
            'give the mirror\'s base, e.g. "https://mirror.example/cloudflared/releases/download"',
        )
    extra = f.str_list("extra_args")
    for i, arg in enumerate(extra):
        name = arg.split("=", 1)[0]
        if any(c in arg for c in "\r\n\0") or name in _OWN_FLAGS:
            raise f.error(
                f"extra_args[{i}]",
                f"'{arg[:40]}' cannot be passed: handy-colab sets {name} itself",
                "leave it out (`handy-colab help cloudflared` says what each field sets)",
            )
    return CloudflaredConfig(
        hostname=hostname,
        token_file=token_file,
        protocol=protocol,  # type: ignore[arg-type]
        binary=f.str_("binary"),
        download_url=download_url,
        extra_args=tuple(extra),
    )
