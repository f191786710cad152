"""The cloudflared route without a network: its config section, the route default, the
format-2 descriptor and what it may carry into ssh config, the laptop's Host block (checked
with the real `ssh -G`), the hostname the ProxyCommand follows, and cloudflared's recorded
failure lines turned into one-line errors."""

from __future__ import annotations

import base64
import json
import shutil
import zlib
from pathlib import Path
from typing import Any

import pytest

from handy_colab import binaries
from handy_colab.client import sshconfig as S
from handy_colab.client.connect import connect
from handy_colab.config import load_config
from handy_colab.connection import FORMAT, CloudflaredEndpoint, Descriptor, build_descriptor
from handy_colab.errors import ConfigError
from handy_colab.progress import LineReporter
from handy_colab.tunnels.cloudflared_log import classify
from handy_colab.tunnels.websocket import MAX_MESSAGE, current_hostname
from tests.unit.conftest import SEED_CONFIG, KeyStore, ssh_g, write_config

SSH = shutil.which("ssh")


def _folder(tmp: Path, keys: KeyStore, config: Any, files: tuple[str, ...] = ("laptop",)) -> Path:
    folder = tmp / "cfg"
    folder.mkdir()
    for name in files:
        if name == "laptop":
            keys.copy_public("laptop", folder)
        else:
            keys.copy_private(name, folder)
    write_config(folder, config)
    return folder


# --------------------------------------------------------------------------- config


def test_only_a_public_key_means_a_quick_tunnel(tmp_path: Path, keys: KeyStore) -> None:
    cfg = load_config(_folder(tmp_path, keys, {}))
    assert (cfg.route, cfg.relay) == ("cloudflared", None)
    assert not cfg.cloudflared.named and cfg.cloudflared.protocol == "auto"
    assert [k.blob for k in cfg.authorized_keys] == [keys.blob("laptop")]
    with pytest.raises(ConfigError, match="names no relay"):
        _ = cfg.ssh_relay


def test_the_seed_format_stays_on_the_relay(tmp_path: Path, keys: KeyStore) -> None:
    cfg = load_config(_folder(tmp_path, keys, SEED_CONFIG, ("laptop", "rsa_pem")))
    assert cfg.route == "relay" and cfg.relay is not None


def test_route_cloudflared_beside_a_relay(tmp_path: Path, keys: KeyStore) -> None:
    data = {**SEED_CONFIG, "route": "cloudflared"}
    cfg = load_config(_folder(tmp_path, keys, data, ("laptop", "rsa_pem")))
    assert cfg.route == "cloudflared" and cfg.relay is not None


def test_named_tunnel_reads_no_token_into_the_config(tmp_path: Path, keys: KeyStore) -> None:
    folder = _folder(tmp_path, keys, {"cloudflared": {"hostname": "Colab.Example.com."}})
    (folder / "cloudflared_token").write_text("secret-token\n")
    cfg = load_config(folder)
    assert cfg.cloudflared.hostname == "colab.example.com"
    assert cfg.cloudflared.token_file == folder / "cloudflared_token"
    assert "secret-token" not in repr(cfg)


CF = "user_config.json"


@pytest.mark.parametrize(
    ("config", "needles"),
    [
        ({"route": "ssh"}, ["'route'", "'ssh'", '"cloudflared"']),
        ({"mode": "private"}, ["'mode'", "relay route only"]),
        ({"cloudflared": {"hostname": "bad host"}}, ["'cloudflared.hostname'", "bad host"]),
        ({"cloudflared": {"hostname": "a.example.com"}}, ["cloudflared_token", "does not exist"]),
        ({"cloudflared": {"protocol": "udp"}}, ["'cloudflared.protocol'", "'udp'", "http2"]),
        ({"cloudflared": {"extra_args": ["--url=http://x"]}}, ["extra_args[0]", "--url"]),
        ({"cloudflared": {"extra_args": ["--token", "x"]}}, ["extra_args[0]", "--token"]),
        ({"cloudflared": {"extra_args": "--edge-ip-version 4"}}, ["extra_args", "list"]),
        ({"cloudflared": {"download_url": "ftp://m"}}, ["download_url", "http(s) URL"]),
        ({"cloudflared": {"hostnme": "x"}}, ["'cloudflared.hostnme'", "did you mean 'hostname'"]),
        ({"cloudflared": {"token_file": "tok"}}, ["token_file", "tok", "does not exist"]),
    ],
)
def test_config_errors_are_one_line(
    tmp_path: Path, keys: KeyStore, config: Any, needles: list[str]
) -> None:
    folder = _folder(tmp_path, keys, config)
    with pytest.raises(ConfigError) as err:
        load_config(folder)
    msg = str(err.value)
    assert "\n" not in msg and "Fix:" in msg and CF in msg
    for needle in needles:
        assert needle in msg, msg


def test_no_key_at_all_names_the_fix(tmp_path: Path, keys: KeyStore) -> None:
    with pytest.raises(ConfigError, match="no public key to let into the runtime"):
        load_config(_folder(tmp_path, keys, {}, ()))


# --------------------------------------------------------------------------- descriptor


def _desc(tmp_path: Path, keys: KeyStore, hostname: str = "a-b-c.trycloudflare.com") -> Descriptor:
    cfg = load_config(_folder(tmp_path, keys, {}))
    line = keys.public_line("ed25519")
    return build_descriptor(
        cfg, line, "/usr/bin/python3", "/content", CloudflaredEndpoint(hostname, False)
    )


def test_descriptor_round_trip(tmp_path: Path, keys: KeyStore) -> None:
    desc = _desc(tmp_path, keys)
    data = json.loads(desc.to_json())
    assert (data["format"], data["route"], data["mode"]) == (FORMAT, "cloudflared", "quick")
    assert data["hostname"] == "a-b-c.trycloudflare.com" == desc.host
    again = Descriptor.from_dict(data, "test")
    assert again == desc
    assert "Cloudflare" in desc.reach and desc.port == 443


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("hostname", "x.trycloudflare.com\n    ProxyCommand evil"),
        ("hostname", "x.trycloudflare.com evil"),
        ("hostname", "X.TRYCLOUDFLARE.COM"),  # only the canonical form, as written by up
        ("hostname", ""),
        ("route", "sideways"),
        ("mode", "public"),
        ("user", "root\nProxyCommand x"),
    ],
)
def test_descriptor_refuses_what_could_inject(
    tmp_path: Path, keys: KeyStore, field: str, value: str
) -> None:
    data = json.loads(_desc(tmp_path, keys).to_json())
    data[field] = value
    with pytest.raises(ConfigError, match=f"field '{field}'"):
        Descriptor.from_dict(data, "crafted.json")


def test_relay_descriptors_stay_format_1(make_descriptor: Any) -> None:
    data = json.loads(make_descriptor().to_json())
    assert data["format"] == 1 and "route" not in data and "hostname" not in data


@pytest.mark.skipif(SSH is None, reason="OpenSSH client not installed")
def test_host_block_follows_the_descriptor_and_pins_by_alias(
    tmp_path: Path, keys: KeyStore
) -> None:
    desc = _desc(tmp_path, keys)
    follow = tmp_path / "Google Drive" / "colab.json"
    block = S.render_host_blocks(
        desc, "/k/id", "/k/known", launcher=S.ws_launcher(), follow=str(follow)
    )
    cfg = tmp_path / "config"
    cfg.write_text(block)
    opts = ssh_g(cfg, "colab")
    assert opts["hostkeyalias"] == "colab"
    assert opts["stricthostkeychecking"] == "true"
    assert "handy_colab.tunnels.websocket" in opts["proxycommand"]
    assert f"--descriptor '{follow}'" in opts["proxycommand"]
    assert opts["proxycommand"].endswith(" a-b-c.trycloudflare.com")


# --------------------------------------------------------------------------- laptop


def test_current_hostname_follows_a_readable_descriptor(tmp_path: Path, keys: KeyStore) -> None:
    path = tmp_path / "colab.json"
    path.write_text(_desc(tmp_path, keys, "new-name.trycloudflare.com").to_json())
    assert current_hostname(path, "old.trycloudflare.com") == ("new-name.trycloudflare.com", None)
    host, why = current_hostname(tmp_path / "gone.json", "old.trycloudflare.com")
    assert host == "old.trycloudflare.com" and why and "cannot read" in why
    path.write_text(json.dumps({"route": "cloudflared", "hostname": "x y"}))
    host, why = current_hostname(path, "old.trycloudflare.com")
    assert host == "old.trycloudflare.com" and why and "no cloudflared hostname" in why
    assert current_hostname(None, "old.trycloudflare.com") == ("old.trycloudflare.com", None)


def test_message_size_is_the_edges_limit() -> None:
    assert MAX_MESSAGE == 16384


# --------------------------------------------------------------------------- cloudflared's words

RATE_LIMITED = [
    "2026-11-30T23:05:42Z INF Requesting new quick Tunnel on trycloudflare.com...",
    "2026-11-30T23:05:42Z ERR Error unmarshaling QuickTunnel response: error code: 1015 "
    "error=\"invalid character 'e' looking for beginning of value\" "
    'status_code="429 Too Many Requests"',
    "failed to unmarshal quick Tunnel: invalid character 'e' looking for beginning of value",
]
API_DOWN = [
    'failed to request quick Tunnel: Post "http://127.0.0.1:1/tunnel": dial tcp '
    "127.0.0.1:1: connect: connection refused"
]


def test_rate_limit_waits_and_says_so() -> None:
    err = classify(RATE_LIMITED, "tok")
    assert err is not None and err.retry_after == 60.0 and not err.permanent
    assert "429" in str(err) and "1015" in str(err) and "Fix:" in str(err)


def test_api_unreachable() -> None:
    err = classify(API_DOWN, "tok")
    assert err is not None and "quick-tunnel service" in str(err)
    assert "connection refused" in str(err) and "Fix:" in str(err)


def test_bad_token_is_permanent_and_not_quoted() -> None:
    err = classify(["Provided Tunnel token is not valid."], "/f/cloudflared_token")
    assert err is not None and err.permanent and "/f/cloudflared_token" in str(err)


def test_unknown_lines_are_left_to_the_caller() -> None:
    assert classify(["2026-11-30T23:05:42Z INF something else"], "tok") is None


# --------------------------------------------------------------------------- binaries


def test_versions_and_platforms() -> None:
    assert binaries.parse_version("cloudflared version 2026.3.0 (built 2026-03-06)") == (
        2026,
        3,
        0,
    )
    assert binaries.parse_version("cloudflared version DEV") is None
    assert binaries.platform_key("Linux", "x86_64") == "linux-amd64"
    assert binaries.platform_key("Linux", "aarch64") == "linux-arm64"
    said: list[str] = []
    bar = LineReporter(said.append).bar("downloading cloudflared", 100_000_000, "B")
    for done in range(0, 101, 5):
        bar.update(done * 1_000_000)
    assert said[0] == "downloading cloudflared: 0% (0 of 100 MB)"
    assert said[-1] == "downloading cloudflared: 100% (100 of 100 MB)" and len(said) == 11


# --------------------------------------------------------------------------- the pasted line


def test_paste_line_round_trips(tmp_path: Path, keys: KeyStore, make_descriptor: Any) -> None:
    for desc in (_desc(tmp_path, keys), make_descriptor()):
        line = desc.to_paste()
        assert line.startswith("hc1:") and len(line) < 1200 and "'" not in line
        assert Descriptor.from_paste(line) == desc


def _paste(data: Any) -> str:
    raw = json.dumps(data).encode()
    return "hc1:" + base64.urlsafe_b64encode(zlib.compress(raw)).decode().rstrip("=")


def test_pasted_line_is_validated_like_a_file(tmp_path: Path, keys: KeyStore) -> None:
    data = json.loads(_desc(tmp_path, keys).to_json())
    data["hostname"] = "x.trycloudflare.com\n    ProxyCommand touch /tmp/pwned"
    with pytest.raises(ConfigError, match="pasted hc1: line: field 'hostname'"):
        Descriptor.from_paste(_paste(data))
    with pytest.raises(ConfigError, match="damaged"):
        Descriptor.from_paste("hc1:not*base64")
    # Bounded inflation: a line that would expand past 64 KiB is refused, not unpacked.
    with pytest.raises(ConfigError, match="damaged"):
        Descriptor.from_paste(_paste({"name": "a" * 200_000}))
    with pytest.raises(ConfigError, match="holds no descriptor"):
        Descriptor.from_paste(_paste([1, 2]))


def test_connect_from_a_pasted_line(tmp_path: Path, keys: KeyStore) -> None:
    desc = _desc(tmp_path, keys)
    res = connect(
        Path(desc.to_paste()),
        ssh_config=tmp_path / "out" / "config",
        known_hosts=tmp_path / "out" / "known",
    )
    text = res.config_file.read_text()
    assert "HostKeyAlias colab" in text and "--descriptor" not in text
    assert "handy_colab.tunnels.websocket a-b-c.trycloudflare.com" in text
    assert res.quick and res.follows is None
    assert res.known_hosts.read_text().startswith("colab ssh-ed25519 ")
