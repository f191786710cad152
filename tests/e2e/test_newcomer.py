"""A newcomer's first run, with nothing of the dev setup: the laptop installs the built
wheel into a fresh venv and runs `handy-colab init` with no route flags (the default
cloudflared quick tunnel, through the real cloudflared and the stand-in edge); "the
notebook", a second fresh venv, installs handy-colab only from the wheel init wrote into
the folder and runs `up`; the laptop's `connect` then gets `ssh` in, through the NAT.

Each side's PATH holds only its venv's bin and /usr/bin:/bin (the runtime's also the test
peers' bin, where its cloudflared is). The dependencies come from a wheelhouse fetched
once, so both venvs install offline, as fast as the test can be."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from handy_colab import __version__
from tests.cfrig import PEERS_BIN, CloudflareStandIn
from tests.e2e.cfhelpers import need_peers
from tests.e2e.test_wheel import need_build_tools
from tests.rig import Rig, keygen
from tests.wheelkit import build_dists, clean_env, fresh_venv, wheelhouse

pytestmark = pytest.mark.e2e

DRIVE = "/content/drive/MyDrive"


def test_newcomer_installs_the_wheel_inits_and_gets_ssh_in(tmp_path: Path) -> None:
    need_peers()
    need_build_tools()
    t0 = time.monotonic()
    _, built = build_dists(tmp_path)
    wh = wheelhouse(tmp_path)
    offline = ["--no-index", "--find-links", str(wh)]
    laptop_bin = fresh_venv(tmp_path / "laptop-venv", *offline, str(built))
    rig = Rig(tmp_path / "rig")
    try:
        cf = CloudflareStandIn(rig)
        home = tmp_path / "laptop-home"
        home.mkdir()
        laptop_env = clean_env(laptop_bin, {**cf.env(), "HOME": str(home)})
        # A key of their own, as most newcomers have one.
        (home / ".ssh").mkdir(mode=0o700)
        key = keygen(home / ".ssh" / "id_ed25519")
        folder = tmp_path / "laptop" / "colab_data"
        # No route flags: the default route. The stand-in edge's addresses and CA reach
        # cloudflared the way any user's extra cloudflared flags do.
        edge = [f"--cloudflared-arg={arg}" for arg in cf.extra_args()]
        res = rig.run(
            "laptop", ["handy-colab", "init", str(folder), "--yes", *edge], env=laptop_env
        )
        assert res.returncode == 0, res.stderr + res.stdout
        steps = res.stdout
        [wheel] = folder.glob("handy_colab-*.whl")
        assert wheel.name == f"handy_colab-{__version__}-py3-none-any.whl"
        printed = re.search(rf"^\s+%pip install -q {DRIVE}/(\S+)$", steps, re.M)
        assert printed is not None and printed.group(1) == f"{folder.name}/{wheel.name}", steps

        # "Upload the folder to My Drive", then the cell's %pip line, run as pip in a venv.
        drive = tmp_path / "drive"
        (drive / folder.name).mkdir(parents=True)
        for f in folder.iterdir():
            (drive / folder.name / f.name).write_bytes(f.read_bytes())
            (drive / folder.name / f.name).chmod(f.stat().st_mode & 0o777)
        cfg = drive / folder.name
        nb_bin = fresh_venv(tmp_path / "notebook-venv", *offline, str(drive / printed.group(1)))
        rt_env = clean_env(nb_bin, cf.env(), PEERS_BIN)
        res = rig.run("rt", ["handy-colab", "up", str(cfg), "--timeout", "60"], env=rt_env)
        assert res.returncode == 0, res.stderr + res.stdout
        assert "runs here" not in res.stderr  # the folder's wheel is the version that runs
        pasted = re.search(r"handy-colab connect '(hc1:[^']+)'", res.stdout)
        assert pasted is not None, res.stdout

        ssh_cfg = tmp_path / "laptop" / "ssh_config"
        files = ["--ssh-config", str(ssh_cfg), "--known-hosts", str(tmp_path / "laptop" / "kh")]
        connect = ["handy-colab", "connect", pasted.group(1), "--identity", str(key), *files]
        res = rig.run("laptop", connect, env=laptop_env)
        assert res.returncode == 0, res.stderr + res.stdout
        assert "runs handy-colab" not in res.stderr  # same version on both sides
        ssh = ["ssh", "-F", str(ssh_cfg), "-o", "BatchMode=yes", "colab"]
        res = rig.run("laptop", [*ssh, "true"], env=laptop_env)
        assert res.returncode == 0, res.stderr
        # The session runs the notebook venv's handy-colab, not the dev one.
        res = rig.run("laptop", [*ssh, "command -v handy-colab"], env=laptop_env)
        assert res.stdout.strip() == str(nb_bin / "handy-colab"), res.stdout + res.stderr
        down = rig.run("rt", ["handy-colab", "down"], env=rt_env)
        assert down.returncode == 0, down.stderr
        left = set(rig.ns_pids("rt")) - cf.helper_pids
        assert left == set(), left
    finally:
        leftovers = rig.close()
    assert leftovers == [], f"processes left running: {leftovers}"
    print(f"test_newcomer: {time.monotonic() - t0:.1f}s")
