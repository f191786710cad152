"""The descriptor (descriptor.py), built on the runtime (connection.py) and printed
(client/block.py): JSON round trip and refusal of bad descriptors."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from handy_colab import connection
from handy_colab.client.block import render_block, ssh_command
from handy_colab.config import load_config
from handy_colab.descriptor import FORMAT, RELAY_FORMAT, Descriptor
from handy_colab.errors import ConfigError

MakeDesc = Callable[..., Descriptor]


def _assert_good_message(msg: str, *parts: str) -> None:
    assert "\n" not in msg, msg
    assert "Fix:" in msg, msg
    for p in parts:
        assert p in msg, f"{p!r} not in {msg!r}"


@pytest.mark.parametrize("mode", ["public", "private"])
def test_round_trip(tmp_path: Path, make_descriptor: MakeDesc, mode: str) -> None:
    desc = make_descriptor(mode=mode, forwards=[6006, 8888], identity_hint="alice.first.pem")
    path = tmp_path / "colab.json"
    path.write_text(desc.to_json())

    loaded = Descriptor.load(path)

    assert loaded == desc
    assert asdict(loaded) == asdict(desc)
    assert loaded.to_json() == desc.to_json()
    data = json.loads(path.read_text())
    assert data["format"] == RELAY_FORMAT == 1  # relay descriptors stay readable by older laptops
    assert list(data) == sorted(data)  # stable, diff-friendly output


def test_to_json_holds_no_secret(make_descriptor: MakeDesc) -> None:
    text = make_descriptor(identity_hint="alice.first.pem").to_json()
    assert "PRIVATE KEY" not in text


def test_properties(make_descriptor: MakeDesc) -> None:
    pub = make_descriptor(mode="public")
    assert (pub.host, pub.port, pub.relay_alias) == ("public.example.org", 12345, "colab-relay")
    priv = make_descriptor(mode="private")
    assert (priv.host, priv.port) == ("127.0.0.1", 12345)


def test_unknown_fields_are_ignored(tmp_path: Path, make_descriptor: MakeDesc) -> None:
    data = asdict(make_descriptor())
    data["added_in_a_later_minor_version"] = {"x": 1}
    path = tmp_path / "d.json"
    path.write_text(json.dumps(data))
    assert Descriptor.load(path) == make_descriptor()


def test_host_key_with_comment_is_accepted(make_descriptor: MakeDesc, keys: Any) -> None:
    data = asdict(make_descriptor(host_keys=[keys.public_line("ed25519")]))
    # The comment is dropped: only "type base64" ever reaches known_hosts.
    blob = " ".join(keys.public_line("ed25519").split()[:2])
    assert Descriptor.from_dict(data, "src").host_keys == [blob]


BAD_HOST_KEYS = [
    pytest.param([], id="empty"),
    pytest.param(["not a key"], id="text"),
    pytest.param(["ssh-ed25519 not-base64!"], id="bad-base64"),
    pytest.param(["SHA256:abcdefabcdef"], id="fingerprint"),
    pytest.param("", id="empty-string"),
]


@pytest.mark.parametrize("host_keys", BAD_HOST_KEYS)
def test_bad_host_keys(tmp_path: Path, make_descriptor: MakeDesc, host_keys: Any) -> None:
    data = asdict(make_descriptor())
    data["host_keys"] = host_keys
    path = tmp_path / "colab.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as info:
        Descriptor.load(path)
    _assert_good_message(str(info.value), str(path), "host_keys")


def test_one_bad_host_key_among_good(make_descriptor: MakeDesc, keys: Any) -> None:
    data = asdict(make_descriptor(host_keys=[keys.blob("ed25519"), "junk"]))
    with pytest.raises(ConfigError, match="host_keys"):
        Descriptor.from_dict(data, "src")


def test_newer_format(tmp_path: Path, make_descriptor: MakeDesc) -> None:
    data = asdict(make_descriptor())
    data["format"] = FORMAT + 1
    path = tmp_path / "colab.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as info:
        Descriptor.load(path)
    _assert_good_message(str(info.value), str(path), "format", "upgrade")


@pytest.mark.parametrize("missing", ["name", "host_keys", "remote_port"])
def test_missing_required_field(tmp_path: Path, make_descriptor: MakeDesc, missing: str) -> None:
    data = asdict(make_descriptor())
    del data[missing]
    path = tmp_path / "colab.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as info:
        Descriptor.load(path)
    _assert_good_message(str(info.value), str(path))


@pytest.mark.parametrize(
    "content",
    [None, "{not json", "[1, 2]", '"text"', b"\xff\xfe{"],
    ids=["missing", "invalid-json", "list", "string", "not-utf8"],
)
def test_load_bad_files(tmp_path: Path, content: Any) -> None:
    path = tmp_path / "colab.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as info:
        Descriptor.load(path)
    _assert_good_message(str(info.value), str(path))


def test_build_and_write_descriptor_from_config(seed_folder: Path, keys: Any) -> None:
    cfg = load_config(seed_folder)
    host_line = keys.public_line("ed25519_b")
    desc = connection.build_descriptor(cfg, host_line)
    assert desc.name == "colab"
    assert desc.mode == "public"
    assert desc.host_keys == [keys.blob("ed25519_b")]
    assert (desc.public_host, desc.remote_port) == ("user-12345.portmap.host", 12345)
    assert (desc.relay_host, desc.relay_port, desc.relay_user) == (
        "user-12345.portmap.host",
        22,
        "alice",
    )
    assert desc.relay_host_keys == []  # nothing pinned, nothing recorded yet
    assert desc.forwards == [12345]
    # public_key.pub is a separate laptop key: the relay .pem is no way into the runtime.
    assert desc.identity_hint == ""

    path = connection.write_descriptor(cfg, desc)
    assert path == cfg.folder / "connections" / "colab.json"
    assert Descriptor.load(path) == desc


def test_identity_hint_is_the_pem_when_its_public_half_is_authorized(
    seed_folder: Path, keys: Any
) -> None:
    # The seed README: `ssh-keygen -y -f <user>.first.pem > public_key.pub`.
    (seed_folder / "public_key.pub").write_text(keys.public_line("rsa_pem") + "\n")
    desc = connection.build_descriptor(load_config(seed_folder), keys.public_line("ed25519_b"))
    assert desc.identity_hint == "alice.first.pem"


@pytest.mark.parametrize(
    "name", ["-oProxyCommand=x.pem", "key name.pem", "key\nHost *.pem", "%h.pem", ".hidden.pem"]
)
def test_identity_hint_is_only_ever_a_plain_file_name(
    seed_folder: Path, keys: Any, name: str
) -> None:
    """The runtime writes the hint; the laptop joins it to a folder: a key file named like an
    option, with spaces, a newline or ssh tokens is authorized but not named."""
    import dataclasses

    (seed_folder / "public_key.pub").write_text(keys.public_line("rsa_pem") + "\n")
    cfg = load_config(seed_folder)
    assert cfg.relay is not None
    # Config checks stop most such names earlier (the socket path is made from it); the
    # hint does not rely on that: the key is given the name directly.
    key = dataclasses.replace(cfg.relay.key, path=seed_folder / name)
    cfg = dataclasses.replace(cfg, relay=dataclasses.replace(cfg.relay, key=key))
    desc = connection.build_descriptor(cfg, keys.public_line("ed25519_b"))
    assert desc.identity_hint == ""


def test_relay_host_keys_from_config_pin(seed_folder: Path, keys: Any) -> None:
    cfg_file = seed_folder / "user_config.json"
    data = json.loads(cfg_file.read_text())
    data["relay"] = {"host_key": keys.public_line("ecdsa")}
    cfg_file.write_text(json.dumps(data))
    cfg = load_config(seed_folder)
    assert connection.relay_host_keys(cfg) == [keys.blob("ecdsa")]


def test_ssh_command(make_descriptor: MakeDesc) -> None:
    assert ssh_command(make_descriptor()) == "ssh -p 12345 root@public.example.org"
    assert ssh_command(make_descriptor(remote_port=22), "/k") == "ssh -i /k root@public.example.org"
    assert ssh_command(make_descriptor(mode="private")) == (
        "ssh -o 'ProxyCommand=handy-colab proxy alice@relay.example.org:2200 "
        "/tmp/handy-colab-alice-colab.sock' -o HostKeyAlias=colab root@colab"
    )


def test_render_block_mentions_fingerprint_and_never_disables_checking(
    make_descriptor: MakeDesc, keys: Any
) -> None:
    from handy_colab.keys import fingerprint

    for mode in ("public", "private"):
        text = render_block(make_descriptor(mode=mode), None, None)
        assert fingerprint(keys.blob("ed25519")) in text
        assert "StrictHostKeyChecking yes" in text
        assert "StrictHostKeyChecking no" not in text


# ------------------------------------------------------------ regressions (bugs found and fixed)


@pytest.mark.parametrize(
    "change",
    [{"host_keys": 5}, {"host_keys": [5]}, {"host_keys": [None]}, {"format": "2"}],
    ids=["host_keys-int", "host_keys-int-entry", "host_keys-null-entry", "format-string"],
)
def test_regression_wrongly_typed_fields_give_config_error(
    make_descriptor: MakeDesc, change: dict[str, Any]
) -> None:
    data = {**asdict(make_descriptor()), **change}
    with pytest.raises(ConfigError, match="Fix:"):
        Descriptor.from_dict(data, "src")


@pytest.mark.parametrize(
    "change",
    [
        {"name": "bad name"},
        {"name": "x\n    ProxyCommand touch /tmp/pwned"},
        {"public_host": "h\n    ProxyCommand touch /tmp/pwned"},
        {"user": "root\n    LocalCommand id"},
        {"mode": "weird"},
        {"remote_port": "abc"},
    ],
    ids=["name-space", "name-newline", "host-newline", "user-newline", "mode", "port"],
)
def test_regression_unvalidated_fields_are_refused(
    make_descriptor: MakeDesc, change: dict[str, Any]
) -> None:
    data = {**asdict(make_descriptor()), **change}
    with pytest.raises(ConfigError, match="Fix:"):
        Descriptor.from_dict(data, "src")


def test_regression_host_key_with_newline_is_refused(make_descriptor: MakeDesc, keys: Any) -> None:
    evil = f"{keys.blob('ed25519')}\n@cert-authority * {keys.blob('ecdsa')}"
    data = {**asdict(make_descriptor()), "host_keys": [evil]}
    with pytest.raises(ConfigError, match="host_keys"):
        Descriptor.from_dict(data, "src")
