"""Property tests (hypothesis) of the descriptor as hostile input: whatever a pasted line or a
descriptor file holds, reading it either raises ConfigError (one line) or gives a descriptor
whose every field is within its allow-list."""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import zlib
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from handy_colab.choices import runtime_name_problem
from handy_colab.descriptor import USER_RE, Descriptor, host_problem, is_paste
from handy_colab.errors import ConfigError
from tests.unit.conftest import KeyStore
from tests.unit.test_paste import FRP

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# What an attacker would try in a field: ssh syntax, tokens, host names, shell.
HOSTILE_STRINGS = [
    "github.com",
    "localhost",
    "127.0.0.1",
    "::1",
    "fe80::1%eth0",
    "*",
    "colab-relay",
    "colab\nHost *",
    "a\rb",
    "x\0y",
    "%h",
    "50%done",
    "-oProxyCommand=x",
    "$(touch /tmp/pwned)",
    "a b",
    '"q"',
    "../../.ssh/id_rsa",
    "/etc/passwd",
    "relay.example.org",
    "é.example.org",
    "a" * 300,
    "",
]
SCALARS = st.one_of(
    st.sampled_from(HOSTILE_STRINGS),
    st.text(max_size=40),
    st.integers(-(2**70), 2**70),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=True),
)
JSONISH = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = [
    "name",
    "mode",
    "user",
    "host_keys",
    "relay_host",
    "relay_port",
    "relay_user",
    "relay_host_keys",
    "public_host",
    "remote_port",
    "python",
    "home",
    "workdir",
    "forwards",
    "identity_hint",
    "socket_path",
    "route",
    "hostname",
    "frp",
    "format",
]


def bases(keys: KeyStore) -> list[dict[str, Any]]:
    ed, relay = keys.blob("ed25519"), keys.blob("ecdsa")
    common = {"name": "colab", "user": "root", "host_keys": [ed], "python": "/usr/bin/python3"}
    return [
        {
            **common,
            "mode": "public",
            "relay_host": "relay.example.org",
            "relay_port": 22,
            "relay_user": "alice",
            "public_host": "relay.example.org",
            "remote_port": 12345,
            "format": 1,
        },
        {
            **common,
            "mode": "private",
            "relay_host": "relay.example.org",
            "relay_port": 22,
            "relay_user": "alice",
            "relay_host_keys": [relay],
            "public_host": "relay.example.org",
            "remote_port": 0,
            "socket_path": "/tmp/hc-alice-colab.sock",
            "format": 1,
        },
        {**common, "mode": "quick", "route": "cloudflared", "hostname": "a-b.trycloudflare.com"},
        {**common, "mode": "private", "route": "frp", "frp": dict(FRP), "format": 2},
    ]


def hostile_dicts(keys: KeyStore) -> st.SearchStrategy[dict[str, Any]]:
    """A valid descriptor of some route with a few fields replaced by hostile values."""
    return st.builds(
        lambda base, changes: {**base, **changes},
        st.sampled_from(bases(keys)),
        st.dictionaries(st.sampled_from(FIELDS), JSONISH, max_size=3),
    )


def paste_of(data: Any) -> str:
    raw = json.dumps(data).encode()
    return "hc1:" + base64.urlsafe_b64encode(zlib.compress(raw)).decode().rstrip("=")


def assert_within_allow_lists(d: Descriptor) -> None:
    assert runtime_name_problem(d.name) is None, d.name
    assert USER_RE.match(d.user), d.user
    for host in (d.relay_host, d.public_host) if d.route == "relay" else ():
        assert host_problem(host) is None, host
        assert "." in host or ":" in host  # never a single label: never an alias
    if d.route == "frp":
        assert host_problem(d.frp["server"]) is None
    if d.relay_user:
        assert USER_RE.match(d.relay_user)
    for path in (d.python, d.home, d.workdir):
        assert path == "" or (path.startswith("/") and not re.search(r"[\x00-\x1f\x7f]", path))
    assert d.identity_hint == "" or re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", d.identity_hint)
    assert all(isinstance(p, int) and 0 < p < 65536 for p in d.forwards)
    for key in d.host_keys + d.relay_host_keys:
        assert re.fullmatch(r"[a-z0-9@.-]+ [A-Za-z0-9+/=]+", key), key
    if d.mode == "public" and d.route == "relay":
        # An address pin is a dotted name or an IP: it can never collide with an alias.
        host = d.public_host
        assert "." in host or isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address)


@SETTINGS
@given(text=st.text(max_size=200))
def test_any_text_as_a_pasted_line_is_a_descriptor_or_one_line(text: str) -> None:
    is_paste(text)  # never raises
    for line in (text, "hc1:" + text, "HC1:" + text.replace("\n", "")):
        try:
            Descriptor.from_paste(line)
        except ConfigError as exc:
            assert "\n" not in str(exc) and "Fix:" in str(exc), str(exc)


@SETTINGS
@given(data=JSONISH)
def test_any_json_value_is_a_descriptor_or_one_line(data: Any) -> None:
    for attempt in (lambda: Descriptor.from_paste(paste_of(data)),) + (
        (lambda: Descriptor.from_dict(data, "f.json"),) if isinstance(data, dict) else ()
    ):
        try:
            assert_within_allow_lists(attempt())
        except ConfigError as exc:
            assert "\n" not in str(exc), str(exc)


@SETTINGS
@given(st.data())
def test_hostile_fields_are_refused_or_within_the_allow_lists(
    keys: KeyStore, data: st.DataObject
) -> None:
    d = data.draw(hostile_dicts(keys))
    try:
        desc = Descriptor.from_dict(d, "connections/x.json")
    except ConfigError as exc:
        msg = str(exc)
        assert "\n" not in msg and "Fix:" in msg, msg
        assert msg.startswith("connections/x.json: ")
        event("refused")
        return
    event("accepted")
    assert_within_allow_lists(desc)
    # The pasted form reads back the same.
    assert Descriptor.from_paste(desc.to_paste()) == desc


@SETTINGS
@given(st.data())
def test_a_mangled_copy_is_the_same_descriptor_or_one_line(
    keys: KeyStore, data: st.DataObject
) -> None:
    """What copies do to a line (quotes, case, breaks, doubling, a cut, a stray character)."""
    desc = Descriptor.from_dict(data.draw(st.sampled_from(bases(keys))), "base")
    line = desc.to_paste()
    ops = data.draw(
        st.lists(
            st.sampled_from(["quote", "upper", "break", "double", "cut", "insert", "spaces"]),
            max_size=3,
        )
    )
    for op in ops:
        if op == "quote":
            q = data.draw(st.sampled_from(["'", '"', "`"]))
            line = q + line + q
        elif op == "upper":
            line = line.replace("hc1:", "HC1:", 1)
        elif op == "break":
            at = data.draw(st.integers(0, len(line)))
            line = line[:at] + "\n" + line[at:]
        elif op == "double":
            line = line + line
        elif op == "cut":
            line = line[: data.draw(st.integers(0, len(line)))]
        elif op == "insert":
            at = data.draw(st.integers(0, len(line)))
            line = line[:at] + data.draw(st.characters()) + line[at:]
        else:
            line = f"  {line}  "
    try:
        got = Descriptor.from_paste(line)
    except ConfigError as exc:
        assert "\n" not in str(exc), str(exc)
        return
    # Accepted: then it is exactly the descriptor (a change that still decodes to another
    # valid descriptor would need a zlib stream and JSON to survive it: within allow-lists).
    if got != desc:
        assert_within_allow_lists(got)
