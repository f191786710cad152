"""The user's own ssh config wins or `connect` stops: `ssh -G` (real OpenSSH) decides whether
anything of theirs, outside our managed file, applies to the alias we would write."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from handy_colab.client.connect import connect
from handy_colab.client.userconfig import user_definition, without_ours
from handy_colab.descriptor import Descriptor
from handy_colab.errors import AliasConflictError

MakeDesc = Callable[..., Descriptor]
if shutil.which("ssh") is None and os.environ.get("CI") == "true":
    raise AssertionError("OpenSSH's ssh is needed (apt-get install openssh-client)")
pytestmark = pytest.mark.skipif(shutil.which("ssh") is None, reason="no OpenSSH client")


@pytest.fixture
def ssh_dir(tmp_path: Path) -> Path:
    d = tmp_path / "home" / ".ssh"
    (d / "config.d").mkdir(parents=True)
    (d / "config.d" / "handy-colab").write_text("Host colab\n    User root\n")
    return d


def _check(ssh_dir: Path, user: str, alias: str = "colab") -> str | None:
    (ssh_dir / "config").write_text(f"Include {ssh_dir}/config.d/handy-colab\n\n{user}")
    return user_definition([alias], ssh_dir / "config", ssh_dir / "config.d" / "handy-colab")


NO_CONFLICT = {
    "only unrelated hosts": "Host work\n    HostName work.example.com\n    User me\n",
    "Host * for everyone": "Host *\n    ServerAliveInterval 60\n    User me\n    Port 2200\n",
    "a %h and %C in Host *": "Host *\n    ControlPath ~/.ssh/cm-%C\n    LocalCommand echo %h\n",
    "a literal name in Host *": "Host *\n    IdentityFile ~/.ssh/colab_key\n",
    "a negated alias": "Host * !colab\n    User other\n",
    "a longer name": "Host colabx\n    User other\n",
    "another case": "Host COLAB\n    User other\n",  # OpenSSH's Host is case-sensitive
    "Match of another host": "Match host work\n    User other\n",
}
CONFLICT = {
    "Host colab": ("Host colab\n    User me\n", "line 3 (Host colab)"),
    "Host col*": ("Host col*\n    Port 2222\n", "line 3 (Host col*)"),
    "Host c?lab among others": ("Host work c?lab\n    User x\n", "line 3 (Host work c?lab)"),
    "Match host colab": ("Match host colab\n    User me\n", "line 3 (Match host colab)"),
}


@pytest.mark.parametrize("case", NO_CONFLICT)
def test_what_does_not_touch_the_alias_is_no_conflict(ssh_dir: Path, case: str) -> None:
    assert _check(ssh_dir, NO_CONFLICT[case]) is None


@pytest.mark.parametrize("case", CONFLICT)
def test_a_block_of_yours_for_the_alias_is_named(ssh_dir: Path, case: str) -> None:
    user, where = CONFLICT[case]
    found = _check(ssh_dir, user)
    assert found is not None and found.startswith("'colab': ")
    assert f"{ssh_dir / 'config'} {where}" in found, found


def test_relative_and_glob_includes_count_but_ours_does_not(ssh_dir: Path) -> None:
    (ssh_dir / "other.conf").write_text("Host colab\n    User me\n")
    (ssh_dir / "config.d" / "work").write_text("Host work\n    User me\n")
    managed = ssh_dir / "config.d" / "handy-colab"
    cfg = ssh_dir / "config"
    # A glob holding our managed file (which defines colab) and another file: only the
    # other file counts.
    cfg.write_text("Include config.d/*\n")
    assert user_definition(["colab"], cfg, managed) is None
    copy = without_ours(cfg.read_text(), ssh_dir, managed)
    assert copy == f"Include {ssh_dir}/config.d/work\n"
    # A relative Include of the user's that defines it: named, file and line.
    cfg.write_text("Include config.d/*\nInclude other.conf\n")
    found = user_definition(["colab"], cfg, managed)
    assert found is not None and f"{ssh_dir / 'other.conf'} line 1 (Host colab)" in found
    # Our own file, however it is named in the Include, is never the user's.
    for spelling in (str(managed), "config.d/handy-colab", "~/.ssh/config.d/handy-colab"):
        text = without_ours(f"Include {spelling}\nHost x\n", ssh_dir, managed)
        if spelling.startswith("~") and not str(ssh_dir).startswith(str(Path.home())):
            continue  # ~ is this test's real home, not the fake one
        assert text == "Host x\n", spelling


def test_every_alias_we_write_is_checked(ssh_dir: Path) -> None:
    found = user_definition(
        ["colab", "colab-relay"],
        _write(ssh_dir / "config", "Host *-relay\n    User me\n"),
        ssh_dir / "config.d" / "handy-colab",
    )
    assert found is not None and found.startswith("'colab-relay': ")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_no_user_config_and_unreadable_config_are_not_conflicts(ssh_dir: Path) -> None:
    managed = ssh_dir / "config.d" / "handy-colab"
    assert user_definition(["colab"], ssh_dir / "config", managed) is None
    # ssh cannot parse it: ssh would fail the same way; not our place to refuse.
    assert user_definition(["colab"], _write(ssh_dir / "config", "Bogus x\n"), managed) is None


def test_connect_stops_rather_than_shadow_your_host_and_alias_is_the_fix(
    home: Path, tmp_path: Path, make_descriptor: MakeDesc
) -> None:
    ssh = home / ".ssh"
    ssh.mkdir(mode=0o700)
    mine = "Host colab\n    HostName my-own.example.org\n    User me\n"
    (ssh / "config").write_text(mine)
    src = tmp_path / "colab.json"
    src.write_text(make_descriptor().to_json())
    with pytest.raises(AliasConflictError) as err:
        connect(src, vscode=False)
    msg = str(err.value)
    assert f"'colab': {ssh / 'config'} line 1 (Host colab)" in msg and "--alias" in msg, msg
    assert sorted(p.name for p in ssh.iterdir()) == ["config"]  # nothing written
    assert (ssh / "config").read_text() == mine
    res = connect(src, vscode=False, alias="colab2")
    assert res.name == "colab2"
    assert (ssh / "config").read_text().endswith(mine)
