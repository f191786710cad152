"""Quoting for ssh's tokenizers, proven with the real OpenSSH client: whatever a path holds
(a synced folder named "drive 50%done", `$(...)`, quotes, backslashes), the ProxyCommand's
shell gets exactly that word, and ssh reads exactly that IdentityFile/UserKnownHostsFile."""

from __future__ import annotations

import json
import re
import string
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handy_colab.errors import ClientConfigError
from handy_colab.sshquote import (
    config_word,
    host_options,
    proxy_line,
    proxy_word,
    unquote_config_word,
    unquote_proxy,
)
from tests.unit.conftest import SSH

HOSTILE = [
    "drive 50%done",
    "a%h%%b%",
    "$(touch PWNED)",
    "`touch PWNED`",
    "it's",
    'say "hi"',
    "back\\slash\\",
    "semi;colon&amp|pipe>out",
    "~/not-home",
    "${HOME}",
    "$HOME",
    "-oProxyCommand=x",
    "é ü 中文",
    "",
    " lead and trail ",
]
_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
# What a file name on a laptop may hold: anything printable (ssh's log escapes non-ASCII, so
# the IdentityFile check sticks to ASCII).
_ANY_WORD = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=24)
_ASCII_WORD = st.text(st.sampled_from(string.printable[:-5]), max_size=24)


def _need_ssh() -> str:
    assert SSH is not None, "OpenSSH's ssh is needed (apt-get install openssh-client)"
    return SSH


def _run_through_ssh(tmp: Path, words: list[str], identity: str, known: str) -> tuple[Any, str]:
    """One real `ssh -v`: its ProxyCommand records the argv its shell ran; the log names
    the identity file ssh loaded."""
    out = tmp / "argv.json"
    code = f"import sys,json; open({str(out)!r},'w').write(json.dumps(sys.argv[1:]))"
    cfg = tmp / "cfg"
    cfg.write_text(
        "Host t\n"
        f"    ProxyCommand {proxy_line([sys.executable, '-c', code, *words])}\n"
        f"    IdentityFile {config_word(identity)}\n"
        f"    UserKnownHostsFile {config_word(known)}\n"
        "    BatchMode yes\n"
    )
    out.unlink(missing_ok=True)
    res = subprocess.run(
        [_need_ssh(), "-v", "-F", str(cfg), "t", "true"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=30,
        cwd=tmp,
    )
    return json.loads(out.read_text()), res.stderr


def _logged(path: str) -> str:
    """How ssh's log shows an identity file (strnvis: a backslash doubled)."""
    return f"identity file {path.replace(chr(92), chr(92) * 2)} type -1"


def _resolved(tmp: Path, key: str) -> str:
    res = subprocess.run(
        [_need_ssh(), "-G", "-F", str(tmp / "cfg"), "t"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=30,
    )
    assert res.returncode == 0, res.stderr
    return next(ln.split(" ", 1)[1] for ln in res.stdout.splitlines() if ln.startswith(key + " "))


@pytest.mark.parametrize("word", HOSTILE)
def test_a_hostile_word_reaches_the_proxy_command_exactly(tmp_path: Path, word: str) -> None:
    path = f"/tmp/hc-q/{word}"
    if "${" in word:  # refused for IdentityFile (test below): prove the ProxyCommand only
        argv, _ = _run_through_ssh(tmp_path, [word, path], "/tmp/id", "/tmp/kh")
        assert argv == [word, path]
        return
    argv, log = _run_through_ssh(tmp_path, [word, path], path, path + ".kh")
    assert argv == [word, path]
    if word.isascii():
        assert _logged(path) in log, log
    assert _resolved(tmp_path, "userknownhostsfile") == path + ".kh"
    assert not (tmp_path / "PWNED").exists() and not Path("PWNED").exists()


@_SETTINGS
@given(words=st.lists(_ANY_WORD, min_size=1, max_size=3))
def test_any_printable_words_reach_the_proxy_command(tmp_path: Path, words: list[str]) -> None:
    argv, _ = _run_through_ssh(tmp_path, words, "/tmp/hc-q/id", "/tmp/hc-q/kh")
    assert argv == words
    assert unquote_proxy(proxy_line(words)) == words


@_SETTINGS
@given(name=_ASCII_WORD.filter(lambda s: "${" not in s))
def test_any_ascii_path_is_the_identity_and_known_hosts_ssh_reads(
    tmp_path: Path, name: str
) -> None:
    path = f"/tmp/hc-q/{name}"
    _, log = _run_through_ssh(tmp_path, [], path, path)
    assert _logged(path) in log, log
    assert _resolved(tmp_path, "userknownhostsfile") == path
    assert unquote_config_word(config_word(path)) == path
    # Our own reader of the block gets the path back (list, code, forward use it).
    assert host_options(f"Host t\n    UserKnownHostsFile {config_word(path)}\n", "t") == {
        "userknownhostsfile": path
    }


@pytest.mark.parametrize("bad", ["a\nMatch exec x", "a\rb", "a\0b", "tab\there", "del\x7f"])
def test_a_line_break_or_control_character_is_refused(bad: str) -> None:
    for quote in (
        lambda v: proxy_word(v),
        lambda v: proxy_word(v, windows=True),
        lambda v: config_word(v),
        lambda v: config_word(v, expands=False),
    ):
        with pytest.raises(ClientConfigError, match="line break or control character"):
            quote(bad)


def test_what_ssh_cannot_escape_is_refused() -> None:
    with pytest.raises(ClientConfigError, match=re.escape("'${'")):
        config_word("/tmp/${HOME}/kh")
    assert config_word("/tmp/${HOME}/cfg", expands=False) == '"/tmp/${HOME}/cfg"'
    with pytest.raises(ClientConfigError, match="double quote"):
        proxy_word('C:/Users/a"b/x.exe', windows=True)


def test_windows_words_are_quoted_with_percent_doubled() -> None:
    # CreateProcessW splits on double quotes; ssh still expands % tokens first.
    assert proxy_word("C:/Users/Jane Doe/50%/hc.exe", windows=True) == (
        '"C:/Users/Jane Doe/50%%/hc.exe"'
    )
    assert proxy_word("C:/x.exe", windows=True) == '"C:/x.exe"'
