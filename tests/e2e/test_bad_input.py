"""Bad input and hostile conditions: one line naming cause and fix, a non-zero exit,
nothing of the user's lost or overwritten, nothing left running."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Runtime, need_rig
from tests.rig import keygen


def tree_digest(folder: Path) -> dict[str, str]:
    """Content and mode of every file in the folder: "nothing lost or overwritten"."""
    out = {}
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            out[str(f.relative_to(folder))] = hashlib.sha256(f.read_bytes()).hexdigest() + oct(
                f.stat().st_mode
            )
    return out


def one_line_error(res: Any, *needles: str) -> str:
    assert res.returncode != 0, res.stdout
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err and "Fix:" in err, err
    for needle in needles:
        assert needle in err, err
    return str(err)


def _supervisors(rt: Runtime) -> list[int]:
    return rt.rig.supervisors()


# -- config errors: no network needed, but the real CLI in a real process ---------------------


def _seed_folder(tmp: Path) -> Path:
    folder = tmp / "cfg"
    folder.mkdir()
    keygen(tmp / "relay", "rsa", pem=True)
    shutil.copy(tmp / "relay", folder / "me.first.pem")
    (folder / "user_config.json").write_text(
        json.dumps(
            {
                "tunnel_options": {
                    "service_url": "relay.invalid",
                    "service_port": 2222,
                    "local_port": 8888,
                },
                "python_packages": [],
                "os_packages": [],
            }
        )
    )
    return folder


BAD_CONFIGS = [
    (
        "malformed",
        lambda f: (f / "user_config.json").write_text('{"tunnel_options": {'),
        ["invalid JSON", "line 1"],
    ),
    (
        "wrong-type",
        lambda f: (f / "user_config.json").write_text(
            '{"tunnel_options": {"service_url": "h", "service_port": "many"}}'
        ),
        ["tunnel_options.service_port", "port number"],
    ),
    (
        "unknown-value",
        lambda f: (f / "user_config.json").write_text(
            '{"mode": "secret", "tunnel_options": {"service_url": "h", "service_port": 1}}'
        ),
        ["'mode'", "public", "private"],
    ),
    ("no-key", lambda f: (f / "me.first.pem").unlink(), ["no private key"]),
    (
        "passphrase",
        lambda f: subprocess.run(
            ["ssh-keygen", "-q", "-p", "-N", "secret", "-f", str(f / "me.first.pem")], check=True
        ),
        ["passphrase", "me.first.pem"],
    ),
]


@pytest.mark.parametrize(
    ("case", "damage", "needles"), BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS]
)
def test_bad_config_one_line_nothing_lost(
    tmp_path: Path, case: str, damage: Any, needles: list[str]
) -> None:
    need_rig()
    folder = _seed_folder(tmp_path)
    damage(folder)
    before = tree_digest(folder)
    env = dict(os.environ, HANDY_COLAB_STATE_DIR=str(tmp_path / "state"))
    res = subprocess.run(
        [shutil.which("handy-colab") or "handy-colab", "up", str(folder)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert res.returncode == 2
    one_line_error(res, str(folder), *needles)
    assert tree_digest(folder) == before
    ps = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert ps.stdout == ""


# -- hostile conditions on a real rig -------------------------------------------------------


def test_key_with_open_permissions_is_fixed_in_a_copy(fresh: Any) -> None:
    rt = fresh("public")
    pem = rt.folder / "hcrelay.first.pem"
    pem.chmod(0o644)  # as a Drive or a git checkout often leaves it
    before = tree_digest(rt.folder)
    res = rt.up()
    assert res.returncode == 0, res.stderr
    assert rt.connect().returncode == 0
    assert rt.ssh("true").returncode == 0
    assert oct(pem.stat().st_mode & 0o777) == "0o644"  # the user's file is untouched
    assert {k: v for k, v in tree_digest(rt.folder).items() if k in before} == before
    copy = rt.rig.state_dir / "colab" / "relay_key"
    assert oct(copy.stat().st_mode & 0o777) == "0o600"


def test_local_port_in_use(fresh: Any) -> None:
    rt = fresh("public")
    cfg = json.loads((rt.folder / "user_config.json").read_text())
    cfg["server"] = {"port": 2022}
    (rt.folder / "user_config.json").write_text(json.dumps(cfg))
    holder = rt.rig.popen(
        "rt",
        [
            "python3",
            "-c",
            "import socket,time\ns=socket.socket()\n"
            "s.bind(('127.0.0.1',2022))\ns.listen()\ntime.sleep(60)",
        ],
    )
    rt.rig.wait_tcp("rt", "127.0.0.1", 2022)
    res = rt.up()
    one_line_error(res, "2022", "already in use", "server.port")
    assert _supervisors(rt) == []
    holder.kill()


def _in_private_mount(rt: Runtime, setup: str, *args: str) -> Any:
    """Run `handy-colab ARGS` after SETUP, in the runtime's own mount namespace."""
    exe = shutil.which("handy-colab") or "handy-colab"
    script = f"set -e; {setup}; exec {exe} " + " ".join(args)
    return rt.rig.run(
        "rt", ["unshare", "-m", "--propagation", "private", "sh", "-c", script], timeout=90
    )


def _ro(folder: Path) -> str:
    return f"mount --bind {folder} {folder}; mount -o remount,ro,bind {folder}"


def test_read_only_folder_first_use_fails_clearly(fresh: Any) -> None:
    rt = fresh("public")
    before = tree_digest(rt.folder)
    res = _in_private_mount(rt, _ro(rt.folder), "up", str(rt.folder), "--timeout", "30")
    one_line_error(res, "host key", "Read-only file system", "writable")
    assert tree_digest(rt.folder) == before
    assert _supervisors(rt) == []


def test_read_only_folder_after_first_use_works(fresh: Any) -> None:
    """Drive often comes back read-only: a folder used once before still works."""
    rt = fresh("public")
    assert rt.up().returncode == 0  # records host key and relay key, writes the descriptor
    assert rt.rig.handy("rt", "down").returncode == 0
    before = tree_digest(rt.folder)
    res = _in_private_mount(rt, _ro(rt.folder), "up", str(rt.folder), "--timeout", "30")
    assert res.returncode == 0, res.stderr
    assert "cannot write the connection descriptor" in res.stderr
    assert rt.connect().returncode == 0
    assert rt.ssh("echo ok").stdout == "ok\n"
    assert tree_digest(rt.folder) == before


def test_read_only_folder_never_connects_unpinned(fresh: Any) -> None:
    rt = fresh("public")
    rt.folder.joinpath("host_keys").mkdir()
    keygen(rt.folder / "host_keys" / "ssh_host_ed25519_key")  # host key exists, relay's not
    res = _in_private_mount(rt, _ro(rt.folder), "up", str(rt.folder), "--timeout", "30")
    one_line_error(res, "read-only", "relay.host_key")
    assert not (rt.folder / "relay_known_hosts").exists()
    assert _supervisors(rt) == []


def test_disk_full_for_state(fresh: Any) -> None:
    rt = fresh("public")
    state = rt.rig.work / "tiny-state"
    state.mkdir()
    setup = (
        f"mount -t tmpfs -o size=64k tmpfs {state}; "
        f"dd if=/dev/zero of={state}/filler bs=4k 2>/dev/null || true; "
        f"export HANDY_COLAB_STATE_DIR={state}"
    )
    before = tree_digest(rt.folder)
    res = _in_private_mount(rt, setup, "up", str(rt.folder), "--timeout", "30")
    one_line_error(res, "No space left on device", "HANDY_COLAB_STATE_DIR")
    assert _supervisors(rt) == []
    assert {k: v for k, v in tree_digest(rt.folder).items() if k in before} == before


def test_two_ups_race_for_the_same_name(fresh: Any) -> None:
    rt = fresh("public")
    exe = shutil.which("handy-colab") or "handy-colab"
    procs = [
        rt.rig.popen(
            "rt",
            [exe, "up", str(rt.folder), "--timeout", "40"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=90) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sum("already running" in out for out, _ in outs) == 1, outs
    assert len(_supervisors(rt)) == 1
    assert rt.connect().returncode == 0
    assert rt.ssh("true").returncode == 0
