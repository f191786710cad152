"""Property test (hypothesis) of `connect` with hostile descriptors, judged by the real
`ssh -G`: either one-line error and every file as it was, or a config after which every
other alias and every unrelated host name resolves exactly as before, and which holds only
the directives a route writes, host keys always checked."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from handy_colab.client.connect import connect
from handy_colab.errors import HandyColabError
from tests.unit.conftest import SSH, KeyStore
from tests.unit.test_descriptor_props import bases, hostile_dicts, paste_of

assert SSH is not None, "OpenSSH's ssh is needed (apt-get install openssh-client)"
USER_BLOCKS = (
    "Host github.com\n    User git\n    IdentityFile ~/.ssh/github\n\n"
    "Host *.example.org\n    Port 2200\n\n"
    "Host mine\n    HostName mine.example.net\n"
)
UNRELATED = [
    "github.com",
    "a.example.org",
    "relay.example.org",
    "vps.example.org",
    "mine",
    "localhost",
    "127.0.0.1",
    "neighbour",
    "neighbour-relay",
]
DIRECTIVES = {
    "hostname",
    "port",
    "user",
    "hostkeyalias",
    "userknownhostsfile",
    "stricthostkeychecking",
    "checkhostip",
    "updatehostkeys",
    "identityfile",
    "identitiesonly",
    "serveraliveinterval",
    "serveralivecountmax",
    "proxycommand",
    "localforward",
}


# Values a real runtime may well send: they must connect, and still change nothing else.
ODD_BUT_VALID: dict[str, list[Any]] = {
    "name": ["Kaggle-GPU", "a_b", "x" * 63],
    "public_host": ["10.0.0.5", "::1", "relay2.example.org", "127.0.0.1"],
    "remote_port": [22, 2222],
    "workdir": ["/content/my drive 50%/$(touch x)'q\"", "/"],
    "python": ["/opt/py 3/bin/python", "/usr/bin/python3"],
    "forwards": [[6006, 8888], [22]],
    "user": ["jovyan", "_svc.x-1"],
    "identity_hint": ["k.pem", "id_ed25519"],
}


def odd_but_valid(keys: KeyStore) -> st.SearchStrategy[dict[str, Any]]:
    changes = st.dictionaries(
        st.sampled_from(sorted(ODD_BUT_VALID)),
        st.integers(0, 3),
        max_size=4,
    )
    return st.builds(
        lambda base, ch: {
            **base,
            **{k: ODD_BUT_VALID[k][i % len(ODD_BUT_VALID[k])] for k, i in ch.items()},
        },
        st.sampled_from(bases(keys)),
        changes,
    )


def _resolve(cfg: Path, name: str) -> str:
    res = subprocess.run(
        [str(SSH), "-G", "-F", str(cfg), name],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=20,
    )
    assert res.returncode == 0, res.stderr
    return res.stdout


def _files(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@settings(
    max_examples=60,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # no shrinking: bounded time
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.data())
def test_connect_adds_its_own_runtime_or_nothing(keys: KeyStore, data: st.DataObject) -> None:
    raw = data.draw(st.one_of(hostile_dicts(keys), odd_but_valid(keys)))
    as_file = data.draw(st.booleans())
    # A folder too long for the held relay connection's sockets: private mode then writes
    # the asyncssh proxy, and connect starts no background log-in to a made-up relay.
    root = Path(tempfile.mkdtemp(prefix="hc-props-" + "x" * 80))
    try:
        out = root / "ssh"
        managed, known = out / "managed", out / "known_hosts"
        wrapper = out / "config"
        # A neighbour runtime connected first; the user's own blocks below our Include.
        neighbour = dict(
            bases(keys)[0], name="neighbour", host_keys=[keys.blob("ed25519_b")], remote_port=2222
        )
        (root / "n.json").write_text(json.dumps(neighbour))
        connect(root / "n.json", ssh_config=managed, known_hosts=known, vscode=False)
        wrapper.write_text(f"Include {managed}\n\n{USER_BLOCKS}")
        before = {name: _resolve(wrapper, name) for name in UNRELATED}
        files = _files(out)
        src = root / "in" / "x.json"
        src.parent.mkdir()
        src.write_text(json.dumps(raw))
        source = src if as_file else Path(paste_of(raw))
        try:
            res = connect(source, ssh_config=managed, known_hosts=known, vscode=False)
        except HandyColabError as exc:
            event("refused")
            assert "\n" not in str(exc), str(exc)
            assert _files(out) == files
            return
        event("connected")
        alias = res.name
        assert alias not in UNRELATED
        for name in UNRELATED:
            assert _resolve(wrapper, name) == before[name], name
        # The managed file: the neighbour's block as it was, and ours, made only of Host
        # lines for this alias (and its relay) and the directives a route writes.
        text = managed.read_text()
        ours = text[text.index(f"# >>> handy-colab {alias} >>>") :]
        assert text.startswith(files[str(managed)].decode().rstrip("\n"))
        for line in ours.splitlines():
            if not line or line.startswith("#"):
                continue
            key, _, value = line.strip().partition(" ")
            if key == "Host":
                assert set(value.split()) <= {alias, raw["name"], f"{alias}-relay"}, line
            else:
                assert key.lower() in DIRECTIVES, line
        resolved = _resolve(wrapper, alias)
        assert "\nstricthostkeychecking true\n" in resolved
        assert f"\nhostkeyalias {alias}\n" in resolved
        # The neighbour's pins are untouched.
        neighbour_lines = [
            ln for ln in files[str(known)].decode().splitlines() if "handy-colab:neighbour" in ln
        ]
        assert set(neighbour_lines) <= set(known.read_text().splitlines())
    finally:
        shutil.rmtree(root, ignore_errors=True)
