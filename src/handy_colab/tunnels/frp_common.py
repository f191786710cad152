"""What every frpc of handy-colab shares, the runtime's and the laptop's visitor alike: the
pinned frpc release, the lines that say how to reach and verify frps, and the secret files.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..binaries import Asset, BinarySpec, Installer
from ..errors import TunnelError
from .frp_config import FrpConfig

FRP_VERSION = "0.71.0"


def _archive(plat: str, digest: str) -> Asset:
    name = f"frp_{FRP_VERSION}_{plat.replace('-', '_')}"
    if plat.startswith("windows"):
        return Asset(f"{name}.zip", digest, f"{name}/frpc.exe")
    return Asset(f"{name}.tar.gz", digest, f"{name}/frpc")


# Pinned release: digests of the official archives, as two unrelated public projects pin them
# (docs/frp.md). linux for runtimes; macOS and Windows for the laptop's visitor too.
FRPC = BinarySpec(
    name="frpc",
    version=FRP_VERSION,
    base_url="https://github.com/fatedier/frp/releases/download",
    assets={
        plat: _archive(plat, digest)
        for plat, digest in {
            "linux-amd64": "84f27e39f11169f7adcef8e8b70c9329de17747b1f14dad9fb95eef5682ea716",
            "linux-arm64": "f33c293c275d8fc68c654b6fba8f10b2551d6463d09a9fc9cffb7227eae82266",
            "darwin-amd64": "1b1b4e2f1836e21e8733f1dddaacd4ed9ae67d7dbee39046b9d7b7eda6253637",
            "darwin-arm64": "45be02b186860d375ed49a8941ae9569628a54bf14e67fc36b29c98c99dabcc6",
            "windows-amd64": "9e5062e3e5cf07e67144a3a4acf175ef6a2486f3605dd6cf288bae34ab39819f",
            "windows-arm64": "b56a5c2a1a2a55d11bc27aeef6edabd39f3d194360ea66660cc27281b502cb1c",
        }.items()
    },
    url_env="HANDY_COLAB_FRP_URL",
    bin_env="HANDY_COLAB_FRPC_BINARY",
    config_hint="frp",
    tag_prefix="v",
)


def installer(settings: FrpConfig) -> Installer:
    return Installer(FRPC, explicit=settings.binary, base_url=settings.download_url)


def toml_str(value: str) -> str:
    """A TOML basic string (JSON's escaping is valid TOML for these values)."""
    return json.dumps(value)


def common_lines(settings: FrpConfig, token: str | None, ca_copy: str | None) -> list[str]:
    """What every frpc of this route says about frps: address, token, TLS and its pin."""
    lines = [
        f"serverAddr = {toml_str(settings.server)}",
        f"serverPort = {settings.port}",
        # Keep retrying a failed login (frpc's default exits): the supervisor decides.
        "loginFailExit = false",
        "transport.tls.enable = true",
        'log.to = "console"',
        'log.level = "info"',
        "log.disablePrintColor = true",
    ]
    if token:
        lines.append(f"auth.token = {toml_str(token)}")
    if ca_copy:
        lines.append(f"transport.tls.trustedCaFile = {toml_str(ca_copy)}")
        lines.append(
            f"transport.tls.serverName = {toml_str(settings.server_name or settings.server)}"
        )
    return lines


def read_secret(path: Path, what: str) -> str:
    try:
        value: str = path.read_text().strip()
    except OSError as exc:
        raise TunnelError(
            f"{path}: cannot read the frp {what} ({exc.strerror}). Fix: check the file",
            permanent=True,
        ) from None
    if not value or any(c in value for c in '\r\n\0"\\'):
        raise TunnelError(
            f"{path}: the frp {what} must be one line without quotes. Fix: rewrite the file",
            permanent=True,
        )
    return value
