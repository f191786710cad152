"""`connect --os windows`: every line checked against what Windows' OpenSSH 8.1+ accepts.

Windows itself does not run here: these are the rules of ../shared/notes/ide-clients.md
(section 3) as text checks; tests/e2e/test_laptop_windows.py runs the same files with
OpenSSH on Linux, ProxyCommand included.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from handy_colab.cli import main
from handy_colab.client import windows as win
from handy_colab.client.connect import connect
from handy_colab.descriptor import Descriptor
from handy_colab.errors import ClientConfigError, ConfigError

MakeDesc = Callable[..., Descriptor]
# Characters a shell would interpret; CreateProcessW would pass them on literally.
SHELL_SYNTAX = re.compile(r"[|&;<>$`%]|\bexec\b|\\")
PROXY_RE = re.compile(r'^"(?P<exe>[^"]+)" proxy(?P<rest>( [^"\s]+| "[^"]+")*)$')


@pytest.fixture
def spaced_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "C drive" / "Users" / "Jane Doe"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    # The installed program, in a folder with a space (like "Program Files").
    scripts = tmp_path / "Program Files" / "Python" / "Scripts"
    scripts.mkdir(parents=True)
    exe = scripts / "handy-colab"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{scripts}{os.pathsep}{os.environ['PATH']}")
    return home


def _write(path: Path, desc: Descriptor) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(desc.to_json())
    return path


def _check_windows_file(path: Path) -> list[str]:
    raw = path.read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf"), f"{path}: a BOM breaks Windows' ssh"
    text = raw.decode("utf-8")
    for line in text.splitlines():
        key = line.strip().split(" ", 1)[0].lower()
        assert key not in ("controlmaster", "controlpath", "controlpersist"), line
        if key in ("localforward", "remoteforward"):
            # A TCP port only: Win32-OpenSSH cannot listen on a local Unix socket.
            assert re.fullmatch(r"\s*\w+ \d+ 127\.0\.0\.1:\d+", line), line
        if key in ("identityfile", "userknownhostsfile", "include"):
            value = line.strip().split(" ", 1)[1]
            assert "\\" not in value, line
            assert " " not in value.strip('"') or value.startswith('"'), line
    return text.splitlines()


def _proxy(lines: list[str]) -> re.Match[str]:
    found = [ln.strip()[len("ProxyCommand ") :] for ln in lines if "ProxyCommand" in ln]
    assert len(found) == 1, lines
    cmd = found[0]
    assert not SHELL_SYNTAX.search(cmd), cmd
    m = PROXY_RE.match(cmd)
    assert m is not None, f"not a quoted program and plain arguments: {cmd}"
    exe = m["exe"]
    # Absolute, forward slashes, the installed program itself (not a shell, not python -c).
    assert exe.startswith("/") or re.match(r"^[A-Za-z]:/", exe), exe
    assert Path(exe).name in ("handy-colab", "handy-colab.exe"), exe
    assert Path(exe).is_file()
    return m


@pytest.mark.parametrize("mode", ["private", "quick"])
def test_windows_config_line_by_line(
    spaced_home: Path, tmp_path: Path, make_descriptor: MakeDesc, mode: str
) -> None:
    if mode == "quick":
        desc = make_descriptor(
            mode="quick", route="cloudflared", hostname="a-b.trycloudflare.com", format=2
        )
    else:
        desc = make_descriptor(mode="private", forwards=[6006])
    src = _write(tmp_path / "My Drive" / "colab_data" / "connections" / "colab.json", desc)
    key = spaced_home / ".ssh" / "id_ed25519"
    key.write_text("not read: the key is only named\n")
    key.chmod(0o600)
    user_before = "Host work\n    User me\n"
    (spaced_home / ".ssh" / "config").write_text(user_before)

    res = connect(src, identity=key, client_os="windows")

    user_cfg = spaced_home / ".ssh" / "config"
    user_lines = _check_windows_file(user_cfg)
    # Relative, forward slashes, first: Windows' 7.7 took absolute C:\ paths as relative.
    assert user_lines[0] == "Include config.d/handy-colab"
    assert user_cfg.read_text().endswith(user_before)
    lines = _check_windows_file(res.config_file)
    m = _proxy(lines)
    args = m["rest"]
    if mode == "private":
        assert args.startswith(' -F "') and args.endswith(
            " colab-relay /tmp/handy-colab-alice-colab.sock"
        )
        assert f'"{res.config_file.as_posix()}"' in args
        relay = [ln for ln in lines if ln.startswith("Host ")]
        assert relay == ["Host colab-relay", "Host colab"]
        assert "    LocalForward 6006 127.0.0.1:6006" in lines
    else:
        assert m["exe"].endswith("handy-colab") and args.startswith(" --ws --descriptor ")
        assert f'"{src.as_posix()}"' in args and args.endswith(" a-b.trycloudflare.com")
    assert f'    IdentityFile "{key.as_posix()}"' in lines
    assert f'    UserKnownHostsFile "{res.known_hosts.as_posix()}"' in lines
    assert "    StrictHostKeyChecking yes" in lines
    _check_windows_file(res.known_hosts)
    # A second connect changes nothing and adds no second Include.
    again = connect(src, identity=key, client_os="windows")
    assert again.backups == []
    assert user_cfg.read_text().count("Include") == 1
    # The key-permission advice names the file and the icacls fix.
    assert any("icacls" in n and "/inheritance:r" in n for n in res.notes), res.notes


def test_icacls_fix_uses_backslashes_and_quotes() -> None:
    fix = win.icacls_fix("C:/Users/Jane Doe/.ssh/id_ed25519")
    assert '"C:\\Users\\Jane Doe\\.ssh\\id_ed25519" /inheritance:r' in fix
    assert '/grant:r "%USERNAME%:F"' in fix


def test_include_outside_ssh_dir_is_quoted_absolute(tmp_path: Path) -> None:
    line = win.include_line(tmp_path / "other dir" / "hc", tmp_path / ".ssh")
    assert line == f'Include "{(tmp_path / "other dir" / "hc").as_posix()}"'
    assert win.include_line(tmp_path / ".ssh" / "config.d" / "hc", tmp_path / ".ssh") == (
        "Include config.d/hc"
    )


def test_installed_program_missing_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(win.sys, "executable", str(tmp_path / "python.exe"))
    with pytest.raises(Exception) as err:
        win.installed_program()
    assert "Fix:" in str(err.value) and "\n" not in str(err.value)


def test_unknown_os_is_refused(home: Path, tmp_path: Path, make_descriptor: MakeDesc) -> None:
    src = _write(tmp_path / "d" / "colab.json", make_descriptor())
    with pytest.raises(ConfigError, match="--os 'beos'"):
        connect(src, client_os="beos")


def test_cli_connect_os_windows_prints_the_icacls_fix(
    spaced_home: Path, tmp_path: Path, make_descriptor: MakeDesc, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _write(tmp_path / "d" / "colab.json", make_descriptor(mode="private"))
    key = tmp_path / "k"
    key.write_text("x")
    key.chmod(0o600)
    assert main(["connect", str(src), "--os", "windows", "--identity", str(key)]) == 0
    out = capsys.readouterr().out
    assert "icacls" in out and "Now: ssh colab" in out
    managed = spaced_home / ".ssh" / "config.d" / "handy-colab"
    assert stat.S_IMODE(managed.stat().st_mode) & 0o022 == 0


def test_windows_paths_with_percent_are_doubled_and_a_quote_is_refused(
    spaced_home: Path, tmp_path: Path, make_descriptor: MakeDesc
) -> None:
    """A synced folder named "50%done": ssh expands % tokens in a ProxyCommand and in
    UserKnownHostsFile before Windows sees them, so each % is written doubled; a double
    quote cannot be quoted for CreateProcessW at all: one line, nothing written."""
    desc = make_descriptor(mode="quick", route="cloudflared", hostname="a-b.trycloudflare.com")
    src = _write(tmp_path / "drive 50%done" / "connections" / "colab.json", desc)
    kh = tmp_path / "keys 100%" / "kh"
    res = connect(src, client_os="windows", known_hosts=kh, vscode=False)
    text = res.config_file.read_text()
    assert f'--descriptor "{src.as_posix().replace("%", "%%")}"' in text
    assert f'    UserKnownHostsFile "{kh.as_posix().replace("%", "%%")}"' in text
    bad = tmp_path / 'say "hi"' / "kh"
    ssh_dir = spaced_home / ".ssh"
    before = {p: p.read_bytes() for p in ssh_dir.rglob("*") if p.is_file()}
    with pytest.raises(ClientConfigError, match="double quote"):
        connect(
            _write(tmp_path / 'a "q"' / "connections" / "colab.json", desc),
            client_os="windows",
            vscode=False,
        )
    assert {p: p.read_bytes() for p in ssh_dir.rglob("*") if p.is_file()} == before
    assert not bad.exists()
