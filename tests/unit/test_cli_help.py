"""`handy-colab --help` and `handy-colab CMD --help` are written for users: every command listed
with its purpose, each with an example, and no developer's module docstring in sight."""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import handy_colab
from handy_colab.cli import build_parser, main

# The commands a user meets; the parser may add more, which then get the same checks.
EXPECTED = {
    "up",
    "status",
    "down",
    "logs",
    "proxy",
    "demo",
    "connect",
    "frps-setup",
    "relay-setup",
    "forward",
    "code",
    "init",
    "list",
    "help",
}


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("handy-colab has no subcommands")


COMMANDS = _commands()


def _help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    assert exc.value.code == 0, err
    return out


def _docstring_lines() -> list[str]:
    """The first line of every module docstring in the package."""
    root = Path(handy_colab.__file__).parent
    lines = []
    for path in root.rglob("*.py"):
        doc = ast.get_docstring(ast.parse(path.read_text()))
        if doc and len(doc.splitlines()[0]) > 20:
            lines.append(doc.splitlines()[0].strip())
    assert len(lines) > 30  # the package's modules were found
    return lines


DOCSTRINGS = _docstring_lines()


def _no_docstring(text: str) -> None:
    flat = " ".join(text.split())
    leaked = [d for d in DOCSTRINGS if " ".join(d.split()) in flat]
    assert leaked == [], f"module docstrings in the help: {leaked}"


def test_every_expected_command_exists() -> None:
    assert set(COMMANDS) >= EXPECTED, EXPECTED - set(COMMANDS)


def test_top_level_help_lists_every_command_with_its_purpose() -> None:
    # A real process, as a user runs it.
    out = subprocess.run(
        [sys.executable, "-m", "handy_colab.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert out.startswith("usage: handy-colab")
    assert "Make a notebook runtime" in out
    for name in COMMANDS:
        # "    NAME   purpose" (argparse may wrap a long name's purpose to the next line).
        m = re.search(rf"^ {{4}}{re.escape(name)}(?: +(\S.*)|\n {{10,}}(\S.*))$", out, re.M)
        assert m is not None, f"{name} is not listed with a purpose:\n{out}"
        assert len((m.group(1) or m.group(2)).split()) >= 4, m.group(0)
    assert re.search(r"^Example", out, re.M), out
    assert "handy-colab up " in out and "handy-colab connect " in out
    _no_docstring(out)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_command_help_says_what_it_is_for_with_an_example(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _help([name, "--help"], capsys)
    assert out.startswith(f"usage: handy-colab {name}"), out
    # The description: the paragraph between the usage and the argument lists.
    body = out.split("\n\n", 1)[1]
    description = re.split(r"^(?:positional arguments|options):", body, flags=re.M)[0]
    assert len(description.split()) >= 8, f"{name}: no description:\n{out}"
    example = re.search(r"^Example[^\n]*:\n((?:  .*\n?)+)", out, re.M)
    assert example is not None, f"{name}: no Example section:\n{out}"
    # The example runs this very command (proxy's: as ssh's ProxyCommand).
    assert f"handy-colab {name}" in example.group(1) or (
        name == "proxy" and "ProxyCommand=handy-colab proxy" in example.group(1)
    ), example.group(0)
    _no_docstring(out)


def test_the_proxy_help_names_its_three_forms(capsys: pytest.CaptureFixture[str]) -> None:
    # `proxy` hands every other argument to the ProxyCommand itself; -h must still reach help.
    for flag in ("-h", "--help"):
        out = _help(["proxy", flag], capsys)
        for form in ("proxy [-F CONFIG] RELAY SOCKET", "proxy --ws", "proxy --frp PROFILE"):
            assert form in out, out
        assert "direct-streamlocal" in out


# One command line per command defined in cli.py, parsed by the whole parser and by the one
# main() builds for that command alone (build_parser(only=...)): same result, same help.
SAMPLE_ARGV = {
    "up": ["up", "dir", "--name", "n", "--timeout", "5", "--tunnel", "openssh", "--no-install"],
    "status": ["status", "colab", "--json"],
    "down": ["down"],
    "logs": ["logs", "colab", "-n", "3"],
    "proxy": ["proxy", "relay", "/tmp/s.sock"],
    "demo": ["demo"],
    "connect": ["connect", "hc1:x", "--identity", "k", "--os", "windows", "--no-vscode"],
    "frps-setup": ["frps-setup", "--server-name", "vps", "--ports", "6000-6001"],
    "relay-setup": ["relay-setup", "--key", "k.pub", "--mode", "private"],
}


def test_own_commands_are_exactly_those_cli_defines() -> None:
    from handy_colab.cli import OWN_COMMANDS, PLUGGED_COMMANDS

    assert set(SAMPLE_ARGV) == OWN_COMMANDS
    assert set(COMMANDS) - OWN_COMMANDS  # the plugged ones are still there...
    for name in set(COMMANDS) - OWN_COMMANDS:  # ...and every other one is plugged
        assert getattr(COMMANDS[name], "_defaults", {}).get("func") is not None, name
    assert len(PLUGGED_COMMANDS) == len(set(COMMANDS) - OWN_COMMANDS)


@pytest.mark.parametrize("name", sorted(SAMPLE_ARGV))
def test_one_command_parser_parses_as_the_whole_one(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = SAMPLE_ARGV[name]
    alone = build_parser(only=name)
    assert vars(alone.parse_args(argv)) == vars(build_parser().parse_args(argv))
    # It knows no other command, and its help is the whole parser's for this command.
    with pytest.raises(SystemExit):
        alone.parse_args(["up" if name != "up" else "down"])
    capsys.readouterr()
    assert _help([name, "--help"], capsys) == COMMANDS[name].format_help()
