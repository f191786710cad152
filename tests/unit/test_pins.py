"""client/pins: each runtime's known_hosts lines are its own; a descriptor that would move
another runtime's pin (or the user's) is a conflict; `connect` refuses it, writing nothing."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from handy_colab.client import pins
from handy_colab.client.connect import connect
from handy_colab.descriptor import Descriptor
from handy_colab.errors import AliasConflictError
from tests.unit.conftest import SSH

MakeDesc = Callable[..., Descriptor]


def test_lines_are_tagged_and_keyed_by_alias_and_address(
    make_descriptor: MakeDesc, keys: Any
) -> None:
    k, relay = keys.blob("ed25519"), keys.blob("ecdsa")
    assert pins.known_hosts_lines(make_descriptor(mode="public")) == {
        "colab": [f"colab {k} handy-colab:colab"],
        "[public.example.org]:12345": [f"[public.example.org]:12345 {k} handy-colab:colab"],
    }
    on22 = pins.known_hosts_lines(make_descriptor(mode="public", remote_port=22))
    assert on22["public.example.org"] == [f"public.example.org {k} handy-colab:colab"]
    assert pins.known_hosts_lines(make_descriptor(mode="private")) == {
        "colab": [f"colab {k} handy-colab:colab"],
        "colab-relay": [f"colab-relay {relay} handy-colab:colab"],
    }


def test_merge_replaces_only_this_alias_lines(make_descriptor: MakeDesc, keys: Any) -> None:
    k1, k2, k3 = keys.blob("ed25519"), keys.blob("ed25519_b"), keys.blob("ecdsa")
    text = (
        "# comment colab\n"
        f"other {k3} handy-colab:other\n"
        f"colab {k1}\n"  # an older connect's untagged line for this alias
        f"colab-relay {k3}\n"
        f"colab,alias {k1}\n"
        f"|1|hashed= {k1}\n"
        "\n"
        f"colabx {k1}\n"
        f"[public.example.org]:999 {k1}\n"  # the previous descriptor's address, untagged
        f"[public.example.org]:998 {k1}\n"  # someone else's
    )
    desc = make_descriptor(host_keys=[k2])
    out = pins.merge(text, desc, legacy={"[public.example.org]:999"}, replace=True)
    assert out.splitlines() == [
        "# comment colab",
        f"other {k3} handy-colab:other",
        f"colab,alias {k1}",
        f"|1|hashed= {k1}",
        "",
        f"colabx {k1}",
        f"[public.example.org]:998 {k1}",
        f"colab {k2} handy-colab:colab",
        f"[public.example.org]:12345 {k2} handy-colab:colab",
    ]
    assert pins.merge(out, desc) == out
    assert pins.merge("", desc).startswith(f"colab {k2} handy-colab:colab\n")


def test_conflicts_name_who_holds_the_pin(make_descriptor: MakeDesc, keys: Any) -> None:
    k1, k2 = keys.blob("ed25519"), keys.blob("ed25519_b")
    desc = make_descriptor(host_keys=[k1])
    assert pins.conflicts("", desc) == []
    # The same runtime again (same key), or one more key: no conflict.
    assert pins.conflicts(f"colab {k1} handy-colab:colab\n", desc) == []
    assert pins.conflicts(f"colab {k1}\n", make_descriptor(host_keys=[k1, k2])) == []
    # The alias is pinned to another key (an older untagged line counts as ours).
    for line in (f"colab {k2} handy-colab:colab", f"colab {k2}"):
        (problem,) = pins.conflicts(line + "\n", desc)
        assert problem.startswith("'colab' is pinned to another host key (SHA256:")
    # Another runtime, or the user, pins this descriptor's address with another key.
    addr = "[public.example.org]:12345"
    (problem,) = pins.conflicts(f"{addr} {k2} handy-colab:other\n", desc)
    assert problem == f"{addr} is pinned by runtime 'other' with another host key"
    (problem,) = pins.conflicts(f"{addr} {k2}\n", desc)
    assert problem == f"{addr} is pinned by a line of yours with another host key"
    # ... with the same key: nothing is taken from anyone.
    assert pins.conflicts(f"{addr} {k1} handy-colab:other\n", desc) == []
    # Private mode: the relay alias is this runtime's own.
    priv = make_descriptor(mode="private", host_keys=[k1])
    (problem,) = pins.conflicts(f"colab-relay {k2} handy-colab:colab\n", priv)
    assert problem.startswith("its relay is pinned to another host key")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_descriptor_cannot_move_another_runtimes_pin(
    tmp_path: Path, make_descriptor: MakeDesc, keys: Any
) -> None:
    """Runtime "other" is public at vps.example.org:2222; a second descriptor aims its own
    address pin at that address with its own key: refused, nothing written; --replace (the
    user says so) takes it."""
    cfg, kh = tmp_path / "out" / "config", tmp_path / "out" / "kh"
    k1, k2 = keys.blob("ed25519"), keys.blob("ed25519_b")

    def put(desc: Descriptor, name: str) -> Path:
        path = tmp_path / "in" / f"{name}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(desc.to_json())
        return path

    other = make_descriptor(name="other", public_host="vps.example.org", remote_port=2222)
    connect(put(other, "other"), ssh_config=cfg, known_hosts=kh, vscode=False)
    evil = make_descriptor(
        name="evil", host_keys=[k2], public_host="vps.example.org", remote_port=2222
    )
    before = _files(tmp_path / "out")
    with pytest.raises(AliasConflictError) as err:
        connect(put(evil, "evil"), ssh_config=cfg, known_hosts=kh, vscode=False)
    assert "[vps.example.org]:2222 is pinned by runtime 'other'" in str(err.value)
    assert "--replace" in str(err.value) and "--alias" in str(err.value)
    assert _files(tmp_path / "out") == before
    # The same alias with other keys: refused too; under --alias both are kept.
    rebuilt = make_descriptor(name="other", host_keys=[k2], public_host="b.example.org")
    with pytest.raises(AliasConflictError, match="'other' is pinned to another host key"):
        connect(put(rebuilt, "rebuilt"), ssh_config=cfg, known_hosts=kh, vscode=False)
    assert _files(tmp_path / "out") == before
    res = connect(put(rebuilt, "rebuilt"), ssh_config=cfg, known_hosts=kh, alias="other2")
    assert res.name == "other2"
    text = kh.read_text()
    assert f"other {k1} handy-colab:other\n" in text
    assert f"other2 {k2} handy-colab:other2\n" in text
    assert "\nHost other2\n" in cfg.read_text() and "\nHost other\n" in cfg.read_text()
    if SSH is not None:
        # ssh itself takes each alias's key from its own line.
        for alias in ("other", "other2"):
            res2 = subprocess.run(
                [SSH, "-G", "-F", str(cfg), alias], capture_output=True, text=True, timeout=20
            )
            assert f"\nhostkeyalias {alias}\n" in res2.stdout
    connect(put(evil, "evil"), ssh_config=cfg, known_hosts=kh, replace=True, vscode=False)
    text = kh.read_text()
    assert f"[vps.example.org]:2222 {k1} handy-colab:other" not in text
    assert f"[vps.example.org]:2222 {k2} handy-colab:evil" in text
    assert f"other {k1} handy-colab:other\n" in text  # its alias pin stays its own


def test_an_address_is_never_pinned_in_a_file_ssh_reads_for_every_host(
    home: Path, tmp_path: Path, make_descriptor: MakeDesc, keys: Any, caplog: Any
) -> None:
    """A public descriptor names github.com:22 as its address. In handy-colab's own file
    (read by ssh only through our Host blocks) the address pin is there for sshj; with
    --known-hosts ~/.ssh/known_hosts (read by every ssh) only the alias is pinned, so the
    line cannot vouch for github.com to the user's `ssh`/`git`, and connect says so."""
    k = keys.blob("ed25519")
    desc = make_descriptor(name="gh", public_host="github.com", remote_port=22)
    path = tmp_path / "in" / "gh.json"
    path.parent.mkdir()
    path.write_text(desc.to_json())
    own = tmp_path / "own" / "handy-colab_known_hosts"
    connect(path, ssh_config=tmp_path / "own" / "config", known_hosts=own, vscode=False)
    assert f"github.com {k} handy-colab:gh\n" in own.read_text()
    shared = home / ".ssh" / "known_hosts"
    shared.parent.mkdir(exist_ok=True)
    mine = "other.example.org ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMine\n"
    shared.write_text(mine)
    with caplog.at_level("WARNING"):
        connect(path, ssh_config=tmp_path / "c2", known_hosts=shared, vscode=False)
    assert shared.read_text() == mine + f"gh {k} handy-colab:gh\n"
    assert "read by ssh for every host" in caplog.text and "github.com" in caplog.text
    # ... nor a conflict there: the address is not ours to check in that file.
    shared.write_text(f"github.com {keys.blob('ecdsa')}\n")
    connect(path, ssh_config=tmp_path / "c3", known_hosts=shared, vscode=False)
    assert shared.read_text().startswith(f"github.com {keys.blob('ecdsa')}\n")
    # The lines without the address are the alias's alone.
    assert pins.known_hosts_lines(desc, addresses=False) == {"gh": [f"gh {k} handy-colab:gh"]}
