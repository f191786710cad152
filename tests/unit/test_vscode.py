"""client/vscode: VS Code's settings.json edited in place (JSONC), and opening a window.

VS Code itself cannot be installed here: `code`, `code.cmd`, `xdg-open` and `open` are
recording stand-ins (real executables on a temporary PATH that write their argv to a file),
so what is verified is the exact program and argv handy-colab starts, not VS Code's GUI.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
import signal
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from handy_colab import cli
from handy_colab.client import jsonc
from handy_colab.client import vscode as V
from handy_colab.client.connect import connect
from handy_colab.client.laptop import known_runtimes
from handy_colab.descriptor import Descriptor
from handy_colab.errors import ConfigError, EditorError

KEY = V.KEY
REALISTIC = r"""// Place your settings in this file to overwrite the default settings
{
    "workbench.colorTheme": "Default Dark+", // the theme
    /* a block comment
       over two lines, with "quotes" and a // inside */
    "http.proxy": "http://proxy.example:3128/path//with/* not a comment */",
    "files.exclude": {
        "**/.git": true,
        "**/*.pyc": true, /* trailing comma next */
    },
    "editor.rulers": [80, 100,],
    "terminal.integrated.env.linux": {"NOTE": "a \"quoted\" \\ value // still a string"},
    "remote.SSH.remotePlatform": {
        "work": "linux", // the office box
        "gaming-pc": "windows"
    },
    "python.defaultInterpreterPath": "C:\\Python\\python.exe",
    "zero": 0, "neg": -1.5e3, "t": true, "n": null,
}
"""


def strip_jsonc(text: str) -> Any:
    """An independent reading of JSONC: drop comments and trailing commas, then json.loads."""
    token = r'"(?:\\.|[^"\\])*"'
    no_comments = re.sub(
        rf"({token})|//[^\n]*|/\*.*?\*/", lambda m: m.group(1) or "", text, flags=re.S
    )
    no_trailing = re.sub(
        rf"({token})|,(\s*[}}\]])", lambda m: m.group(1) or m.group(2), no_comments
    )
    return json.loads(no_trailing)


def only_insertions(old: str, new: str) -> str:
    """Assert ``new`` is ``old`` with text inserted (nothing removed or changed); return it."""
    added = []
    for op, a0, a1, b0, b1 in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
        assert op in ("equal", "insert"), (op, old[a0:a1], new[b0:b1])
        if op == "insert":
            added.append(new[b0:b1])
    return "".join(added)


def backups(folder: Path) -> list[Path]:
    return sorted(folder.glob("settings.json.handy-colab-backup-*"))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    d = tmp_path / "Code" / "User"
    d.mkdir(parents=True)
    return d


# ------------------------------------------------------------------ settings.json


def test_realistic_settings_keep_every_comment_and_setting(user_dir: Path) -> None:
    settings = user_dir / "settings.json"
    settings.write_text(REALISTIC)
    settings.chmod(0o640)
    before = strip_jsonc(REALISTIC)

    res = V.remember_platform(["colab", "kaggle"], settings)

    assert [c.status for c in res.changes] == ["updated"]
    new = settings.read_text()
    added = only_insertions(REALISTIC, new)
    assert "//" not in added and "/*" not in added
    after = strip_jsonc(new)
    assert after[KEY] == {
        "work": "linux",
        "gaming-pc": "windows",
        "colab": "linux",
        "kaggle": "linux",
    }
    assert {k: v for k, v in after.items() if k != KEY} == {
        k: v for k, v in before.items() if k != KEY
    }
    # Our members sit one a line, indented like their neighbours.
    assert '\n        "colab": "linux",\n        "kaggle": "linux"\n    },' in new
    assert _mode(settings) == 0o640
    [bak] = backups(user_dir)
    assert bak.read_text() == REALISTIC
    assert res.changes[0].backup == bak


def test_second_call_changes_nothing_and_makes_no_backup(user_dir: Path) -> None:
    settings = user_dir / "settings.json"
    settings.write_text(REALISTIC)
    V.remember_platform(["colab"], settings)
    once = settings.read_bytes()
    stamp = settings.stat().st_mtime_ns

    res = V.remember_platform(["colab"], settings)

    assert res.changes[0].status == "unchanged"
    assert settings.read_bytes() == once and settings.stat().st_mtime_ns == stamp
    assert len(backups(user_dir)) == 1


def test_our_alias_with_another_platform_is_replaced_in_place(user_dir: Path) -> None:
    settings = user_dir / "settings.json"
    settings.write_text(REALISTIC)
    V.remember_platform(["gaming-pc"], settings)
    new = settings.read_text()
    assert new == REALISTIC.replace('"gaming-pc": "windows"', '"gaming-pc": "linux"')


@pytest.mark.parametrize(
    ("text", "expected_tail"),
    [
        ('{"a": 1}', '{"a": 1, "remote.SSH.remotePlatform": {"colab": "linux"}}'),
        ('{"a": 1,}', '{"a": 1, "remote.SSH.remotePlatform": {"colab": "linux"},}'),
        ("{}", '{\n    "remote.SSH.remotePlatform": {\n        "colab": "linux"\n    }\n}'),
        (
            '{\n\t"a": 1 // last\n}\n',
            '{\n\t"a": 1, // last\n\t"remote.SSH.remotePlatform": {\n'
            '\t\t"colab": "linux"\n\t}\n}\n',
        ),
        (
            '{\n  "a": 1,\n  /* kept at the end */\n}',
            '{\n  "a": 1,\n  "remote.SSH.remotePlatform": {\n    "colab": "linux"\n  },\n'
            "  /* kept at the end */\n}",
        ),
        (
            '{\n  "remote.SSH.remotePlatform": {},\n  "b": 2\n}',
            '{\n  "remote.SSH.remotePlatform": {\n    "colab": "linux"\n  },\n  "b": 2\n}',
        ),
        ("", '{\n    "remote.SSH.remotePlatform": {\n        "colab": "linux"\n    }\n}\n'),
        (
            "// nothing yet",
            '// nothing yet\n{\n    "remote.SSH.remotePlatform": {\n        "colab": "linux"\n'
            "    }\n}\n",
        ),
    ],
)
def test_shapes_get_our_member_in_their_own_style(
    user_dir: Path, text: str, expected_tail: str
) -> None:
    settings = user_dir / "settings.json"
    settings.write_text(text)
    V.remember_platform(["colab"], settings)
    new = settings.read_text()
    assert new == expected_tail
    only_insertions(text, new)
    assert strip_jsonc(new)[KEY] == {"colab": "linux"}


def test_crlf_and_bom_are_kept(user_dir: Path) -> None:
    settings = user_dir / "settings.json"
    text = '{\r\n    "a": "x // y", // c\r\n    "b": [1,\r\n 2]\r\n}\r\n'
    settings.write_bytes(b"\xef\xbb\xbf" + text.encode())
    V.remember_platform(["colab"], settings)
    raw = settings.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    new = raw[3:].decode()
    assert "\n" not in new.replace("\r\n", "")
    only_insertions(text, new)
    assert strip_jsonc(new) == {"a": "x // y", "b": [1, 2], KEY: {"colab": "linux"}}


def test_missing_file_is_created_when_the_user_folder_exists(user_dir: Path) -> None:
    settings = user_dir / "settings.json"
    res = V.remember_platform(["colab"], settings)
    assert [c.status for c in res.changes] == ["created"]
    assert json.loads(settings.read_text()) == {KEY: {"colab": "linux"}}
    assert backups(user_dir) == []


def test_no_vscode_folder_writes_nothing_and_says_so(tmp_path: Path) -> None:
    settings = tmp_path / "Code" / "User" / "settings.json"
    res = V.remember_platform(["colab"], settings)
    assert not res.vscode_found and res.changes == []
    assert list(tmp_path.iterdir()) == []
    [msg] = res.messages
    assert "No VS Code settings folder" in msg and str(settings.parent) in msg


@pytest.mark.parametrize(
    "raw",
    [
        b'{\n  "remote.SSH.remotePlatform": "linux"\n}\n',
        b'{"remote.SSH.remotePlatform": ["colab"]}',
        b"{'single': 'quotes'}",
        b'{"a": 1, "a": 2}',
        b'{"nested": {"x": 1, "x": 1}}',
        b"{bare: 1}",
        b'{"a": 1 "b": 2}',
        b'{"a": 1} /* never closed',
        b'{"a": "never closed}',
        b'{"a": "bad \\q escape"}',
        b'{"a": 01}',
        b'{"a": 1}{"b": 2}',
        b'["an", "array"]',
        b'{"a": "\xff\xfe not utf-8"}',
        b'{"a": NaN}',
    ],
)
def test_unsafe_files_are_left_untouched_with_what_to_add(user_dir: Path, raw: bytes) -> None:
    settings = user_dir / "settings.json"
    settings.write_bytes(raw)
    stamp = settings.stat().st_mtime_ns
    res = V.remember_platform(["colab"], settings)
    [change] = res.changes
    assert change.status == "manual" and change.backup is None
    assert settings.read_bytes() == raw and settings.stat().st_mtime_ns == stamp
    assert backups(user_dir) == []
    assert "\n" not in change.message and str(settings) in change.message
    assert 'Fix: add "remote.SSH.remotePlatform": {"colab": "linux"}' in change.message


def test_symlinked_settings_edit_the_target_and_keep_the_link(
    user_dir: Path, tmp_path: Path
) -> None:
    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir()
    (dotfiles / "settings.json").write_text('{"a": 1}')
    (user_dir / "settings.json").symlink_to(dotfiles / "settings.json")
    V.remember_platform(["colab"], user_dir / "settings.json")
    assert (user_dir / "settings.json").is_symlink()
    assert json.loads((dotfiles / "settings.json").read_text())[KEY] == {"colab": "linux"}


def test_default_settings_paths_per_os(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("XDG_CONFIG_HOME", "VSCODE_APPDATA", "APPDATA"):
        monkeypatch.delenv(var, raising=False)
    assert V.settings_files("linux")[0] == home / ".config/Code/User/settings.json"
    assert V.settings_files("darwin")[1] == (
        home / "Library/Application Support/Code - Insiders/User/settings.json"
    )
    assert V.settings_files("win32")[0] == home / "AppData/Roaming/Code/User/settings.json"
    monkeypatch.setenv("APPDATA", str(home / "roaming"))
    assert V.settings_files("win32")[0] == home / "roaming/Code/User/settings.json"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "xdg"))
    assert V.settings_files("linux")[0] == home / "xdg/Code/User/settings.json"


def test_every_installed_flavour_is_told(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VSCODE_APPDATA", raising=False)
    base = home / "Library/Application Support"
    for flavour in ("Code", "Code - Insiders"):
        (base / flavour / "User").mkdir(parents=True)
    res = V.remember_platform(["colab"], os_name="darwin")
    assert [c.status for c in res.changes] == ["created", "created"]
    for flavour in ("Code", "Code - Insiders"):
        settings = base / flavour / "User/settings.json"
        assert json.loads(settings.read_text()) == {KEY: {"colab": "linux"}}


def test_jsonc_error_names_line_and_column() -> None:
    with pytest.raises(jsonc.JsoncError, match=r"duplicate key 'x' at line 3 column 3"):
        jsonc.parse('{\n  "x": 1,\n  "x": 2\n}')


# ------------------------------------------------------------------ opening VS Code

RECORDER = """#!/bin/sh
for a in "$@"; do printf '%s\\n' "$a"; done > "$HC_RECORD.${0##*/}"
"""


@pytest.fixture
def bindir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty PATH of our own; stand-ins record their argv to $HC_RECORD.<program>."""
    d = tmp_path / "bin"
    d.mkdir()
    monkeypatch.setenv("PATH", str(d))
    monkeypatch.setenv("HC_RECORD", str(tmp_path / "argv"))
    return d


def stand_in(path: Path, script: str = RECORDER) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(script)
    path.chmod(0o755)
    return path


def recorded(tmp_path: Path, program: str) -> list[str]:
    return (tmp_path / f"argv.{program}").read_text().splitlines()


LINK = "vscode://vscode-remote/ssh-remote+colab/content/my%20dir"


def test_code_on_path_gets_the_remote_folder(bindir: Path, tmp_path: Path) -> None:
    code = stand_in(bindir / "code")
    stand_in(bindir / "xdg-open")
    opened = V.open_vscode("colab", "/content/my dir", os_name="linux")
    assert opened.via == "code"
    assert opened.argv == [str(code), "--remote", "ssh-remote+colab", "/content/my dir"]
    assert recorded(tmp_path, "code") == ["--remote", "ssh-remote+colab", "/content/my dir"]
    assert not (tmp_path / "argv.xdg-open").exists()


def test_windows_runs_code_cmd(bindir: Path, tmp_path: Path) -> None:
    stand_in(bindir / "code")  # a bare `code` is not what Windows can start
    code_cmd = stand_in(bindir / "code.cmd")
    opened = V.open_vscode("colab", "/content", os_name="win32")
    assert opened.argv[0] == str(code_cmd)
    assert recorded(tmp_path, "code.cmd") == ["--remote", "ssh-remote+colab", "/content"]


def test_windows_without_code_or_with_cmd_metacharacters_uses_the_link(bindir: Path) -> None:
    stand_in(bindir / "code.cmd")
    opened_links: list[str] = []
    opened = V.open_vscode("colab", "/content/a&b", os_name="win32", startfile=opened_links.append)
    assert opened.via == "startfile"
    assert opened_links == ["vscode://vscode-remote/ssh-remote+colab/content/a%26b"]
    (bindir / "code.cmd").unlink()
    V.open_vscode("colab", "/content", os_name="win32", startfile=opened_links.append)
    assert opened_links[-1] == "vscode://vscode-remote/ssh-remote+colab/content"


def test_macos_finds_the_app_bundle_when_code_is_not_on_path(
    bindir: Path, home: Path, tmp_path: Path
) -> None:
    if os.access(Path("/Applications") / V.MAC_BUNDLE_BIN, os.X_OK):
        pytest.skip("a real /Applications bundle would be picked first")
    code = stand_in(home / "Applications" / V.MAC_BUNDLE_BIN)
    stand_in(bindir / "open")
    opened = V.open_vscode("colab", "/content", os_name="darwin")
    assert opened.argv[0] == str(code)
    assert recorded(tmp_path, "code") == ["--remote", "ssh-remote+colab", "/content"]


@pytest.mark.parametrize(("os_name", "opener"), [("linux", "xdg-open"), ("darwin", "open")])
def test_without_code_the_os_opener_gets_the_link(
    bindir: Path, home: Path, tmp_path: Path, os_name: str, opener: str
) -> None:
    stand_in(bindir / opener)
    opened = V.open_vscode("colab", "/content/my dir", os_name=os_name)
    assert opened.via == "opener" and opened.link == LINK
    assert recorded(tmp_path, opener) == [LINK]


def test_nothing_to_start_is_one_line_with_the_link(bindir: Path) -> None:
    with pytest.raises(EditorError) as exc:
        V.open_vscode("colab", "/content", os_name="linux")
    msg = str(exc.value)
    assert "\n" not in msg and "Fix:" in msg and "vscode://vscode-remote/ssh-remote+colab" in msg


def test_a_failing_code_is_reported_with_its_last_line(bindir: Path) -> None:
    stand_in(bindir / "code", "#!/bin/sh\necho 'first' >&2\necho 'bad option' >&2\nexit 3\n")
    with pytest.raises(EditorError, match=r"exited with 3: bad option\. Fix:"):
        V.open_vscode("colab", "/content", os_name="linux")


def test_launch_does_not_wait_for_an_editor_holding_its_output(
    bindir: Path, tmp_path: Path
) -> None:
    """`code` hands off to a long-lived editor that inherits its stdout/stderr and exits."""
    pidfile = tmp_path / "editor.pid"
    sleep = shutil.which("sleep", path=os.defpath)
    assert sleep is not None
    stand_in(bindir / "code", f"#!/bin/sh\n{sleep} 30 &\necho $! > {pidfile}\nexit 0\n")
    t0 = time.monotonic()
    try:
        V.open_vscode("colab", "/content", os_name="linux")
        assert time.monotonic() - t0 < 5
        os.kill(int(pidfile.read_text()), 0)  # the "editor" still runs, holding stderr
    finally:
        for _ in range(50):
            if pidfile.exists() and pidfile.read_text().strip():
                break
            time.sleep(0.1)
        os.kill(int(pidfile.read_text()), signal.SIGTERM)


@pytest.mark.parametrize(("alias", "path"), [("colab", "content"), ("colab", "~/x"), ("a/b", "/")])
def test_bad_alias_or_relative_path_is_refused(alias: str, path: str) -> None:
    with pytest.raises(ConfigError, match="Fix:"):
        V.plan_open(alias, path, os_name="linux", which=lambda _: None)


# ------------------------------------------------------------------ the CLI


@pytest.fixture
def connected(tmp_path: Path, make_descriptor: Callable[..., Descriptor]) -> Path:
    """`connect` has written runtime 'colab' (notebook dir /content) to an ssh config."""
    desc_file = tmp_path / "colab.json"
    desc_file.write_text(make_descriptor(workdir="/content").to_json())
    cfg = tmp_path / "ssh" / "handy-colab"
    connect(desc_file, ssh_config=cfg, known_hosts=tmp_path / "ssh" / "known_hosts")
    return cfg


def test_cli_print_shows_command_and_link_and_changes_nothing(
    connected: Path, bindir: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = stand_in(bindir / "code")
    (home / ".config/Code/User").mkdir(parents=True)
    assert cli.main(["code", "colab", "--ssh-config", str(connected), "--print"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"{code} --remote ssh-remote+colab /content", LINK.replace("/my%20dir", "")]
    assert not (home / ".config/Code/User/settings.json").exists()
    code.unlink()  # nothing on PATH can open it: the link is still printed
    assert cli.main(["code", "colab", "--ssh-config", str(connected), "--print"]) == 0
    assert capsys.readouterr().out.splitlines() == [LINK.replace("/my%20dir", "")]


def test_cli_opens_the_notebook_dir_and_remembers_linux(
    connected: Path,
    bindir: Path,
    home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for var in ("XDG_CONFIG_HOME", "VSCODE_APPDATA"):
        monkeypatch.delenv(var, raising=False)
    stand_in(bindir / "code")
    user = home / ".config/Code/User"
    user.mkdir(parents=True)
    assert cli.main(["code", "COLAB", "--ssh-config", str(connected)]) == 0
    assert recorded(tmp_path, "code") == ["--remote", "ssh-remote+colab", "/content"]
    assert json.loads((user / "settings.json").read_text()) == {KEY: {"colab": "linux"}}
    out = capsys.readouterr().out
    assert "settings.json: created" in out and "Opened:" in out
    assert cli.main(["code", "colab", "/tmp/other dir", "--ssh-config", str(connected)]) == 0
    assert recorded(tmp_path, "code")[-1] == "/tmp/other dir"


def test_cli_unknown_name_lists_the_known_ones(
    connected: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["code", "kaggle", "--ssh-config", str(connected)]) != 0
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "kaggle" in err and "known: colab" in err and "handy-colab connect" in err


def test_cli_without_a_descriptor_copy_asks_for_path(
    connected: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for rt in known_runtimes(connected):
        assert rt.descriptor_file is not None
        rt.descriptor_file.unlink()
    assert cli.main(["code", "colab", "--ssh-config", str(connected), "--print"]) == 2
    err = capsys.readouterr().err
    assert "give PATH" in err
    assert cli.main(["code", "colab", "/x", "--ssh-config", str(connected), "--print"]) == 0


def test_cli_import_stays_cheap() -> None:
    src = Path(V.__file__).parent.parent / "commands" / "code.py"
    top = [ln for ln in src.read_text().splitlines() if ln.startswith(("import ", "from "))]
    assert all("client" not in ln for ln in top), top
