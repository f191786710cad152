"""relay-setup: the plan per mode, input errors, the authorized_keys merge, and `apply`
into a temporary root checked by the real sshd (-t and -T; no network, no daemon)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from handy_colab import relay_setup as rs
from handy_colab.cli import main as cli_main
from handy_colab.errors import ConfigError, KeyFileError, RelaySetupError
from tests.unit.conftest import KeyStore

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SOCK = "/tmp/handy-colab-hct-colab.sock"


def settings_of(dropin: str) -> dict[str, str]:
    """Keyword -> value of the Match block's option lines."""
    out = {}
    for line in dropin.splitlines():
        s = line.strip()
        if line.startswith("    ") and not s.startswith("#"):
            keyword, value = s.split(" ", 1)
            out[keyword] = value
    return out


def test_public_plan(keys: KeyStore) -> None:
    plan = rs.make_plan(str(keys.public("rsa_pem")), account="hct", remote_port=2222)
    assert plan.mode == "public" and plan.socket_path is None
    line = keys.public_line("rsa_pem")
    assert plan.authorized_keys == (
        f'restrict,port-forwarding,permitlisten="2222" {line} handy-colab:colab',
    )
    text = plan.dropin()
    assert "\nMatch User hct\n" in text
    assert settings_of(text) == {
        "AuthorizedKeysFile": "/etc/ssh/handy-colab/authorized_keys/%u",
        "AuthenticationMethods": "publickey",
        "AllowTcpForwarding": "remote",
        "PermitListen": "2222",
        "GatewayPorts": "yes",
        "PermitOpen": "none",
        "AllowStreamLocalForwarding": "no",
        "MaxSessions": "0",
        "ForceCommand": "/usr/sbin/nologin",
        "PermitTTY": "no",
        "X11Forwarding": "no",
        "AllowAgentForwarding": "no",
        "PermitTunnel": "no",
        "PermitUserRC": "no",
        "ClientAliveInterval": "5",
        "ClientAliveCountMax": "2",
    }
    assert "useradd --system" in plan.account_commands[0]
    assert "--shell /usr/sbin/nologin --password '*'" in plan.account_commands[0]
    assert plan.dropin_name == "handy-colab-hct.conf"


def test_private_plan_with_laptop_keys(keys: KeyStore) -> None:
    plan = rs.make_plan(
        keys.public_line("ed25519"),
        account="hct",
        mode="private",
        laptop_keys=[str(keys.public("laptop")), keys.public_line("ed25519")],  # dup dropped
    )
    assert plan.socket_path == SOCK
    options = f'restrict,port-forwarding,permitopen="[{SOCK}]:*"'
    assert [line.split(" ssh-")[0] for line in plan.authorized_keys] == [options, options]
    assert plan.authorized_keys[1] == f"{options} {keys.public_line('laptop')} handy-colab:colab"
    got = settings_of(plan.dropin())
    assert got["AllowTcpForwarding"] == "yes"
    assert got["PermitListen"] == "none"
    assert got["PermitOpen"] == f"[{SOCK}]:*"
    assert got["AllowStreamLocalForwarding"] == "yes"
    assert got["StreamLocalBindUnlink"] == "yes"
    assert got["StreamLocalBindMask"] == "0177"
    assert "GatewayPorts" not in got
    assert got["MaxSessions"] == "0" and got["PermitTTY"] == "no"
    assert any("StreamLocalBindUnlink" in n for n in plan.notes)
    # Its own root, whose only writable folder is /tmp; keys out of its reach.
    assert got["ChrootDirectory"] == "/var/lib/handy-colab/relay/%u"
    assert got["AuthorizedKeysFile"] == "/etc/ssh/handy-colab/authorized_keys/%u"
    assert plan.chroot == Path("/var/lib/handy-colab/relay/hct")
    assert (
        "install -d -m 0700 -o hct -g hct /var/lib/handy-colab/relay/hct/tmp"
        in plan.account_commands
    )


def test_every_option_line_says_why(keys: KeyStore) -> None:
    for mode, port in (("public", 2222), ("private", None)):
        plan = rs.make_plan(keys.public_line("ed25519"), mode=mode, remote_port=port)
        body = plan.dropin().split("Match User handy-colab\n", 1)[1].splitlines()
        assert len(body) == 2 * len(plan.settings)
        for why, option in zip(body[::2], body[1::2], strict=True):
            assert why.startswith("    # ") and len(why) > 10
            assert not option.strip().startswith("#")


def test_render_names_every_part(keys: KeyStore) -> None:
    plan = rs.make_plan(keys.public_line("ed25519"), account="hct", remote_port=2300)
    text = rs.render(plan)
    assert plan.account_commands[0] in text
    assert plan.authorized_keys[0] in text
    assert "/etc/ssh/sshd_config.d/handy-colab-hct.conf" in text
    assert "systemctl reload ssh" in text and "kill -HUP" in text


@pytest.mark.skipif(not Path(SSHD).exists(), reason="needs OpenSSH's sshd")
@pytest.mark.parametrize("mode", ["public", "private"])
def test_dropin_is_what_sshd_applies_and_nothing_leaks(
    mode: str, keys: KeyStore, tmp_path: Path
) -> None:
    """The real sshd parses the drop-in (every option inside Match) and applies it to the
    account only: the main config's lines after the Include stay global."""
    plan = rs.make_plan(
        keys.public_line("ed25519"),
        account="hct",
        mode=mode,
        remote_port=2222 if mode == "public" else None,
    )
    main = _sshd_tree(tmp_path, plan)
    Path("/run/sshd").mkdir(exist_ok=True)
    values = rs.effective(SSHD, main, "hct")
    for s in plan.settings:
        assert f"{s.keyword.lower()} {values[s.keyword.lower()]}" == s.effective
    other = rs.effective(SSHD, main, "someone")
    assert other["x11forwarding"] == "yes"  # set globally after the Include
    assert other["maxsessions"] == "10"
    assert other["permitopen"] == "any"


def _sshd_tree(tmp_path: Path, plan: rs.RelayPlan, include: bool = True) -> Path:
    etc = tmp_path / "etc" / "ssh"
    (etc / "sshd_config.d").mkdir(parents=True, exist_ok=True)
    hostkey = etc / "ssh_host_ed25519_key"
    if not hostkey.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hostkey)], check=True
        )
    main = etc / "sshd_config"
    lines = [f"Include {etc}/sshd_config.d/*.conf"] if include else []
    lines += [
        f"HostKey {hostkey}",
        f"PidFile {tmp_path / 'sshd.pid'}",
        "UsePAM no",
        "X11Forwarding yes",
        "Subsystem sftp /usr/lib/openssh/sftp-server",
    ]
    main.write_text("\n".join(lines) + "\n")
    (etc / "sshd_config.d" / plan.dropin_name).write_text(plan.dropin())
    return main


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda d, k: str(k.private("ed25519")), "is a private key"),
        (lambda d, k: str(d / "missing.pub"), "neither an SSH public key line nor a file"),
        (lambda d, k: "ssh-ed25519 not-base64", "neither an SSH public key line nor a file"),
        (lambda d, k: _write(d / "empty.pub", "hello\n"), "holds no SSH public key"),
        (
            lambda d, k: _write(
                d / "two.pub", k.public_line("ed25519") + "\n" + k.public_line("laptop") + "\n"
            ),
            "holds 2 keys",
        ),
        (
            lambda d, k: "restrict " + k.public_line("ed25519"),
            "neither an SSH public key line nor a file",
        ),
    ],
)
def test_bad_key_is_one_line_with_fix(
    make: Callable[[Path, KeyStore], str],
    needle: str,
    keys: KeyStore,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    value = make(tmp_path, keys)
    with pytest.raises(KeyFileError) as info:
        rs.make_plan(value, remote_port=2222)
    msg = str(info.value)
    assert needle in msg and "Fix:" in msg and "\n" not in msg
    # The CLI prints it as one line and exits 2.
    code = cli_main(["relay-setup", "--key", value, "--remote-port", "2222"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Fix:" in err and "Traceback" not in err


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"mode": "public"}, "needs --remote-port"),
        ({"remote_port": 80}, "below 1024"),
        ({"mode": "private", "remote_port": 2222}, "for public mode"),
        ({"remote_port": 2222, "socket_path": "/tmp/x.sock"}, "for private mode"),
        ({"mode": "private", "socket_path": "tmp/x.sock"}, "--socket-path"),
        ({"mode": "private", "socket_path": "/tmp/a b.sock"}, "--socket-path"),
        ({"mode": "private", "socket_path": "/run/x.sock"}, "a file name in /tmp"),
        ({"mode": "private", "socket_path": "/tmp/d/x.sock"}, "a file name in /tmp"),
        ({"remote_port": 2222, "keys_dir": Path("/tmp/k")}, "--keys-dir"),
        ({"mode": "private", "chroot_dir": Path("rel")}, "--chroot-dir"),
        ({"mode": "sideways"}, "--mode"),
        ({"account": "root", "remote_port": 2222}, "--account"),
        ({"account": "Bad Name", "remote_port": 2222}, "--account"),
        ({"name": "no/slash", "remote_port": 2222}, "--name"),
    ],
)
def test_bad_options_are_one_line_with_fix(
    kwargs: dict[str, object], needle: str, keys: KeyStore
) -> None:
    with pytest.raises(ConfigError) as info:
        rs.make_plan(keys.public_line("ed25519"), **kwargs)  # type: ignore[arg-type]
    msg = str(info.value)
    assert needle in msg and "Fix:" in msg and "\n" not in msg


def test_merge_keeps_foreign_lines_and_replaces_own(keys: KeyStore) -> None:
    plan = rs.make_plan(keys.public_line("ed25519"), remote_port=2222)
    foreign = [
        "# my own comment",
        f'from="10.0.0.0/8" {keys.public_line("laptop2")}',
        "",
        f"restrict {keys.public_line('ecdsa')} handy-colab:other",  # another runtime's line
    ]
    stale = f"restrict {keys.public_line('ed25519_b')} handy-colab:colab"
    existing = "\n".join([foreign[0], stale, *foreign[1:]]) + "\n"
    text, kept = rs.merge_authorized_keys(existing, plan.authorized_keys, plan.marker)
    assert text.splitlines() == [*foreign, *plan.authorized_keys]
    assert kept == 3
    # Idempotent: a second run changes nothing.
    again, _ = rs.merge_authorized_keys(text, plan.authorized_keys, plan.marker)
    assert again == text
    # No trailing newline and an empty file are fine too.
    assert rs.merge_authorized_keys("", plan.authorized_keys, plan.marker)[0] == (
        plan.authorized_keys[0] + "\n"
    )


def test_merge_refuses_the_same_key_on_a_foreign_line(keys: KeyStore) -> None:
    plan = rs.make_plan(keys.public_line("ed25519"), remote_port=2222)
    existing = f"{keys.public_line('laptop')}\n{keys.public_line('ed25519')}\n"
    with pytest.raises(RelaySetupError) as info:
        rs.merge_authorized_keys(existing, plan.authorized_keys, plan.marker, "/x/authorized_keys")
    msg = str(info.value)
    assert "line 2" in msg and "Fix:" in msg and "\n" not in msg


def test_included_patterns(tmp_path: Path) -> None:
    main = tmp_path / "sshd_config"
    dropin = Path("/etc/ssh/sshd_config.d/handy-colab-x.conf")
    cases = {
        "Include /etc/ssh/sshd_config.d/*.conf\n": True,
        "include sshd_config.d/*.conf\n": True,  # relative: in /etc/ssh
        "Include=/etc/ssh/sshd_config.d/*.conf\n": True,
        "Include /etc/ssh/other.d/*.conf /etc/ssh/sshd_config.d/handy-*\n": True,
        "# Include /etc/ssh/sshd_config.d/*.conf\n": False,
        "Include /etc/ssh/*.conf\n": False,  # '*' does not cross '/'
        "Match User bob\n  Include /etc/ssh/sshd_config.d/*.conf\n": False,  # conditional
        "": False,
    }
    for text, want in cases.items():
        main.write_text(text)
        assert rs.included(main, dropin) is want, text


# -- apply, as root, into a temporary root --------------------------------------------------
needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not Path(SSHD).exists(), reason="apply needs root and sshd"
)
UID = 4242


def _root_tree(tmp_path: Path, plan: rs.RelayPlan, shell: str = "/usr/sbin/nologin") -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    gecos = rs.GECOS if shell.endswith("nologin") else "Bob"
    (root / "etc" / "passwd").write_text(
        f"root:x:0:0:root:/root:/bin/bash\n{plan.account}:x:{UID}:{UID}:{gecos}:"
        f"/home/{plan.account}:{shell}\n"
    )
    (root / "etc" / "shadow").write_text(f"{plan.account}:*:20000::::::\n")
    main = _sshd_tree(root, plan)
    (main.parent / "sshd_config.d" / plan.dropin_name).unlink()
    Path("/run/sshd").mkdir(exist_ok=True)
    return root


@needs_root
def test_apply_writes_merges_and_backs_up(keys: KeyStore, tmp_path: Path) -> None:
    plan = rs.make_plan(keys.public_line("ed25519"), account="hct", remote_port=2222)
    root = _root_tree(tmp_path, plan)
    dropin = root / "etc/ssh/sshd_config.d/handy-colab-hct.conf"
    dropin.write_text("# an older drop-in\n")
    ak = root / "etc/ssh/handy-colab/authorized_keys/hct"
    ak.parent.mkdir(parents=True)
    foreign = f"{keys.public_line('laptop2')}\n"
    ak.write_text(foreign + f"restrict {keys.public_line('ecdsa')} handy-colab:colab\n")

    res = rs.apply(plan, root=root)

    assert res.dropin == dropin and dropin.read_text() == plan.dropin()
    assert [b.read_text() for b in res.backups] == ["# an older drop-in\n"]
    assert ak.read_text() == foreign + plan.authorized_keys[0] + "\n"
    assert res.kept_lines == 1 and not res.account_created
    # Root's, readable by sshd's StrictModes, out of the account's reach.
    st = ak.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o644)
    st = ak.parent.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode) & 0o022) == (0, 0)
    assert not (root / "home/hct/.ssh").exists()
    assert res.reload_command == f"kill -HUP $(cat {root / 'sshd.pid'})"
    # A second run: same files, no new backup.
    again = rs.apply(plan, root=root)
    assert again.backups == [] and ak.read_text() == foreign + plan.authorized_keys[0] + "\n"


@needs_root
def test_apply_refuses_without_include(keys: KeyStore, tmp_path: Path) -> None:
    plan = rs.make_plan(keys.public_line("ed25519"), account="hct", remote_port=2222)
    root = _root_tree(tmp_path, plan)
    main = root / "etc/ssh/sshd_config"
    main.write_text(main.read_text().split("\n", 1)[1])  # drop the Include line
    with pytest.raises(RelaySetupError) as info:
        rs.apply(plan, root=root)
    msg = str(info.value)
    assert f"'Include {root}/etc/ssh/sshd_config.d/*.conf'" in msg and "Fix:" in msg
    assert list((root / "etc/ssh/sshd_config.d").iterdir()) == []
    assert not (root / "home/hct/.ssh").exists()


@needs_root
def test_apply_refuses_an_account_with_a_shell(keys: KeyStore, tmp_path: Path) -> None:
    plan = rs.make_plan(keys.public_line("ed25519"), account="hct", remote_port=2222)
    root = _root_tree(tmp_path, plan, shell="/bin/bash")
    with pytest.raises(RelaySetupError) as info:
        rs.apply(plan, root=root)
    assert "not a relay-setup account" in str(info.value) and "Fix:" in str(info.value)
    assert list((root / "etc/ssh/sshd_config.d").iterdir()) == []


@needs_root
def test_apply_puts_back_when_an_earlier_match_wins(keys: KeyStore, tmp_path: Path) -> None:
    plan = rs.make_plan(keys.public_line("ed25519"), account="hct", remote_port=2222)
    root = _root_tree(tmp_path, plan)
    confdir = root / "etc/ssh/sshd_config.d"
    (confdir / "00-admin.conf").write_text("Match User hct\n    AllowTcpForwarding yes\n")
    with pytest.raises(RelaySetupError) as info:
        rs.apply(plan, root=root)
    msg = str(info.value)
    assert "allowtcpforwarding yes" in msg and "earlier Match" in msg and "Fix:" in msg
    assert sorted(p.name for p in confdir.iterdir()) == ["00-admin.conf"]
    assert not (root / "home/hct/.ssh").exists()


def test_apply_needs_root(keys: KeyStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = rs.make_plan(keys.public_line("ed25519"), remote_port=2222)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(RelaySetupError) as info:
        rs.apply(plan, root=tmp_path)
    assert "as root" in str(info.value) and "Fix:" in str(info.value)


@needs_root
@pytest.mark.skipif(shutil.which("useradd") is None, reason="needs useradd")
def test_apply_creates_the_account_under_a_root(keys: KeyStore, tmp_path: Path) -> None:
    """The real useradd, pointed at copies of the account files (--prefix): the system's own
    accounts are not touched."""
    plan = rs.make_plan(keys.public_line("ed25519"), account="hcunit", remote_port=2222)
    root = tmp_path / "root"
    (root / "etc" / "default").mkdir(parents=True)
    for name in ("passwd", "group", "shadow", "gshadow", "login.defs", "default/useradd"):
        if Path("/etc", name).exists():
            shutil.copy2(Path("/etc", name), root / "etc" / name)
    _sshd_tree(root, plan)
    (root / "etc/ssh/sshd_config.d" / plan.dropin_name).unlink()
    Path("/run/sshd").mkdir(exist_ok=True)
    system_passwd = Path("/etc/passwd").read_text()

    res = rs.apply(plan, root=root)

    assert res.account_created
    acct = rs.lookup_account("hcunit", root)
    assert acct is not None
    assert (acct.shell, acct.gecos, acct.home) == (rs.NOLOGIN, rs.GECOS, "/home/hcunit")
    shadow = (root / "etc" / "shadow").read_text().splitlines()
    assert [ln.split(":")[1] for ln in shadow if ln.startswith("hcunit:")] == ["*"]
    assert res.authorized_keys == root / "etc/ssh/handy-colab/authorized_keys/hcunit"
    assert res.authorized_keys.stat().st_uid == 0
    assert Path("/etc/passwd").read_text() == system_passwd
    assert rs.lookup_account("hcunit") is None
