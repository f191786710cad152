"""The ``frp`` section of user_config.json (the frp route's settings), and the seed's format
read the way the seed's FRPTunnel read it.

Secrets (the frps token, the stcp/xtcp secret) live in files of the config folder and are
only ever named here, never read into the config object.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..configfields import Fields
from ..errors import ConfigError
from ..fsutil import atomic_write

FRP_FIELDS = {
    "server",
    "port",
    "token_file",
    "ca_file",
    "server_name",
    "mode",
    "remote_port",
    "secret_file",
    "proxy_name",
    "stun_server",
    "binary",
    "download_url",
}
DEFAULT_TOKEN_FILE = "frp_token"
DEFAULT_SECRET_FILE = "frp_secret"
FrpMode = Literal["public", "private", "p2p"]
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_HOSTPORT_RE = re.compile(r"^[A-Za-z0-9._-]{1,253}:[0-9]{1,5}$")


@dataclass(frozen=True)
class FrpConfig:
    server: str  # frps address as the runtime reaches it
    port: int  # frps bindPort
    mode: FrpMode
    proxy_name: str
    remote_port: int = 0  # public mode: the port frps exposes
    token_file: Path | None = None  # frps auth.token
    ca_file: Path | None = None  # pins frps's certificate (its CA, or itself)
    server_name: str | None = None  # the name frps's certificate is checked against
    secret_file: Path | None = None  # private/p2p: the stcp/xtcp secretKey
    stun_server: str = "stun.easyvoip.com:3478"
    binary: str | None = None
    download_url: str | None = None
    from_seed: bool = False  # the seed's format: no token, no pin (TLS unverified, warned)

    @property
    def verified(self) -> bool:
        return self.ca_file is not None


def _folder_file(f: Fields, folder: Path, key: str, default: str | None) -> Path | None:
    """A file of the config folder named by ``key`` (or ``default`` when that exists)."""
    name = f.str_(key)
    if name is None:
        if default is not None and (folder / default).is_file():
            return folder / default
        return None
    path = folder / name
    if not path.is_file():
        raise f.error(key, f"names {path}, which does not exist", "put that file in the folder")
    return path


def ensure_secret(path: Path) -> Path:
    """The stcp/xtcp secret: made once (0600) in the config folder, where the laptop's
    `connect` finds it too."""
    if not path.exists():
        try:
            atomic_write(path, secrets.token_urlsafe(32) + "\n", 0o600)
        except OSError as exc:
            raise ConfigError(
                f"{path}: cannot write the frp secret ({exc.strerror}). Fix: make the folder "
                f"writable for the first `up`, or put a secret line in that file yourself"
            ) from None
    return path


def parse_frp(folder: Path, top: Fields, run_name: str) -> FrpConfig | None:
    if top.data.get("frp") is None:
        return None
    f = top.sub("frp", FRP_FIELDS)
    server = f.str_("server")
    if server is None:
        raise f.error(
            "server", "is missing", 'set the frps address, e.g. "server": "vps.example.org"'
        )
    mode = f.str_("mode", "public")
    if mode not in ("public", "private", "p2p"):
        raise f.error(
            "mode",
            f"'{mode}' is not an frp mode",
            'use "public" (tcp), "private" (stcp) or "p2p" (xtcp, stcp as fallback)',
        )
    remote_port = f.port("remote_port") or 0
    if mode == "public" and not remote_port:
        raise f.error(
            "remote_port",
            "is missing (public mode)",
            'set the port frps exposes for SSH, e.g. "remote_port": 6022 (or use mode private)',
        )
    proxy_name = f.str_("proxy_name", f"{run_name}-ssh") or f"{run_name}-ssh"
    if not _NAME_RE.match(proxy_name):
        raise f.error(
            "proxy_name",
            f"'{proxy_name}' is not a valid proxy name",
            "use letters, digits, '.', '_' or '-'",
        )
    stun = f.str_("stun_server", "stun.easyvoip.com:3478") or ""
    if not _HOSTPORT_RE.match(stun):
        raise f.error("stun_server", f"'{stun}' is not HOST:PORT", 'e.g. "stun.l.google.com:19302"')
    ca_file = _folder_file(f, folder, "ca_file", None)
    if ca_file is None:
        # frpc would accept any certificate: only the seed's format (no such field) may do so.
        raise f.error(
            "ca_file",
            "is missing, so frps's certificate could not be verified",
            "put frps's CA certificate (frps-setup's frps_ca.pem, or frps's own self-signed "
            'certificate) in the folder and name it, e.g. "ca_file": "frps_ca.pem"',
        )
    secret_file = None
    if mode != "public":
        named = f.str_("secret_file")
        secret_file = folder / (named or DEFAULT_SECRET_FILE)
    return FrpConfig(
        server=server,
        port=f.port("port", 7000) or 7000,
        mode=mode,  # type: ignore[arg-type]
        proxy_name=proxy_name,
        remote_port=remote_port,
        token_file=_folder_file(f, folder, "token_file", DEFAULT_TOKEN_FILE),
        ca_file=ca_file,
        server_name=f.str_("server_name"),
        secret_file=secret_file,
        stun_server=stun,
        binary=f.str_("binary"),
        download_url=f.str_("download_url"),
    )


def frp_from_seed(seed: Fields, run_name: str) -> FrpConfig | None:
    """The seed's FRPTunnel read ``tunnel_options`` as: service_url = frps's address,
    service_port = its bind port, local_port = the remote port exposing the runtime's SSH;
    no token and no certificate pin."""
    server = seed.str_("service_url")
    port = seed.port("service_port")
    remote = seed.port("local_port")
    if server is None or port is None or remote is None:
        return None
    return FrpConfig(
        server=server,
        port=port,
        mode="public",
        proxy_name=f"{run_name}-ssh",
        remote_port=remote,
        from_seed=True,
    )
