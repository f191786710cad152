"""config.load_config: the seed format unchanged, the superset, and one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from handy_colab.config import DEFAULT_NAME, RuntimeConfig, load_config
from handy_colab.errors import ConfigError, KeyFileError
from tests.unit.conftest import SEED_CONFIG


def write_config(folder: Path, data: Any) -> Path:
    path = folder / "user_config.json"
    if isinstance(data, bytes):
        path.write_bytes(data)
    elif isinstance(data, str):
        path.write_text(data)
    else:
        path.write_text(json.dumps(data, indent=2))
    return path


# --------------------------------------------------------------------------- seed format


def test_seed_format_unchanged(seed_folder: Path, keys: Any) -> None:
    cfg = load_config(seed_folder)

    assert isinstance(cfg, RuntimeConfig)
    assert cfg.folder == seed_folder.resolve()
    assert cfg.name == DEFAULT_NAME == "colab"
    assert cfg.mode == "public"
    # The relay login: user = file name up to the first dot, port 22.
    assert cfg.relay.user == "alice"
    assert cfg.relay.jump_user == "alice"
    assert cfg.relay.port == 22
    assert cfg.relay.host == "user-12345.portmap.host"
    assert cfg.relay.public_host == "user-12345.portmap.host"
    assert cfg.relay.remote_port == 12345
    assert cfg.relay.host_key is None
    assert cfg.relay.bind_address is None
    assert cfg.relay.key.path == seed_folder.resolve() / "alice.first.pem"
    assert cfg.relay.key.public_line.split()[:2] == keys.blob("rsa_pem").split()
    assert cfg.forwards == (12345,)
    assert cfg.python_packages == ("glances",)
    assert cfg.os_packages == ("tmux",)
    assert cfg.server_port == 0
    # The authorized key is exactly the .pub in the folder (not the relay key).
    assert [k.line for k in cfg.authorized_keys] == [keys.public_line("laptop")]
    assert [k.source for k in cfg.authorized_keys] == ["public_key.pub"]
    assert cfg.relay_known_hosts == cfg.folder / "relay_known_hosts"
    assert cfg.connections_dir == cfg.folder / "connections"


def test_seed_config_file_is_not_modified(seed_folder: Path) -> None:
    before = (seed_folder / "user_config.json").read_bytes()
    names = sorted(p.name for p in seed_folder.iterdir())
    load_config(seed_folder)
    assert (seed_folder / "user_config.json").read_bytes() == before
    assert sorted(p.name for p in seed_folder.iterdir()) == names


def test_folder_given_as_str_and_with_tilde(
    seed_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(seed_folder.parent))
    assert load_config(str(seed_folder)).relay.user == "alice"
    assert load_config(f"~/{seed_folder.name}").folder == seed_folder.resolve()


def test_name_argument_overrides_default(seed_folder: Path) -> None:
    assert load_config(seed_folder, name="gpu-2").name == "gpu-2"


def test_invalid_name_argument_is_rejected(seed_folder: Path) -> None:
    with pytest.raises(ConfigError, match="Fix:"):
        load_config(seed_folder, name="bad name!")


@pytest.mark.parametrize(
    "name, suggested",
    [
        ("github.com", "github-com"),
        ("10.0.0.1", "rt-10-0-0-1"),
        ("localhost", "colab"),
        ("colab-relay", "colab"),
        ("-x", "x"),
        ("a" * 64, None),
    ],
)
def test_a_name_that_could_pass_for_a_host_is_refused_with_a_fix(
    seed_folder: Path, name: str, suggested: str | None
) -> None:
    """A runtime's name becomes a Host alias on the laptop: a dotted one would take over
    that real host's ssh and git; the error says the rule and offers a name that passes."""
    with pytest.raises(ConfigError) as err:
        load_config(seed_folder, name=name)
    msg = str(err.value)
    assert "'name'" in msg, msg
    assert "no dot" in msg or "localhost" in msg or "-relay" in msg, msg
    assert "\n" not in msg
    if suggested is not None:
        assert f"e.g. '{suggested}'" in msg, msg


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa", "rsa_openssh", "rsa_pem"])
@pytest.mark.parametrize("filename", ["mykey", "bob.second.pem", "id_thing.key"])
def test_private_key_found_by_content_whatever_the_name(
    tmp_path: Path, keys: Any, kind: str, filename: str
) -> None:
    write_config(tmp_path, SEED_CONFIG)
    keys.copy_private(kind, tmp_path / filename)
    keys.copy_public("laptop", tmp_path / "laptop.pub")

    cfg = load_config(tmp_path)

    assert cfg.relay.key.path.name == filename
    assert cfg.relay.key.public_line.split()[:2] == keys.blob(kind).split()
    assert cfg.relay.user == filename.split(".", 1)[0]
    assert [k.blob for k in cfg.authorized_keys] == [keys.blob("laptop")]


def test_only_private_key_derives_authorized_key(tmp_path: Path, keys: Any) -> None:
    write_config(tmp_path, SEED_CONFIG)
    keys.copy_private("rsa_pem", tmp_path / "alice.first.pem")

    cfg = load_config(tmp_path)

    assert len(cfg.authorized_keys) == 1
    assert cfg.authorized_keys[0].blob == keys.blob("rsa_pem")
    assert cfg.authorized_keys[0].source == "alice.first.pem"


def test_non_key_files_and_own_files_are_ignored(seed_folder: Path, keys: Any) -> None:
    (seed_folder / "notes.txt").write_text("PRIVATE KEY----- is not a key\n")
    (seed_folder / "checkpoint.bin").write_bytes(b"\0" * (200 * 1024))
    (seed_folder / ".hidden").write_bytes(keys.private("ed25519").read_bytes())
    (seed_folder / "relay_known_hosts").write_text(f"[relay]:22 {keys.blob('ecdsa')}\n")
    (seed_folder / "host_keys").mkdir()
    keys.copy_private("ed25519_b", seed_folder / "host_keys" / "ssh_host_ed25519_key")
    (seed_folder / "connections").mkdir()

    cfg = load_config(seed_folder)

    assert cfg.relay.key.path.name == "alice.first.pem"
    assert [k.blob for k in cfg.authorized_keys] == [keys.blob("laptop")]


def test_all_public_keys_in_folder_are_authorized_deduplicated(
    seed_folder: Path, keys: Any
) -> None:
    keys.copy_public("laptop2", seed_folder / "desktop.pub")
    (seed_folder / "authorized_keys").write_text(
        f"# my keys\n\n{keys.public_line('laptop')}\n{keys.public_line('laptop2')}\n"
    )
    cfg = load_config(seed_folder)
    assert sorted(k.blob for k in cfg.authorized_keys) == sorted(
        [keys.blob("laptop"), keys.blob("laptop2")]
    )


# --------------------------------------------------------------------------- superset


def test_superset_all_fields(tmp_path: Path, keys: Any) -> None:
    keys.copy_private("ed25519", tmp_path / "relay_login")
    keys.copy_private("ecdsa", tmp_path / "other.pem")  # second key: relay.key picks one
    keys.copy_public("laptop2", tmp_path / "desktop.pub")  # not authorized: list is explicit
    keys.copy_public("laptop", tmp_path / "laptop.pub")
    (tmp_path / "team_keys").write_text(
        f"{keys.public_line('ed25519_c')}\n{keys.public_line('laptop')}\n"
    )
    host_key_line = keys.public_line("ed25519_b") + " relay-comment"
    write_config(
        tmp_path,
        {
            "tunnel_options": {
                "service_url": "seed.portmap.host",
                "service_port": 11111,
                "local_port": 8888,
            },
            "name": "gpu-box_1",
            "mode": "private",
            "relay": {
                "host": "relay.example.org",
                "port": 2200,
                "user": "tunnel",
                "key": "relay_login",
                "host_key": host_key_line,
                "remote_port": 2222,
                "public_host": "ssh.example.org",
                "jump_user": "jumper",
                "bind_address": "127.0.0.1",
            },
            "server": {
                "port": 2022,
                "authorized_keys": [
                    keys.public_line("laptop"),
                    "team_keys",
                ],
            },
            "forwards": [6006, "8889", 8888],
            "python_packages": [],
            "os_packages": ["htop", "tmux"],
        },
    )

    cfg = load_config(tmp_path)

    assert cfg.name == "gpu-box_1"
    assert cfg.mode == "private"
    r = cfg.relay
    # relay fields override tunnel_options
    assert r.host == "relay.example.org"
    assert r.remote_port == 2222
    assert r.port == 2200
    assert r.user == "tunnel"
    assert r.key.path.name == "relay_login"
    assert r.key.public_line.split()[:2] == keys.blob("ed25519").split()
    assert r.host_key == keys.blob("ed25519_b")  # comment dropped
    assert r.public_host == "ssh.example.org"
    assert r.jump_user == "jumper"
    assert r.bind_address == "127.0.0.1"
    assert cfg.server_port == 2022
    # literal line and file, de-duplicated, in order
    assert [k.blob for k in cfg.authorized_keys] == [
        keys.blob("laptop"),
        keys.blob("ed25519_c"),
    ]
    assert cfg.authorized_keys[0].source == "config"
    assert cfg.authorized_keys[1].source == "team_keys"
    # local_port first, then forwards; strings of digits accepted; no duplicates
    assert cfg.forwards == (8888, 6006, 8889)
    assert cfg.python_packages == ()
    assert cfg.os_packages == ("htop", "tmux")


def test_superset_without_seed_section(tmp_path: Path, keys: Any) -> None:
    keys.copy_private("ed25519", tmp_path / "bob.pem")
    write_config(tmp_path, {"relay": {"host": "r.example", "remote_port": 2222}})
    cfg = load_config(tmp_path)
    assert (cfg.relay.host, cfg.relay.port, cfg.relay.remote_port) == ("r.example", 22, 2222)
    assert cfg.relay.user == "bob"
    assert cfg.relay.jump_user == "bob"
    assert cfg.relay.public_host == "r.example"
    assert cfg.forwards == ()
    assert cfg.mode == "public"


def test_relay_user_defaults_from_key_name_even_with_relay_key(tmp_path: Path, keys: Any) -> None:
    keys.copy_private("ed25519", tmp_path / "carol.x.pem")
    keys.copy_private("ecdsa", tmp_path / "dave.pem")
    write_config(tmp_path, {**SEED_CONFIG, "relay": {"key": "dave.pem"}})
    cfg = load_config(tmp_path)
    assert cfg.relay.key.path.name == "dave.pem"
    assert cfg.relay.user == "dave"
    # seed fields still used when relay does not override them
    assert cfg.relay.host == "user-12345.portmap.host"
    assert cfg.relay.remote_port == 12345


def test_relay_key_in_subfolder(tmp_path: Path, keys: Any) -> None:
    (tmp_path / "keys").mkdir()
    keys.copy_private("ed25519", tmp_path / "keys" / "erin.pem")
    write_config(tmp_path, {**SEED_CONFIG, "relay": {"key": "keys/erin.pem"}})
    cfg = load_config(tmp_path)
    assert cfg.relay.user == "erin"


def test_server_port_zero_and_string_ports(tmp_path: Path, keys: Any) -> None:
    keys.copy_private("ed25519", tmp_path / "k")
    write_config(
        tmp_path,
        {"relay": {"host": "h", "remote_port": " 2222 ", "port": "22"}, "server": {"port": 0}},
    )
    cfg = load_config(tmp_path)
    assert cfg.relay.remote_port == 2222
    assert cfg.relay.port == 22
    assert cfg.server_port == 0


def test_encrypted_key_is_ignored_when_relay_key_names_another(tmp_path: Path, keys: Any) -> None:
    keys.copy_private("enc_ed25519", tmp_path / "locked")
    keys.copy_private("ed25519", tmp_path / "open")
    write_config(tmp_path, {**SEED_CONFIG, "relay": {"key": "open"}})
    assert load_config(tmp_path).relay.key.path.name == "open"


def test_encrypted_key_beside_a_usable_one_is_ignored(tmp_path: Path, keys: Any) -> None:
    keys.copy_private("enc_ed25519", tmp_path / "locked")
    keys.copy_private("ed25519", tmp_path / "open")
    write_config(tmp_path, SEED_CONFIG)
    assert load_config(tmp_path).relay.key.path.name == "open"


# --------------------------------------------------------------------------- errors

CFG = "{cfg}"  # placeholder for the user_config.json path in expectations
FOLDER = "{folder}"


def _base(**extra: object) -> dict[str, object]:
    return {**SEED_CONFIG, **extra}


def _relay(**relay: object) -> dict[str, object]:
    return _base(relay=relay)


# id, user_config.json content (dict, raw str/bytes, or None = do not write), key files,
# substrings the one-line message must contain.
ERROR_CASES = [
    (
        "invalid-json",
        '{"tunnel_options": {"service_url": "h",\n   "service_port": }}',
        ["rsa_pem"],
        [CFG, "invalid JSON", "line 2", "column 20"],
    ),
    ("top-level-list", "[1, 2]", ["rsa_pem"], [CFG, "JSON object", "list"]),
    ("top-level-string", '"hello"', ["rsa_pem"], [CFG, "JSON object"]),
    ("unknown-top-field", _base(relya={}), ["rsa_pem"], [CFG, "'relya'", "did you mean 'relay'"]),
    (
        "unknown-relay-field",
        _relay(prot=22),
        ["rsa_pem"],
        [CFG, "'relay.prot'", "did you mean 'port'"],
    ),
    (
        "unknown-field-no-suggestion",
        _base(zzzzzz=1),
        ["rsa_pem"],
        [CFG, "'zzzzzz'", "known fields"],
    ),
    (
        "unknown-seed-field",
        {"tunnel_options": {"service_ur": "h", "service_port": 1}},
        ["rsa_pem"],
        [CFG, "'tunnel_options.service_ur'", "did you mean 'service_url'"],
    ),
    ("relay-not-object", _base(relay="relay.example.org"), ["rsa_pem"], [CFG, "'relay'", "object"]),
    ("port-abc", _relay(port="abc"), ["rsa_pem"], [CFG, "'relay.port'", "'abc'"]),
    ("port-70000", _relay(port=70000), ["rsa_pem"], [CFG, "'relay.port'", "70000"]),
    ("port-true", _relay(port=True), ["rsa_pem"], [CFG, "'relay.port'", "True"]),
    ("port-float", _relay(port=22.5), ["rsa_pem"], [CFG, "'relay.port'", "22.5"]),
    ("port-negative", _relay(port=-1), ["rsa_pem"], [CFG, "'relay.port'"]),
    ("remote-port-negative", _relay(remote_port=-1), ["rsa_pem"], [CFG, "'relay.remote_port'"]),
    (
        "seed-port-abc",
        {"tunnel_options": {"service_url": "h", "service_port": "abc"}},
        ["rsa_pem"],
        [CFG, "'tunnel_options.service_port'", "'abc'"],
    ),
    (
        "seed-local-port",
        {"tunnel_options": {"service_url": "h", "service_port": 1, "local_port": 99999}},
        ["rsa_pem"],
        [CFG, "'tunnel_options.local_port'"],
    ),
    (
        "server-port",
        _base(server={"port": 65536}),
        ["rsa_pem"],
        [CFG, "'server.port'", "65536"],
    ),
    (
        "server-kind",
        _base(server={"kind": "dropbear"}),
        ["rsa_pem"],
        [CFG, "'server.kind'", "dropbear", '"embedded"'],
    ),
    ("server-kind-type", _base(server={"kind": 1}), ["rsa_pem"], [CFG, "'server.kind'"]),
    (
        "server-gateway-ports",
        _base(server={"gateway_ports": "yes"}),
        ["rsa_pem"],
        [CFG, "'server.gateway_ports'", "'yes'", "clientspecified"],
    ),
    (
        "relay-client",
        _relay(host="h", remote_port=2, client="paramiko"),
        ["rsa_pem"],
        [CFG, "'relay.client'", "paramiko", '"openssh"'],
    ),
    ("mode-secret", _base(mode="secret"), ["rsa_pem"], [CFG, "'mode'", "secret"]),
    ("mode-number", _base(mode=1), ["rsa_pem"], [CFG, "'mode'"]),
    ("name-bad", _base(name="bad name!"), ["rsa_pem"], [CFG, "'name'", "bad name!"]),
    ("name-too-long", _base(name="a" * 64), ["rsa_pem"], [CFG, "'name'"]),
    ("name-empty", _base(name=""), ["rsa_pem"], [CFG, "'name'"]),
    ("name-leading-dash", _base(name="-oProxyCommand"), ["rsa_pem"], [CFG, "'name'"]),
    (
        "python-packages-not-list",
        _base(python_packages="glances"),
        ["rsa_pem"],
        [CFG, "'python_packages'", "list"],
    ),
    (
        "os-packages-not-strings",
        _base(os_packages=["tmux", 3]),
        ["rsa_pem"],
        [CFG, "'os_packages'", "list"],
    ),
    ("forwards-x", _base(forwards=["x"]), ["rsa_pem"], [CFG, "forwards", "'x'"]),
    ("forwards-not-list", _base(forwards=8888), ["rsa_pem"], [CFG, "'forwards'", "list"]),
    ("forwards-out-of-range", _base(forwards=[6006, 0]), ["rsa_pem"], [CFG, "forwards"]),
    ("host-empty", _relay(host="  "), ["rsa_pem"], [CFG, "'relay.host'"]),
    ("user-empty", _relay(user=""), ["rsa_pem"], [CFG, "'relay.user'"]),
    (
        "missing-host",
        {"relay": {"remote_port": 2222}},
        ["rsa_pem"],
        [CFG, "'relay.host'", "missing"],
    ),
    (
        "missing-host-seed-without-url",
        {"tunnel_options": {"service_port": 2222}},
        ["rsa_pem"],
        [CFG, "'relay.host'", "service_url"],
    ),
    (
        "missing-remote-port",
        {"relay": {"host": "relay.example.org"}},
        ["rsa_pem"],
        [CFG, "'relay.remote_port'", "missing"],
    ),
    (
        "no-private-key",
        SEED_CONFIG,
        ["laptop.pub"],
        [FOLDER, "no private key", "relay.key", "user_config.json"],
    ),
    ("empty-folder-but-config", SEED_CONFIG, [], [FOLDER, "no private key", "relay.key"]),
    (
        "two-private-keys",
        SEED_CONFIG,
        ["rsa_pem", "ed25519"],
        [CFG, "'relay.key'", "several private keys", "rsa_pem", "ed25519"],
    ),
    (
        "relay-key-missing-file",
        _relay(key="nope.pem"),
        ["rsa_pem"],
        [CFG, "'relay.key'", "nope.pem", "does not exist"],
    ),
    (
        "relay-key-is-pub",
        _relay(key="laptop.pub"),
        ["rsa_pem", "laptop.pub"],
        [CFG, "'relay.key'", "laptop.pub", "not an SSH private key"],
    ),
    (
        "relay-key-is-directory",
        _relay(key="."),
        ["rsa_pem"],
        [CFG, "'relay.key'"],
    ),
    (
        "encrypted-only-key",
        SEED_CONFIG,
        ["enc_ed25519"],
        ["{dir}/enc_ed25519", "passphrase", "ssh-keygen -p"],
    ),
    (
        "encrypted-pem-key",
        SEED_CONFIG,
        ["enc_rsa_pem"],
        ["{dir}/enc_rsa_pem", "passphrase"],
    ),
    (
        "relay-key-encrypted",
        _relay(key="enc_ed25519"),
        ["enc_ed25519", "ed25519"],
        ["{dir}/enc_ed25519", "passphrase"],
    ),
    (
        "authorized-keys-neither",
        _base(server={"authorized_keys": ["not-a-key-or-file"]}),
        ["rsa_pem"],
        [CFG, "'server.authorized_keys[0]'", "not-a-key-or-file"],
    ),
    (
        "authorized-keys-file-without-keys",
        _base(server={"authorized_keys": ["user_config.json"]}),
        ["rsa_pem"],
        [CFG, "'server.authorized_keys[0]'"],
    ),
    (
        "authorized-keys-private-key-file",
        _base(server={"authorized_keys": ["rsa_pem"]}),
        ["rsa_pem"],
        [CFG, "'server.authorized_keys[0]'", "rsa_pem"],
    ),
    (
        "authorized-keys-not-list",
        _base(server={"authorized_keys": "ssh-ed25519 AAAA"}),
        ["rsa_pem"],
        [CFG, "'server.authorized_keys'", "list"],
    ),
    (
        "host-key-not-a-key",
        _relay(host_key="ssh-ed25519 not-base64!"),
        ["rsa_pem"],
        [CFG, "'relay.host_key'", "ssh-keyscan"],
    ),
    (
        "host-key-fingerprint-instead",
        _relay(host_key="SHA256:2xKx0m3Rj2yJ1v3r9QZ8z4a0x9cH0e1k8nq2b0xGhY"),
        ["rsa_pem"],
        [CFG, "'relay.host_key'"],
    ),
]


@pytest.mark.parametrize(
    ("content", "key_files", "expected"),
    [pytest.param(c, k, e, id=i) for i, c, k, e in ERROR_CASES],
)
def test_invalid_config_gives_one_line_config_error(
    tmp_path: Path,
    keys: Any,
    content: object,
    key_files: list[str],
    expected: list[str],
) -> None:
    folder = tmp_path / "cfg"
    folder.mkdir()
    cfg_path = write_config(folder, content)
    for name in key_files:
        if name.endswith(".pub"):
            keys.copy_public(name[: -len(".pub")], folder / name)
        else:
            keys.copy_private(name, folder / name)

    with pytest.raises(ConfigError) as info:
        load_config(folder)

    _assert_good_message(
        str(info.value),
        [
            e.replace(CFG, str(cfg_path)).replace(FOLDER, str(folder)).replace("{dir}", str(folder))
            for e in expected
        ],
    )


def _assert_good_message(msg: str, expected: list[str]) -> None:
    assert "\n" not in msg and "\r" not in msg, f"not one line: {msg!r}"
    assert "Fix:" in msg, msg
    # The fix comes after the problem and says something.
    assert msg.split("Fix:", 1)[1].strip(), msg
    for part in expected:
        assert part in msg, f"{part!r} not in {msg!r}"


def test_encrypted_key_error_is_a_key_file_error(tmp_path: Path, keys: Any) -> None:
    write_config(tmp_path, SEED_CONFIG)
    keys.copy_private("enc_ed25519", tmp_path / "alice.pem")
    with pytest.raises(KeyFileError):
        load_config(tmp_path)


def test_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "does-not-exist"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    _assert_good_message(str(info.value), [str(missing), "not found"])


def test_folder_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "user_config.json"
    f.write_text("{}")
    with pytest.raises(ConfigError) as info:
        load_config(f)
    _assert_good_message(str(info.value), [str(f)])


def test_missing_user_config_json_without_public_key(tmp_path: Path, keys: Any) -> None:
    # A private key alone is not the newcomer's recipe: with no config it names no relay,
    # so nothing says who may log in. The message says what to put in the folder.
    keys.copy_private("rsa_pem", tmp_path / "alice.first.pem")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    _assert_good_message(
        str(info.value), [str(tmp_path), "no user_config.json", "public key", ".pub"]
    )


def test_empty_folder_says_what_to_put_there(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    _assert_good_message(str(info.value), [str(tmp_path), "id_ed25519.pub", "help config"])


def test_only_a_public_key_means_the_quick_tunnel(tmp_path: Path, keys: Any) -> None:
    # The README's no-account recipe: the folder holds the laptop's .pub and nothing else.
    (tmp_path / "laptop.pub").write_text(keys.public_line("laptop") + "\n")
    cfg = load_config(tmp_path)
    assert cfg.route == "cloudflared"
    assert not cfg.cloudflared.named
    assert cfg.relay is None and cfg.frp is None
    assert cfg.name == DEFAULT_NAME
    assert [k.line for k in cfg.authorized_keys] == [keys.public_line("laptop")]
    assert [k.source for k in cfg.authorized_keys] == ["laptop.pub"]
    assert cfg.forwards == () and cfg.python_packages == ()
    # Nothing was written into the user's folder by reading it.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["laptop.pub"]


def test_only_a_public_key_still_takes_overrides(tmp_path: Path, keys: Any) -> None:
    (tmp_path / "laptop.pub").write_text(keys.public_line("laptop") + "\n")
    assert load_config(tmp_path, name="gpu1").name == "gpu1"
    # `up --tunnel relay` with no relay anywhere is still refused, in one line.
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, route="relay")
    _assert_good_message(str(info.value), [])


def test_user_config_json_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "user_config.json").mkdir()
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    _assert_good_message(str(info.value), [str(tmp_path / "user_config.json")])


def test_invalid_json_reports_position_of_trailing_comma(tmp_path: Path) -> None:
    write_config(tmp_path, '{\n  "name": "x",\n}\n')
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    _assert_good_message(str(info.value), ["line 3 column 1"])


# ------------------------------------------------------------ regressions (bugs found and fixed)


def test_regression_port_with_unicode_digit_gives_config_error(tmp_path: Path, keys: Any) -> None:
    write_config(tmp_path, _relay(port="²"))
    keys.copy_private("rsa_pem", tmp_path / "alice.pem")
    with pytest.raises(ConfigError, match="Fix:"):
        load_config(tmp_path)


@pytest.mark.parametrize("encoding", ["utf-16", "latin-1"])
def test_regression_non_utf8_config_gives_config_error(
    tmp_path: Path, keys: Any, encoding: str
) -> None:
    write_config(tmp_path, json.dumps(_base(name="café"), ensure_ascii=False).encode(encoding))
    keys.copy_private("rsa_pem", tmp_path / "alice.pem")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    _assert_good_message(str(info.value), [str(tmp_path / "user_config.json")])


@pytest.mark.parametrize(
    "extra",
    [
        {"relay": []},
        {"server": False},
        {"tunnel_options": ""},
        {"forwards": {}},
        {"forwards": 0},
    ],
    ids=["relay-list", "server-false", "tunnel-options-empty-string", "forwards-obj", "fwd-0"],
)
def test_regression_falsy_wrong_type_sections_are_rejected(
    tmp_path: Path, keys: Any, extra: dict[str, object]
) -> None:
    data = {**SEED_CONFIG, "relay": {"host": "h", "remote_port": 2}, **extra}
    write_config(tmp_path, data)
    keys.copy_private("rsa_pem", tmp_path / "alice.pem")
    with pytest.raises(ConfigError, match="Fix:"):
        load_config(tmp_path)


def test_regression_bad_forward_fix_text_shows_list_syntax(tmp_path: Path, keys: Any) -> None:
    write_config(tmp_path, _base(forwards=["x"]))
    keys.copy_private("rsa_pem", tmp_path / "alice.pem")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    fix = str(info.value).split("Fix:", 1)[1]
    assert '"0": 2222' not in fix
    assert "forwards" in fix


def test_copy_of_seed_folder_loads_identically(seed_folder: Path, tmp_path: Path) -> None:
    other = tmp_path / "copy"
    shutil.copytree(seed_folder, other)
    a, b = load_config(seed_folder), load_config(other)
    assert a.relay.key.public_line == b.relay.key.public_line
    assert [k.line for k in a.authorized_keys] == [k.line for k in b.authorized_keys]


def test_backend_fields_default_to_auto_and_accept_each_kind(tmp_path: Path, keys: Any) -> None:
    keys.copy_private("rsa_pem", tmp_path / "u.first.pem")
    write_config(tmp_path, SEED_CONFIG)
    cfg = load_config(tmp_path)
    assert (cfg.server_kind, cfg.tunnel_kind) == ("auto", "auto")
    for kind in ("auto", "openssh", "embedded"):
        write_config(tmp_path, _base(server={"kind": kind}, relay={"client": kind, "host": "h"}))
        cfg = load_config(tmp_path)
        assert (cfg.server_kind, cfg.tunnel_kind) == (kind, kind)
