"""The pasted ``hc1:`` line goes through exactly the descriptor file's validation: every field
a crafted line could use to add ssh directives, known_hosts patterns or options is refused
with one line naming it, and `connect` then writes nothing; the line itself is checked too
(alphabet, length, inflation), and what it leaves out to be short comes back the same."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest

from handy_colab.client.connect import connect
from handy_colab.descriptor import Descriptor
from handy_colab.errors import ConfigError
from tests.unit.conftest import KeyStore

FRP = {
    "server": "vps.example.org",
    "port": 7000,
    "proxy": "colab-ssh",
    "server_name": "vps.example.org",
    "verified": True,
    "stun": "stun.example.org:3478",
}


def _routes(keys: KeyStore, make_descriptor: Any) -> dict[str, Descriptor]:
    ed = keys.blob("ed25519")
    common = {"name": "colab", "user": "root", "host_keys": [ed], "python": "/usr/bin/python3"}
    return {
        "relay-public": make_descriptor(mode="public", relay_host_keys=[], socket_path=""),
        "relay-private": make_descriptor(
            mode="private", remote_port=0, relay_host_keys=[keys.blob("ed25519_b")]
        ),
        "cloudflared": Descriptor(
            **common,
            mode="quick",
            route="cloudflared",
            hostname="a-b-c.trycloudflare.com",
            workdir="/content",
            format=2,
        ),
        "frp": Descriptor(**common, mode="private", route="frp", frp=dict(FRP), format=2),
    }


def _paste(data: Any) -> str:
    raw = json.dumps(data).encode()
    return "hc1:" + base64.urlsafe_b64encode(zlib.compress(raw)).decode().rstrip("=")


def _refused(line: str, match: str) -> str:
    with pytest.raises(ConfigError, match=match) as exc:
        Descriptor.from_paste(line)
    text = str(exc.value)
    assert "\n" not in text and "\r" not in text and "Fix:" in text, text
    return text


def test_every_route_round_trips_and_is_short(keys: KeyStore, make_descriptor: Any) -> None:
    for route, desc in _routes(keys, make_descriptor).items():
        line = desc.to_paste()
        # One ed25519 host key each: a few hundred characters, one shell word.
        assert line.startswith("hc1:") and len(line) < 450, (route, len(line))
        assert all(c.isalnum() or c in "_-:" for c in line), route
        assert Descriptor.from_paste(line) == desc
        # Pasted with the shell's newline or the terminal's spaces around it: the same.
        assert Descriptor.from_paste(f"  {line}\n") == desc
        # The defaults it leaves out (empty lists and strings) are the file's defaults.
        assert len(line) < len(_paste(json.loads(desc.to_json()))), route


# Each: a field and a value that would write something else than one token into ssh config,
# known_hosts or a command line if it got through.
CRAFTED: list[tuple[str, str, Any]] = [
    ("relay-public", "name", "colab\nHost *"),
    ("relay-public", "name", "Host *"),
    ("relay-public", "name", "*"),
    ("relay-public", "user", "root\n    ProxyCommand touch /tmp/pwned"),
    ("relay-public", "user", "-oProxyCommand=touch"),
    ("relay-public", "user", "-v"),
    ("relay-public", "public_host", "*"),
    ("relay-public", "public_host", "a.example.org,*"),
    ("relay-public", "public_host", "-oProxyCommand"),
    ("relay-public", "public_host", "h.example.org\tProxyJump evil"),
    ("relay-public", "remote_port", "2222\n"),
    ("relay-public", "remote_port", 70000),
    ("relay-public", "forwards", ["8080 0.0.0.0:22"]),
    ("relay-public", "host_keys", ["ssh-ed25519 AAAA\nHost *"]),
    ("relay-public", "host_keys", ["@cert-authority * ssh-ed25519 AAAAC3NzaC1lZDI1NTE5"]),
    ("relay-public", "host_keys", []),
    ("relay-public", "workdir", "/content\nHost *"),
    ("relay-public", "python", "/usr/bin/python3\r\nProxyCommand x"),
    ("relay-private", "relay_host", "vps.example.org ProxyCommand=x"),
    ("relay-private", "relay_host", "-oProxyCommand"),
    ("relay-private", "relay_user", "alice -W x"),
    ("relay-private", "socket_path", "/tmp/s.sock; touch /tmp/pwned"),
    ("relay-private", "socket_path", "relative.sock"),
    ("relay-private", "relay_host_keys", ["ssh-ed25519 not-base64"]),
    ("cloudflared", "hostname", "x.trycloudflare.com\n    ProxyCommand evil"),
    ("cloudflared", "hostname", "-oProxyCommand=evil"),
    ("cloudflared", "mode", "public"),
    ("cloudflared", "route", "sideways"),
    ("frp", "frp", {**FRP, "server": "-oProxyCommand=x"}),
    ("frp", "frp", {**FRP, "proxy": "a b"}),
    ("frp", "frp", {**FRP, "stun": "stun.example.org:3478 x"}),
    ("frp", "format", 99),
]


@pytest.mark.parametrize(("route", "field", "value"), CRAFTED)
def test_a_crafted_field_is_refused_in_one_line(
    keys: KeyStore, make_descriptor: Any, route: str, field: str, value: Any
) -> None:
    data = json.loads(_routes(keys, make_descriptor)[route].to_json())
    data[field] = value
    problem = "newer than" if field == "format" else f"field '{field}"
    text = _refused(_paste(data), problem)
    assert "the pasted hc1: line" in text
    # The file says the same about the same field: one validation for both.
    with pytest.raises(ConfigError, match=problem):
        Descriptor.from_dict(data, "crafted.json")


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("hc1:", "damaged"),
        ("hc1:not*base64", "not base64url"),
        ("hc1:eJy rest", "damaged"),  # spaces are dropped (a wrapped line): not zlib
        ("hc1:eJy\nHost *", "not base64url"),
        ("hc1:eJyrVg==", "not base64url"),  # padding is never written
        ("hc1:" + "A" * 20_000, "too long"),
        ("hc1:AAAA", "damaged"),  # base64, but not zlib
        ("hc2:eJyrVg", "is not one"),
        ("hc1:\0", "not base64url"),
        ("hc1:" + "A" * 80_000, "too long"),
    ],
)
def test_a_damaged_line_is_refused_in_one_line(line: str, match: str) -> None:
    _refused(line, match)


def test_inflation_is_bounded_and_the_shape_checked() -> None:
    # 200 kB of JSON in a line of a few hundred characters: refused before it is unpacked.
    bomb = _paste({"name": "a" * 200_000})
    assert len(bomb) < 2000
    _refused(bomb, "damaged")
    _refused(_paste([1, 2]), "holds no descriptor")
    _refused(_paste({"name": "colab"}), "field 'mode'")


def test_connect_writes_nothing_for_a_crafted_line(
    tmp_path: Path, keys: KeyStore, make_descriptor: Any
) -> None:
    data = json.loads(_routes(keys, make_descriptor)["relay-public"].to_json())
    data["user"] = "root\nHost *\n    ProxyCommand touch /tmp/pwned"
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="field 'user'"):
        connect(Path(_paste(data)), ssh_config=out / "config", known_hosts=out / "known")
    assert not out.exists()
    # And the command line says it in one line, exit code 2, nothing written either.
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "handy_colab.cli",
            "connect",
            _paste(data),
            "--ssh-config",
            str(out / "config"),
            "--known-hosts",
            str(out / "known"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode != 0 and res.stdout == ""
    assert len(res.stderr.strip().splitlines()) == 1 and "field 'user'" in res.stderr
    assert not out.exists()


def _variants(line: str) -> dict[str, str]:
    body = line[4:]
    wrapped = "\n".join(line[i : i + 60] for i in range(0, len(line), 60))
    return {
        "single quotes": f"'{line}'",
        "double quotes": f'"{line}"',
        "backticks": f"`{line}`",
        "chat quotes": f"\u201c{line}\u201d",
        "chat single quotes": f"\u2018{line}\u2019",
        "capitals": "HC1:" + body,
        "the printed command": f"handy-colab connect '{line}'",
        "a prompt and the command": f"$ handy-colab connect {line}",
        "wrapped by a terminal": wrapped,
        "wrapped with spaces": line[:50] + "  \r\n  " + line[50:],
        "pasted twice": line + line,
        "pasted twice, body only": line + body,
        "quotes inside spaces": f"  '  {line} '  ",
    }


def test_what_a_copy_adds_is_undone(keys: KeyStore, make_descriptor: Any) -> None:
    from handy_colab.descriptor import is_paste

    for route, desc in _routes(keys, make_descriptor).items():
        line = desc.to_paste()
        for what, text in _variants(line).items():
            assert is_paste(text), (route, what)
            assert Descriptor.from_paste(text) == desc, (route, what)


def test_what_stays_ambiguous_is_one_line(keys: KeyStore, make_descriptor: Any) -> None:
    from handy_colab.descriptor import is_paste

    line = _routes(keys, make_descriptor)["relay-private"].to_paste()
    other = _routes(keys, make_descriptor)["cloudflared"].to_paste()
    _refused(line[:-12], "cut short|damaged")
    _refused(line + other[4:], "something follows|damaged")  # two different lines
    _refused(line + line[4:-3], "something follows|damaged")  # doubled, second cut
    _refused(f"'{line}", "is not one|not base64url")  # an unmatched quote
    _refused(f"handy-colab connect '{line}' --identity k", "is not one|not base64url")
    for path in ("./hc1:x", "/tmp/hc1:x", "connections/colab.json", ""):
        assert not is_paste(path), path
