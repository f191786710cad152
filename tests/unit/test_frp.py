"""The frp route without a network: its config section and the seed's format, the descriptor
(format 2, no secrets, nothing injectable), the laptop's block (checked with `ssh -G`),
frpc's configs, and frpc's recorded failure lines as one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from handy_colab.client import sshconfig as S
from handy_colab.config import load_config
from handy_colab.connection import Descriptor, FrpEndpoint, build_descriptor
from handy_colab.errors import ConfigError
from handy_colab.tunnels import frp_visitor
from handy_colab.tunnels.frp_config import FrpConfig
from handy_colab.tunnels.frp_log import classify
from handy_colab.tunnels.frp_visitor import visitor_config
from tests.unit.conftest import SEED_CONFIG, KeyStore, ssh_g, write_config

SSH = shutil.which("ssh")


def _folder(tmp: Path, keys: KeyStore, config: Any, *private: str) -> Path:
    folder = tmp / "cfg"
    folder.mkdir()
    (folder / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    keys.copy_public("laptop", folder)
    for name in private:
        keys.copy_private(name, folder)
    write_config(folder, config)
    return folder


def _frp(**over: Any) -> dict[str, Any]:
    return {"frp": {"server": "vps.example.org", "remote_port": 6022, "ca_file": "ca.pem", **over}}


def test_frp_section_is_the_route(tmp_path: Path, keys: KeyStore) -> None:
    folder = _folder(tmp_path, keys, _frp())
    (folder / "frp_token").write_text("s3cr3t-value\n")
    cfg = load_config(folder)
    assert cfg.route == "frp" and cfg.relay is None
    s = cfg.frp_settings
    assert (s.server, s.port, s.mode, s.remote_port, s.proxy_name) == (
        "vps.example.org",
        7000,
        "public",
        6022,
        "colab-ssh",
    )
    assert s.token_file == folder / "frp_token" and s.verified
    assert "s3cr3t-value" not in repr(cfg)


def test_seed_format_read_as_frp_when_asked(tmp_path: Path, keys: KeyStore) -> None:
    folder = _folder(tmp_path, keys, SEED_CONFIG)  # no .pem: an frp user has none
    cfg = load_config(folder, route="frp")
    s = cfg.frp_settings
    assert (s.server, s.port, s.remote_port, s.from_seed) == (
        "user-12345.portmap.host",
        12345,
        12345,
        True,
    )
    assert cfg.forwards == ()  # local_port was frps's remote port, not a forward
    with pytest.raises(ConfigError, match="no private key"):
        load_config(folder)  # the seed's default route is still the relay


def test_mapping_config_json_is_accepted(tmp_path: Path, keys: KeyStore) -> None:
    folder = _folder(tmp_path, keys, _frp())
    (folder / "user_config.json").rename(folder / "mapping_config.json")
    assert load_config(folder).route == "frp"
    write_config(folder, {})
    cfg = load_config(folder)
    assert cfg.route == "cloudflared"
    assert cfg.notices == (
        f"{folder} holds user_config.json and mapping_config.json: using user_config.json",
    )


@pytest.mark.parametrize(
    ("frp", "needles"),
    [
        ({"server": "h", "mode": "udp"}, ["'frp.mode'", "'udp'"]),
        ({"server": "h"}, ["'frp.remote_port'", "missing"]),
        ({"remote_port": 6022}, ["'frp.server'", "missing"]),
        (
            {"server": "h", "remote_port": 6022, "ca_file": "nope.pem"},
            ["nope.pem", "does not exist"],
        ),
        ({"server": "h", "remote_port": 6022}, ["'frp.ca_file'", "could not be verified"]),
        (
            {"server": "h", "mode": "private", "proxy_name": "a b", "ca_file": "ca.pem"},
            ["'frp.proxy_name'"],
        ),
        (
            {"server": "h", "mode": "p2p", "stun_server": "stun", "ca_file": "ca.pem"},
            ["'frp.stun_server'"],
        ),
        (
            {"server": "h", "remote_port": 6022, "tokn_file": "x"},
            ["'frp.tokn_file'", "did you mean"],
        ),
    ],
)
def test_config_errors_are_one_line(
    tmp_path: Path, keys: KeyStore, frp: dict[str, Any], needles: list[str]
) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(_folder(tmp_path, keys, {"frp": frp}))
    msg = str(err.value)
    assert "\n" not in msg and "Fix:" in msg
    for n in needles:
        assert n in msg, msg


def _desc(tmp_path: Path, keys: KeyStore, mode: str) -> Descriptor:
    cfg = load_config(_folder(tmp_path, keys, _frp(mode=mode)))
    ep = FrpEndpoint(
        "vps.example.org",
        7000,
        mode,
        "colab-ssh",
        6022,
        "vps.example.org",
        True,
        "stun.example.org:3478",
    )
    return build_descriptor(cfg, keys.public_line("ed25519"), "/usr/bin/python3", "/content", ep)


@pytest.mark.parametrize("mode", ["public", "private", "p2p"])
def test_descriptor_round_trip_and_no_secrets(tmp_path: Path, keys: KeyStore, mode: str) -> None:
    desc = _desc(tmp_path, keys, mode)
    data = json.loads(desc.to_json())
    assert (data["route"], data["mode"], data["format"]) == ("frp", mode, 2)
    assert set(data["frp"]) == {"server", "port", "proxy", "server_name", "verified", "stun"}
    assert Descriptor.from_dict(data, "t") == desc
    assert Descriptor.from_paste(desc.to_paste()) == desc


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("frp", "server"), "vps\n    ProxyCommand x"),
        (("frp", "proxy"), "a b"),
        (("frp", "stun"), "x; y"),
        (("frp", "verified"), "yes"),
        (("mode",), "quick"),
    ],
)
def test_descriptor_refuses_injection(
    tmp_path: Path, keys: KeyStore, path: tuple[str, ...], value: Any
) -> None:
    data = json.loads(_desc(tmp_path, keys, "private").to_json())
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ConfigError, match="field"):
        Descriptor.from_dict(data, "crafted.json")


@pytest.mark.skipif(SSH is None, reason="OpenSSH client not installed")
@pytest.mark.parametrize("mode", ["public", "p2p"])
def test_host_block(tmp_path: Path, keys: KeyStore, mode: str) -> None:
    desc = _desc(tmp_path, keys, mode)
    block = S.render_host_blocks(desc, "/k/id", "/k/known", frp_profile="/k/colab.frp.json")
    cfg = tmp_path / "config"
    cfg.write_text(block)
    opts = ssh_g(cfg, "colab")
    assert opts["stricthostkeychecking"] == "true" and opts["hostkeyalias"] == "colab"
    if mode == "public":
        assert (opts["hostname"], opts["port"]) == ("vps.example.org", "6022")
        assert "proxycommand" not in opts
    else:
        assert opts["proxycommand"].endswith("handy_colab.tunnels.frp_visitor /k/colab.frp.json")


def test_visitor_configs(tmp_path: Path) -> None:
    p = {
        "server": "vps.example.org",
        "port": 7000,
        "server_name": "vps.example.org",
        "proxy": "colab-ssh",
        "stun": "stun.example.org:3478",
        "mode": "p2p",
        "token": "tok",
        "secret": "sec",
        "ca_pem": "-----BEGIN CERTIFICATE-----\n",
    }
    text = visitor_config(p, tmp_path, 40000)
    assert 'type = "xtcp"' in text and 'fallbackTo = "relay"' in text
    assert 'serverName = "colab-ssh-relay"' in text and "bindPort = -1" in text
    assert f'transport.tls.trustedCaFile = "{tmp_path / "ca.pem"}"' in text
    assert 'natHoleStunServer = "stun.example.org:3478"' in text
    p["mode"] = "private"
    text = visitor_config(p, tmp_path, 40000)
    assert 'type = "stcp"' in text and "xtcp" not in text and "bindPort = 40000" in text


SETTINGS = FrpConfig("vps", 7000, "public", "colab-ssh", 6022, ca_file=Path("/f/ca.pem"))


@pytest.mark.parametrize(
    ("line", "needle", "permanent"),
    [
        (
            "2026-11-30 23:46:31.420 [W] [client/service.go:323] connect to server error: "
            "token in login doesn't match token from configuration",
            "refused the token",
            True,
        ),
        (
            "[W] connect to server error: tls: failed to verify certificate: x509: certificate "
            "signed by unknown authority",
            "pinned CA",
            True,
        ),
        ("[W] [colab-ssh] start error: port not allowed", "does not allow remote port 6022", True),
        ("[W] [colab-ssh] start error: port already used", "is taken", False),
        ("[W] [colab-ssh] start error: proxy [colab-ssh] already exists", "earlier session", False),
        (
            "[W] connect to server error: dial tcp 10.0.0.1:7000: connect: connection refused",
            "unreachable",
            False,
        ),
    ],
)
def test_frpc_lines(line: str, needle: str, permanent: bool) -> None:
    err = classify([line], SETTINGS)
    assert err is not None and needle in str(err) and err.permanent == permanent
    assert "Fix:" in str(err) and "\n" not in str(err)
    assert classify(["[I] login to server success"], SETTINGS) is None


def test_visitor_sweeps_folders_of_killed_visitors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A visitor killed outright leaves its folder (frpc.toml with the secret, 0600): the next
    visitor removes the folders whose proxy is gone, and only those."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = tmp_path / f"hc-frpv-{gone.pid}-abc"
    alive = tmp_path / f"hc-frpv-{os.getpid()}-def"
    other = tmp_path / "hc-frpv-notapid"
    for d in (dead, alive, other):
        d.mkdir()
        (d / "frpc.toml").write_text("secret")
    frp_visitor._sweep_stale_workdirs()
    assert not dead.exists()
    assert alive.exists() and other.exists()
