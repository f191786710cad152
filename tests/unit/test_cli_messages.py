"""The CLI's messages (issue 24): one flag name per idea, a bad value blamed on its flag,
JSON that is always JSON, one exit-code table, short help for no or a mistyped command, no
traceback on a closed pipe, help on every flag, and key files that are what they claim."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from handy_colab import runtime
from handy_colab.cli import EPILOG, build_parser, main
from handy_colab.descriptor import Descriptor
from handy_colab.errors import EXIT_CODE_TEXT, ExitCode, KeyFileError, RuntimeConflictError
from handy_colab.keys import scan_folder
from tests.unit.conftest import KeyStore, write_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, home: Path) -> Path:
    d = tmp_path / "state"
    monkeypatch.setenv("HANDY_COLAB_STATE_DIR", str(d))
    return d


@pytest.fixture
def cli_env(home: Path, state_dir: Path) -> dict[str, str]:
    """The environment of a `handy-colab` subprocess: the temporary HOME and state dir."""
    env = dict(os.environ, HOME=str(home), HANDY_COLAB_STATE_DIR=str(state_dir))
    # Buffered, as in a terminal or a script: the closed pipe shows at our own flush.
    env.pop("PYTHONUNBUFFERED", None)
    return env


def _exe() -> str:
    exe = Path(sys.executable).with_name("handy-colab")
    assert exe.exists(), exe
    return str(exe)


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors and --help
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("handy-colab: error:")]
    assert len(lines) == 1, err
    assert "Fix:" in lines[0], err
    return lines[0]


@pytest.fixture
def cf_folder(tmp_path: Path, keys: KeyStore) -> Path:
    """A config folder that loads: a cloudflared quick tunnel and the laptop's key."""
    folder = tmp_path / "cfg"
    folder.mkdir()
    write_config(folder, {"name": "colab"})
    keys.copy_public("laptop", folder / "laptop.pub")
    return folder


# ------------------------------------------------------------------ 1. one name per idea


def _up_tunnel(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """Stand in for cmd_up: record the tunnel request main() hands it."""
    seen: list[str | None] = []

    def fake_up(*args: Any, **kw: Any) -> int:
        seen.append(args[6])
        return 0

    import handy_colab.commands.runtime_cmds as rc

    monkeypatch.setattr(rc, "cmd_up", fake_up)
    return seen


@pytest.mark.parametrize(
    ("argv", "want"),
    [
        (["--route", "cloudflared"], "cloudflared"),
        (["--route", "frp"], "frp"),
        (["--route", "relay"], "relay"),
        (["--route", "relay", "--relay-client", "embedded"], "embedded"),
        (["--relay-client", "openssh"], "openssh"),
        ([], None),
    ],
)
def test_up_route_and_relay_client_are_the_flags(
    argv: list[str],
    want: str | None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen = _up_tunnel(monkeypatch)
    code, _out, err = _run(["up", "dir", *argv], capsys)
    assert (code, seen, err) == (0, [want], "")


@pytest.mark.parametrize(
    ("old", "new", "want"),
    [
        ("cloudflared", "--route cloudflared", "cloudflared"),
        ("embedded", "--relay-client embedded", "embedded"),
    ],
)
def test_up_tunnel_still_works_and_warns_once_naming_the_new_flag(
    old: str,
    new: str,
    want: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen = _up_tunnel(monkeypatch)
    code, _out, err = _run(["up", "dir", "--tunnel", old], capsys)
    assert (code, seen) == (0, [want])
    assert err.splitlines() == [f"handy-colab: warning: --tunnel is deprecated; use {new}"]


def test_relay_client_with_another_route_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = _up_tunnel(monkeypatch)
    code, _out, err = _run(["up", "dir", "--route", "frp", "--relay-client", "openssh"], capsys)
    assert (code, seen) == (ExitCode.BAD_INPUT, [])
    assert "--relay-client openssh: applies to the relay route only" in _one_error_line(err)


def test_route_relay_takes_the_configs_relay_client(tmp_path: Path, keys: KeyStore) -> None:
    from handy_colab.backends import choose_tunnel
    from handy_colab.config import load_config, route_of_tunnel

    folder = tmp_path / "cfg"
    folder.mkdir()
    write_config(
        folder,
        {
            "relay": {
                "host": "relay.example.org",
                "user": "u",
                "client": "embedded",
                "remote_port": 2222,
            }
        },
    )
    keys.copy_public("laptop", folder / "laptop.pub")
    keys.copy_private("ed25519", folder / "relay_key")
    cfg = load_config(folder, None, route_of_tunnel("relay"))
    assert cfg.route == "relay"
    assert choose_tunnel("relay", cfg).kind == "embedded"


def test_every_route_flag_is_named_route() -> None:
    """--route names the route in init and up alike; no other flag takes a route's name."""
    routes = {"relay", "cloudflared", "frp"}
    for name, sub in _subparsers().items():
        for action in sub._actions:
            if action.choices and routes <= set(action.choices):
                deprecated = (action.help or "").startswith("deprecated")
                assert "--route" in action.option_strings or deprecated, (name, action)
    init = _subparsers()["init"]
    assert any("--route" in a.option_strings for a in init._actions)


# ------------------------------------------------------------- 2. a bad value is the flag's


def test_up_bad_name_is_blamed_on_the_flag(
    cf_folder: Path, state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _out, err = _run(["up", str(cf_folder), "--name", "bad name"], capsys)
    line = _one_error_line(err)
    assert code == ExitCode.BAD_INPUT
    assert line.startswith("handy-colab: error: --name 'bad name': not a valid runtime name"), line
    assert "user_config.json" not in line


def test_up_bad_timeout_is_blamed_on_the_flag(
    cf_folder: Path, state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _out, err = _run(["up", str(cf_folder), "--timeout", "-1"], capsys)
    assert code == ExitCode.BAD_INPUT
    assert _one_error_line(err).startswith("handy-colab: error: --timeout -1:")


# --------------------------------------------------------------- 3. --relay-host HOST:PORT


def _init(home: Path, tmp_path: Path, keys: KeyStore, *extra: str) -> list[str]:
    key = keys.copy_private("laptop", home / "id")
    keys.copy_public("laptop", home / "id.pub")
    folder = tmp_path / "out"
    return ["init", str(folder), "--key", str(key), "--yes", *extra]


def test_relay_host_with_a_port_sets_the_relays_ssh_port(
    home: Path, tmp_path: Path, keys: KeyStore, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _init(home, tmp_path, keys, "--route", "relay", "--remote-port", "2200")
    code, _out, err = _run([*argv, "--relay-host", "vps.example.org:2222"], capsys)
    assert code == 0, err
    relay = json.loads((tmp_path / "out" / "user_config.json").read_text())["relay"]
    assert (relay["host"], relay["port"], relay["remote_port"]) == ("vps.example.org", 2222, 2200)


def test_relay_host_port_against_another_relay_port_is_refused(
    home: Path, tmp_path: Path, keys: KeyStore, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _init(home, tmp_path, keys, "--route", "relay", "--remote-port", "2200")
    argv += ["--relay-host", "vps.example.org:2222", "--relay-port", "22"]
    code, _out, err = _run(argv, capsys)
    line = _one_error_line(err)
    assert code == ExitCode.BAD_INPUT
    assert "--relay-host 'vps.example.org:2222'" in line and "--relay-port" in line
    assert not (tmp_path / "out").exists()


def test_frp_server_with_a_port_sets_the_frp_port(tmp_path: Path) -> None:
    from handy_colab.client.init_inputs import split_host_port

    assert split_host_port("vps.example.org:7001", "--frp-server", "--frp-port", None) == (
        "vps.example.org",
        7001,
    )
    assert split_host_port("[2001:db8::1]:22", "--relay-host", "--relay-port", "22") == (
        "2001:db8::1",
        22,
    )
    assert split_host_port("2001:db8::1", "--relay-host", "--relay-port", None) == (
        "2001:db8::1",
        None,
    )


# ------------------------------------------------ 4. the same name from another config folder


def _fake_running(state_dir: Path, folder: Path, desc: Descriptor) -> dict[str, Any]:
    """state.json of a live runtime 'colab' from ``folder`` (its pid: this test's own)."""
    rd = state_dir / "colab"
    rd.mkdir(parents=True, exist_ok=True)
    st = {
        "name": "colab",
        "pid": os.getpid(),
        "pgid": 0,
        "folder": str(folder.resolve()),
        "phase": "ready",
        "since": time.time(),
        "descriptor_json": desc.to_json(),
        "server": {"kind": "embedded"},
        "tunnel": {"kind": "cloudflared", "state": "up"},
    }
    (rd / "state.json").write_text(json.dumps(st))
    return st


def test_a_second_up_of_a_name_running_from_another_folder_is_refused(
    tmp_path: Path,
    cf_folder: Path,
    state_dir: Path,
    make_descriptor: Callable[..., Descriptor],
    capsys: pytest.CaptureFixture[str],
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    _fake_running(state_dir, other, make_descriptor())
    code, out, err = _run(["up", str(cf_folder), "--no-install"], capsys)
    line = _one_error_line(err)
    assert code == ExitCode.CONFLICT
    assert f"runtime 'colab' already runs here from {other.resolve()}" in line
    assert f"pid {os.getpid()}" in line
    assert "handy-colab down colab" in line and "--name OTHER" in line
    assert "hc1:" not in out  # not the other folder's block


def test_a_second_up_from_the_same_folder_still_reports_it_running(
    cf_folder: Path, state_dir: Path, make_descriptor: Callable[..., Descriptor]
) -> None:
    _fake_running(state_dir, cf_folder, make_descriptor())
    res = runtime.up(cf_folder, install=False, launch=None)
    assert res.already_running and res.state["pid"] == os.getpid()
    with pytest.raises(RuntimeConflictError):
        runtime._check_same_folder(res.cfg, dict(res.state, folder="/elsewhere"))


# -------------------------------------------------------------- 5. --json is always JSON


def test_status_json_with_nothing_running_is_an_empty_list(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _err = _run(["status", "--json"], capsys)
    assert (code, json.loads(out)) == (ExitCode.NOT_FOUND, [])


def test_status_json_of_an_unknown_name_is_an_object(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _err = _run(["status", "colab", "--json"], capsys)
    assert code == ExitCode.NOT_FOUND
    assert json.loads(out) == {"name": "colab", "phase": "never-started", "healthy": False}


def test_status_json_of_two_runtimes_is_one_list(
    tmp_path: Path,
    state_dir: Path,
    make_descriptor: Callable[..., Descriptor],
    capsys: pytest.CaptureFixture[str],
) -> None:
    _fake_running(state_dir, tmp_path, make_descriptor())
    (state_dir / "other").mkdir()
    (state_dir / "other" / "state.json").write_text(json.dumps({"name": "other", "pid": 0}))
    code, out, _err = _run(["status", "--json"], capsys)
    got = json.loads(out)
    assert [st["name"] for st in got] == ["colab", "other"]
    assert code == ExitCode.FAILED  # "other" is dead


def test_list_json_with_nothing_is_json(
    home: Path, state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _err = _run(["list", "--json"], capsys)
    assert (code, json.loads(out)) == (0, {"laptop": [], "running": []})


# ----------------------------------------------------------------- 6. one exit-code table


def test_exit_codes_are_one_table_in_help_and_docs() -> None:
    codes = {int(c) for c in ExitCode}
    assert set(EXIT_CODE_TEXT) == set(ExitCode)
    docs = (ROOT / "docs" / "cli.md").read_text()
    section = docs.split("## Exit codes", 1)[1]
    for code in ExitCode:
        assert f"{int(code):>3}  {EXIT_CODE_TEXT[code]}" in EPILOG
        assert re.search(rf"^\| {int(code)} \|", section, re.M), code
    assert len(re.findall(r"^\| \d+ \|", section, re.M)) == len(codes)


def test_nothing_to_act_on_is_the_same_code_everywhere(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    got = {
        "status": _run(["status"], capsys)[0],
        "status NAME": _run(["status", "colab"], capsys)[0],
        "logs": _run(["logs"], capsys)[0],
        "logs NAME": _run(["logs", "colab"], capsys)[0],
    }
    assert set(got.values()) == {ExitCode.NOT_FOUND}, got


# ---------------------------------------------------------------- 7. a closed pipe


@pytest.mark.parametrize("argv", [["--help"], ["status"], ["status", "--json"]])
def test_a_closed_pipe_is_no_traceback(argv: list[str], cli_env: dict[str, str]) -> None:
    proc = subprocess.Popen(
        [_exe(), *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=cli_env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the program writes a byte
    err = proc.stderr.read().decode()
    code = proc.wait(30)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert code == ExitCode.CLOSED_PIPE, err


def test_a_closed_pipe_unbuffered_is_no_traceback_either(cli_env: dict[str, str]) -> None:
    # Unbuffered, argparse's --help writer ignores the closed pipe itself (exit 0, docs/cli.md).
    for argv, codes in ((["--help"], {0, 141}), (["status"], {141})):
        proc = subprocess.Popen(
            [_exe(), *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=dict(cli_env, PYTHONUNBUFFERED="1"),
        )
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        err = proc.stderr.read().decode()
        assert proc.wait(30) in codes and "Traceback" not in err, (argv, err)


# -------------------------------------------------------- 8. no command, or a mistyped one


def test_a_mistyped_command_gets_short_help_and_the_nearest(
    cli_env: dict[str, str],
) -> None:
    res = subprocess.run(
        [_exe(), "stauts"], capture_output=True, text=True, env=cli_env, timeout=30
    )
    assert res.returncode == ExitCode.BAD_INPUT
    assert res.stderr.startswith("usage: handy-colab")
    assert re.search(r"^  status +runtime side", res.stderr, re.M), res.stderr
    assert re.search(r"^  init +laptop side", res.stderr, re.M), res.stderr  # a plugged one
    assert "did you mean 'status'?" in _one_error_line(res.stderr)


@pytest.mark.parametrize("argv", [[], ["-v"]])
def test_no_command_gets_short_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(argv, capsys)
    assert (code, out) == (ExitCode.BAD_INPUT, "")
    assert "commands:" in err and "no command given" in _one_error_line(err)


def test_a_valid_command_keeps_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    import handy_colab.cli as cli

    built: list[str | None] = []
    real = cli.build_parser

    def spy(only: str | None = None) -> argparse.ArgumentParser:
        built.append(only)
        return real(only)

    monkeypatch.setattr(cli, "build_parser", spy)
    with pytest.raises(SystemExit):
        cli.main(["status", "--help"])
    assert built == ["status"]


# --------------------------------------------------------------- 9. help on every flag


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def test_every_flag_of_every_command_has_help() -> None:
    missing = [
        f"{name} {action.option_strings[0] if action.option_strings else action.dest}"
        for name, sub in _subparsers().items()
        for action in sub._actions
        if not isinstance(action, argparse._HelpAction)
        and (not action.help or action.help == argparse.SUPPRESS)
    ]
    assert missing == []


# ---------------------------------------------- 10. frps-setup lists what it writes


def test_frps_setup_lists_exactly_the_files_it_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "frps"
    code, out, err = _run(
        ["frps-setup", "--server-name", "vps.example.org", "--out", str(out_dir)], capsys
    )
    assert code == 0, err
    plan, written = out.split("\nWritten:\n")
    on_disk = {p for p in out_dir.rglob("*") if p.is_file()}
    found = re.findall(rf"{re.escape(str(out_dir))}/[\w./-]*\w", plan)
    listed = {Path(m) for m in found if not Path(m).is_dir()}
    assert listed == on_disk
    assert {Path(ln[2:]) for ln in written.splitlines() if ln.startswith("- ")} == on_disk


def test_frps_setup_names_the_unit_only_when_it_writes_it(tmp_path: Path) -> None:
    from handy_colab import frps_setup

    plan = frps_setup.make_plan("vps.example.org", bind_port=7000, ports="6000-6001")
    unit = tmp_path / "u.service"
    assert str(unit) in frps_setup.render(plan, tmp_path, unit)
    assert ".service" not in frps_setup.render(plan, tmp_path, None)


# ------------------------------------------ 11. a .pub that holds a private key


def test_init_refuses_a_pub_holding_a_private_key(
    home: Path, tmp_path: Path, keys: KeyStore, capsys: pytest.CaptureFixture[str]
) -> None:
    key = keys.copy_private("laptop", home / "id")
    keys.copy_private("laptop", home / "id.pub")  # the private key, under the .pub's name
    for given in (key, home / "id.pub"):
        code, _out, err = _run(
            ["init", str(tmp_path / "out"), "--key", str(given), "--yes"], capsys
        )
        line = _one_error_line(err)
        assert code == ExitCode.BAD_INPUT
        assert f"{home / 'id.pub'}: this is a private key" in line
        assert "ssh-keygen -y -f" in line


def test_up_refuses_a_pub_in_the_folder_holding_a_private_key(
    tmp_path: Path, keys: KeyStore, state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "cfg"
    folder.mkdir()
    write_config(folder, {"relay": {"host": "relay.example.org", "user": "u", "remote_port": 2222}})
    keys.copy_public("laptop", folder / "laptop.pub")
    # A relay route config whose only private key hides in a .pub: today it is the relay key.
    keys.copy_private("ed25519", folder / "relay_key.pub")
    with pytest.raises(KeyFileError, match=r"relay_key\.pub: this is a private key"):
        scan_folder(folder, set())
    code, _out, err = _run(["up", str(folder), "--no-install"], capsys)
    assert code == ExitCode.BAD_INPUT
    assert "relay_key.pub: this is a private key" in _one_error_line(err)
