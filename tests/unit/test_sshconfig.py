"""client/sshconfig: marked blocks, pinned known_hosts, the Include line, and `connect`."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from handy_colab.client import sshconfig as S
from handy_colab.client.connect import connect
from handy_colab.descriptor import Descriptor
from handy_colab.errors import AliasConflictError, ClientConfigError, ConfigError, HandyColabError
from tests.unit.conftest import ssh_g

MakeDesc = Callable[..., Descriptor]
SSH = shutil.which("ssh")
needs_ssh = pytest.mark.skipif(SSH is None, reason="OpenSSH client not installed")

USER_CONFIG = (
    "# my own settings\n"
    "Host work\n"
    "    HostName work.example.com\n"
    "    User me\n"
    "\n"
    "Host *\n"
    "    ServerAliveInterval 60\n"
    "    Port 2200\n"
    "    StrictHostKeyChecking accept-new\n"
    "  # trailing comment with no newline at the end"
)
BACKUP_RE = re.compile(r"^config\.handy-colab-backup-\d{8}-\d{6}(-\d+)?$")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its content (None for directories)."""
    out: dict[str, bytes | None] = {}
    for p in sorted(root.rglob("*")):
        out[str(p.relative_to(root))] = None if p.is_dir() else p.read_bytes()
    return out


def _write_desc(path: Path, desc: Descriptor) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(desc.to_json())
    return path


# --------------------------------------------------------------------------- replace_block


def test_replace_block_appends_to_empty() -> None:
    out = S.replace_block("", "colab", "Host colab\n    Port 1\n\n\n")
    assert out == (
        "# >>> handy-colab colab >>>\nHost colab\n    Port 1\n# <<< handy-colab colab <<<\n"
    )


def test_replace_block_appends_after_user_text_without_touching_it() -> None:
    user = "Host mine\n  HostName x"  # no trailing newline
    out = S.replace_block(user, "colab", "Host colab")
    assert out.startswith(user + "\n")
    assert (
        out == user + "\n\n# >>> handy-colab colab >>>\nHost colab\n# <<< handy-colab colab <<<\n"
    )


def test_replace_block_replaces_only_its_own_block() -> None:
    text = "# top text\nHost keep\n"
    text = S.replace_block(text, "colab", "Host colab\n    Port 1")
    text = S.replace_block(text, "gpu", "Host gpu\n    Port 2")
    text += "\n# user text after our blocks\nHost later\n  User z\n"
    gpu_block = "# >>> handy-colab gpu >>>\nHost gpu\n    Port 2\n# <<< handy-colab gpu <<<\n"
    assert gpu_block in text

    updated = S.replace_block(text, "colab", "Host colab\n    Port 99\n    User new")

    old_colab = "# >>> handy-colab colab >>>\nHost colab\n    Port 1\n# <<< handy-colab colab <<<\n"
    new_colab = (
        "# >>> handy-colab colab >>>\nHost colab\n    Port 99\n    User new\n"
        "# <<< handy-colab colab <<<\n"
    )
    assert updated == text.replace(old_colab, new_colab)
    # Everything before and after our block is byte-for-byte the same.
    start = text.index(old_colab)
    assert updated[:start] == text[:start]
    assert updated[start + len(new_colab) :] == text[start + len(old_colab) :]


def test_replace_block_is_idempotent() -> None:
    text = "Host a\n"
    once = S.replace_block(text, "colab", "Host colab\n    Port 1\n")
    twice = S.replace_block(once, "colab", "Host colab\n    Port 1\n")
    assert once == twice
    assert once.count("# >>> handy-colab colab >>>") == 1


def test_replace_block_name_is_not_a_regex_or_prefix() -> None:
    text = S.replace_block("", "axb", "Host axb")
    text = S.replace_block(text, "a.b-relay", "Host a.b-relay")
    out = S.replace_block(text, "a.b", "Host a.b")
    assert "Host axb" in out and "Host a.b-relay" in out and "Host a.b\n" in out
    assert out.startswith(text)
    assert S.replace_block(out, "a.b", "Host a.b\n    Port 7").count("Host axb") == 1


def test_replace_block_at_end_without_newline() -> None:
    text = S.replace_block("Host u\n", "colab", "Host colab").rstrip("\n")
    out = S.replace_block(text, "colab", "Host colab\n    Port 3")
    assert out == "Host u\n\n# >>> handy-colab colab >>>\nHost colab\n    Port 3\n" + (
        "# <<< handy-colab colab <<<\n"
    )


# --------------------------------------------------------------------------- known_hosts


# --------------------------------------------------------------------------- render


def _directives(block: str, host: str) -> dict[str, str]:
    """Directives of one ``Host`` section of a rendered block."""
    out: dict[str, str] = {}
    current = None
    for line in block.splitlines():
        if not line.strip():
            continue
        key, _, value = line.strip().partition(" ")
        if key == "Host":
            current = value
            continue
        if current == host:
            out.setdefault(key, value)
    return out


def test_render_public(make_descriptor: MakeDesc) -> None:
    block = S.render_host_blocks(make_descriptor(forwards=[6006]), None, "/kh")
    assert block.count("Host ") == 1
    d = _directives(block, "colab")
    assert d["HostName"] == "public.example.org"
    assert d["Port"] == "12345"
    assert d["User"] == "root"
    assert d["HostKeyAlias"] == "colab"
    assert d["StrictHostKeyChecking"] == "yes"
    assert d["UserKnownHostsFile"] == "/kh"
    assert d["LocalForward"] == "6006 127.0.0.1:6006"
    assert "ProxyJump" not in d
    assert "IdentityFile" not in d
    assert "StrictHostKeyChecking no" not in block


def test_render_private(make_descriptor: MakeDesc) -> None:
    block = S.render_host_blocks(make_descriptor(mode="private"), "/my key", "/k h")
    relay = _directives(block, "colab-relay")
    assert relay["HostName"] == "relay.example.org"
    assert relay["Port"] == "2200"
    assert relay["User"] == "alice"
    assert relay["HostKeyAlias"] == "colab-relay"
    assert relay["StrictHostKeyChecking"] == "yes"
    assert relay["IdentityFile"] == '"/my key"'
    assert relay["UserKnownHostsFile"] == '"/k h"'
    rt = _directives(block, "colab")
    # Reached through the relay's Unix socket, so no HostName/Port of its own.
    assert "HostName" not in rt and "Port" not in rt
    assert rt["ProxyCommand"].endswith(
        "-m handy_colab.streamlocal -F ~/.ssh/config.d/handy-colab colab-relay "
        "/tmp/handy-colab-alice-colab.sock"
    )
    assert rt["HostKeyAlias"] == "colab"
    assert rt["StrictHostKeyChecking"] == "yes"
    assert rt["IdentitiesOnly"] == "yes"
    assert "StrictHostKeyChecking no" not in block


# --------------------------------------------------------------------------- ssh -G


@needs_ssh
@pytest.mark.parametrize("identity", [None, "/tmp/some dir/key"])
def test_ssh_parses_public_block(
    tmp_path: Path, make_descriptor: MakeDesc, identity: str | None
) -> None:
    kh = tmp_path / "known hosts"
    cfg = tmp_path / "cfg"
    cfg.write_text(S.render_host_blocks(make_descriptor(forwards=[6006, 8888]), identity, str(kh)))
    g = ssh_g(cfg, "colab")
    assert g["hostname"] == "public.example.org"
    assert g["port"] == "12345"
    assert g["user"] == "root"
    assert g["hostkeyalias"] == "colab"
    assert g["stricthostkeychecking"] == "true"
    assert g["userknownhostsfile"] == str(kh)
    assert g["checkhostip"] == "no"
    assert g["localforward"] == "6006 [127.0.0.1]:6006"
    if identity:
        assert g["identityfile"] == identity
        assert g["identitiesonly"] == "yes"


@needs_ssh
def test_ssh_parses_private_blocks(tmp_path: Path, make_descriptor: MakeDesc) -> None:
    cfg = tmp_path / "cfg"
    cfg.write_text(S.render_host_blocks(make_descriptor(mode="private"), None, "/kh"))
    rt = ssh_g(cfg, "colab")
    assert "handy_colab.streamlocal" in rt["proxycommand"]
    assert "colab-relay /tmp/handy-colab-alice-colab.sock" in rt["proxycommand"]
    assert rt["hostkeyalias"] == "colab"
    assert rt["stricthostkeychecking"] == "true"
    relay = ssh_g(cfg, "colab-relay")
    assert relay["hostname"] == "relay.example.org"
    assert relay["port"] == "2200"
    assert relay["user"] == "alice"
    assert relay["hostkeyalias"] == "colab-relay"
    assert relay["stricthostkeychecking"] == "true"
    assert "proxyjump" not in relay


# --------------------------------------------------------------------------- connect


@pytest.fixture
def desc_file(tmp_path: Path, make_descriptor: MakeDesc) -> Path:
    return _write_desc(tmp_path / "dl" / "colab.json", make_descriptor())


def _user_ssh(home: Path, content: str | None = USER_CONFIG, mode: int = 0o644) -> Path:
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    cfg = ssh_dir / "config"
    if content is not None:
        cfg.write_text(content)
        cfg.chmod(mode)
    return cfg


def test_connect_writes_managed_file_include_and_backup(
    home: Path, desc_file: Path, keys: Any
) -> None:
    user_cfg = _user_ssh(home)

    res = connect(desc_file)

    managed = home / ".ssh" / "config.d" / "handy-colab"
    known = home / ".ssh" / "handy-colab_known_hosts"
    assert res.name == "colab"
    assert res.config_file == managed
    assert res.known_hosts == known
    assert res.include_in == user_cfg
    assert res.identity is None
    # The managed file holds our marked block, private to the user.
    text = managed.read_text()
    assert text.startswith("# >>> handy-colab colab >>>\n# handy-colab descriptor: ")
    assert "\nHost colab\n" in text
    assert text.endswith("# <<< handy-colab colab <<<\n")
    assert f"UserKnownHostsFile {known}" in text
    assert "StrictHostKeyChecking no" not in text
    assert _mode(managed) == 0o600
    # known_hosts pins the runtime's key under its alias (and its address, for sshj).
    assert known.read_text() == (
        f"colab {keys.blob('ed25519')} handy-colab:colab\n"
        f"[public.example.org]:12345 {keys.blob('ed25519')} handy-colab:colab\n"
    )
    assert _mode(known) == 0o600
    # Exactly one Include, at the top; the rest of the user's file byte-for-byte.
    new_user = user_cfg.read_text()
    assert new_user.startswith(f"Include {managed}\n")
    assert new_user.endswith(USER_CONFIG)
    assert new_user[: -len(USER_CONFIG)].rstrip("\n") == f"Include {managed}"
    assert sum(ln.strip().lower().startswith("include") for ln in new_user.splitlines()) == 1
    assert _mode(user_cfg) == 0o644  # the user's mode is kept
    # A timestamped backup of the user's config, identical to the original.
    backups = [p for p in (home / ".ssh").iterdir() if "backup" in p.name]
    assert len(backups) == 1
    assert BACKUP_RE.match(backups[0].name), backups[0].name
    assert backups[0].read_text() == USER_CONFIG
    assert res.backups == backups


def test_connect_twice_changes_nothing(home: Path, desc_file: Path) -> None:
    _user_ssh(home)
    connect(desc_file)
    before = _snapshot(home)

    res = connect(desc_file)

    assert res.backups == []
    assert _snapshot(home) == before
    text = (home / ".ssh" / "config").read_text()
    assert text.count("Include ") == 1


@needs_ssh
def test_connect_result_resolves_through_users_config(home: Path, desc_file: Path) -> None:
    user_cfg = _user_ssh(home)
    connect(desc_file)
    g = ssh_g(user_cfg, "colab")
    # Our Include comes first, so the user's `Host *` Port/StrictHostKeyChecking do not win.
    assert g["hostname"] == "public.example.org"
    assert g["port"] == "12345"
    assert g["stricthostkeychecking"] == "true"
    assert g["userknownhostsfile"] == str(home / ".ssh" / "handy-colab_known_hosts")
    # The user's own hosts still resolve as before.
    work = ssh_g(user_cfg, "work")
    assert work["hostname"] == "work.example.com"
    assert work["port"] == "2200"


def test_connect_without_existing_ssh_dir(home: Path, desc_file: Path) -> None:
    res = connect(desc_file)
    user_cfg = home / ".ssh" / "config"
    assert user_cfg.read_text() == f"Include {home / '.ssh' / 'config.d' / 'handy-colab'}\n"
    assert _mode(user_cfg) == 0o600
    assert res.backups == []
    assert not [p for p in (home / ".ssh").iterdir() if "backup" in p.name]


def test_connect_empty_user_config(home: Path, desc_file: Path) -> None:
    user_cfg = _user_ssh(home, content="")
    res = connect(desc_file)
    assert user_cfg.read_text().splitlines() == [f"Include {res.config_file}"]


@pytest.mark.parametrize(
    "line",
    [
        "Include {managed}",
        "include {managed}",
        "  Include ~/.ssh/config.d/handy-colab",
        "Include ~/.ssh/config.d/handy-colab other_file",
    ],
)
def test_connect_existing_include_is_not_duplicated(home: Path, desc_file: Path, line: str) -> None:
    managed = home / ".ssh" / "config.d" / "handy-colab"
    content = "Host x\n  User y\n\n" + line.format(managed=managed) + "\n"
    user_cfg = _user_ssh(home, content=content)
    res = connect(desc_file)
    assert user_cfg.read_text() == content
    assert not [p for p in res.backups if p.name.startswith("config.")]


def test_connect_update_host_key_replaces_only_its_line(
    home: Path, tmp_path: Path, make_descriptor: MakeDesc, keys: Any
) -> None:
    _user_ssh(home)
    other = _write_desc(
        tmp_path / "o" / "other.json",
        make_descriptor(name="other", mode="private", host_keys=[keys.blob("ecdsa")]),
    )
    connect(other)
    connect(_write_desc(tmp_path / "a" / "colab.json", make_descriptor()))
    known = home / ".ssh" / "handy-colab_known_hosts"
    managed = home / ".ssh" / "config.d" / "handy-colab"
    kh_before = known.read_text().splitlines()
    cfg_before = managed.read_text()
    user_before = (home / ".ssh" / "config").read_text()
    assert f"colab {keys.blob('ed25519')} handy-colab:colab" in kh_before
    rebuilt = _write_desc(
        tmp_path / "b" / "colab.json",
        make_descriptor(host_keys=[keys.blob("ed25519_b")], remote_port=23456),
    )
    # Other host keys for the same alias: refused, naming both keys, and nothing written.
    snap = _snapshot(home)
    with pytest.raises(AliasConflictError, match="'colab' is pinned to another host key"):
        connect(rebuilt)
    assert _snapshot(home) == snap

    res = connect(rebuilt, replace=True)

    kh_after = known.read_text().splitlines()
    assert [ln for ln in kh_after if ln.startswith("colab ")] == [
        f"colab {keys.blob('ed25519_b')} handy-colab:colab"
    ]
    ours = ("colab ", "[public.example.org]:")
    assert [ln for ln in kh_after if not ln.startswith(ours)] == [
        ln for ln in kh_before if not ln.startswith(ours)
    ]
    # The address pin moved with the port: the old one is gone, not left to go stale.
    assert [ln for ln in kh_after if ln.startswith("[public")] == [
        f"[public.example.org]:23456 {keys.blob('ed25519_b')} handy-colab:colab"
    ]
    assert f"other {keys.blob('ecdsa')} handy-colab:other" in kh_after
    assert f"other-relay {keys.blob('ecdsa')} handy-colab:other" in kh_after
    # The other runtime's block is untouched; ours has the new port.
    cfg_after = managed.read_text()
    other_block = cfg_before[: cfg_before.index("# >>> handy-colab colab >>>")]
    assert cfg_after.startswith(other_block)
    ours = cfg_after[len(other_block) :]
    assert "Port 23456" in ours and "Port 12345" not in ours
    assert (home / ".ssh" / "config").read_text() == user_before
    # The old known_hosts was backed up before being replaced.
    assert any(
        p.name.startswith("handy-colab_known_hosts.handy-colab-backup-") for p in res.backups
    )


def test_connect_explicit_paths_leave_home_untouched(
    home: Path, desc_file: Path, tmp_path: Path, keys: Any
) -> None:
    _user_ssh(home)
    before = _snapshot(home)
    cfg = tmp_path / "out" / "ssh_config"
    kh = tmp_path / "out2" / "kh"

    res = connect(desc_file, ssh_config=cfg, known_hosts=kh)

    assert _snapshot(home) == before
    assert res.config_file == cfg
    assert res.known_hosts == kh
    assert res.include_in is None
    assert res.backups == []
    assert "Host colab" in cfg.read_text()
    assert f"UserKnownHostsFile {kh}" in cfg.read_text()
    assert kh.read_text() == (
        f"colab {keys.blob('ed25519')} handy-colab:colab\n"
        f"[public.example.org]:12345 {keys.blob('ed25519')} handy-colab:colab\n"
    )


def test_connect_explicit_paths_without_any_ssh_dir(
    home: Path, desc_file: Path, tmp_path: Path
) -> None:
    connect(desc_file, ssh_config=tmp_path / "c", known_hosts=tmp_path / "k")
    assert not (home / ".ssh").exists()


@needs_ssh
def test_connect_explicit_config_parses_with_ssh(
    home: Path, tmp_path: Path, make_descriptor: MakeDesc
) -> None:
    desc = _write_desc(tmp_path / "d.json", make_descriptor(mode="private", forwards=[8888]))
    cfg = tmp_path / "ssh_config"
    connect(desc, ssh_config=cfg, known_hosts=tmp_path / "kh")
    g = ssh_g(cfg, "colab")
    # connect() points the proxy at the very config file it wrote.
    assert f"-F {cfg} colab-relay /tmp/handy-colab-alice-colab.sock" in g["proxycommand"]
    assert g["stricthostkeychecking"] == "true"
    assert g["localforward"] == "8888 [127.0.0.1]:8888"
    r = ssh_g(cfg, "colab-relay")
    assert (r["hostname"], r["port"], r["user"]) == ("relay.example.org", "2200", "alice")
    assert r["stricthostkeychecking"] == "true"
    assert (tmp_path / "kh").read_text().splitlines()[-1].startswith("colab-relay ")


def test_connect_from_config_folder_copies_identity_0600(
    home: Path, tmp_path: Path, make_descriptor: MakeDesc, keys: Any
) -> None:
    folder = tmp_path / "drive"
    folder.mkdir()
    src_key = keys.copy_private("rsa_pem", folder / "alice.first.pem", mode=0o644)
    (folder / "user_config.json").write_text("{}")
    _write_desc(
        folder / "connections" / "colab.json", make_descriptor(identity_hint="alice.first.pem")
    )

    res = connect(folder)

    copy = home / ".ssh" / "handy-colab-colab.key"
    assert res.identity == str(copy)
    assert copy.read_bytes() == src_key.read_bytes()
    assert _mode(copy) == 0o600
    assert _mode(src_key) == 0o644
    text = res.config_file.read_text()
    assert f"IdentityFile {copy}" in text and "IdentitiesOnly yes" in text
    # user_config.json as the source means its folder.
    assert connect(folder / "user_config.json").identity == str(copy)


def test_connect_explicit_private_identity_is_used_in_place(
    home: Path, desc_file: Path, tmp_path: Path, keys: Any
) -> None:
    key = keys.copy_private("ed25519", tmp_path / "id_ed25519", mode=0o600)
    res = connect(desc_file, identity=key)
    assert res.identity == str(key.resolve())
    assert not (home / ".ssh" / "handy-colab-colab.key").exists()


def test_connect_identity_errors(home: Path, desc_file: Path, tmp_path: Path, keys: Any) -> None:
    with pytest.raises(ClientConfigError) as info:
        connect(desc_file, identity=tmp_path / "missing")
    assert "Fix:" in str(info.value) and "\n" not in str(info.value)
    pub = keys.copy_public("laptop", tmp_path)
    pub.chmod(0o644)
    with pytest.raises(ClientConfigError, match="Fix:"):
        connect(desc_file, identity=pub)


def test_connect_source_errors(home: Path, tmp_path: Path, make_descriptor: MakeDesc) -> None:
    folder = tmp_path / "cfg"
    folder.mkdir()
    with pytest.raises(ConfigError, match="no connection descriptor"):
        connect(folder)
    _write_desc(folder / "connections" / "a.json", make_descriptor(name="a"))
    _write_desc(folder / "connections" / "b.json", make_descriptor(name="b"))
    with pytest.raises(ConfigError, match=r"several runtimes \(a, b\)"):
        connect(folder)
    assert connect(folder, name="b").name == "b"
    with pytest.raises(ConfigError, match="Fix:"):
        connect(folder, name="bad name")
    with pytest.raises(ConfigError, match="Fix:"):
        connect(tmp_path / "nothing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "x"}))
    with pytest.raises(ConfigError, match="Fix:"):
        connect(bad)


def test_connect_unwritable_target_is_a_clean_error(home: Path, desc_file: Path) -> None:
    blocker = home / "blocker"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(HandyColabError) as info:
        connect(desc_file, ssh_config=blocker / "cfg", known_hosts=home / "kh")
    assert "Fix:" in str(info.value)


# ------------------------------------------------------------ regressions (bugs found and fixed)


def test_regression_include_not_duplicated_when_home_has_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, desc_file: Path
) -> None:
    home = tmp_path / "my home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    user_cfg = _user_ssh(home)
    connect(desc_file)
    once = user_cfg.read_text()
    res = connect(desc_file)
    assert user_cfg.read_text() == once
    assert res.backups == []


def test_regression_symlinked_user_config_stays_a_symlink(
    home: Path, tmp_path: Path, desc_file: Path
) -> None:
    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir()
    target = dotfiles / "ssh_config"
    target.write_text(USER_CONFIG)
    (home / ".ssh").mkdir()
    link = home / ".ssh" / "config"
    link.symlink_to(target)

    connect(desc_file)

    assert link.is_symlink()
    assert target.read_text().startswith("Include ")


@needs_ssh
def test_regression_descriptor_cannot_inject_ssh_directives(
    home: Path, tmp_path: Path, make_descriptor: MakeDesc
) -> None:
    desc = _write_desc(
        tmp_path / "evil.json", make_descriptor(public_host="h\n    ProxyCommand false")
    )
    cfg = tmp_path / "cfg"
    try:
        connect(desc, ssh_config=cfg, known_hosts=tmp_path / "kh")
    except ConfigError:
        return
    assert "proxycommand" not in ssh_g(cfg, "colab")


def test_home_fixture_isolated(home: Path) -> None:
    assert os.environ["HOME"] == str(home)
    assert S.default_paths()[0] == home / ".ssh" / "config"
