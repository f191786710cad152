"""`handy-colab init` closes the loop: the folder it writes on the laptop (default route, a key
it makes itself) is what `up` runs from on the runtime behind the NAT, through the real
cloudflared and the stand-in edge, and the `connect` line it printed gets `ssh` in."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

from tests.cfrig import CloudflareStandIn
from tests.e2e.cfhelpers import RouteRuntime, need_peers
from tests.rig import Rig


def test_init_folder_runs_up_and_its_connect_line_logs_in(tmp_path: Path) -> None:
    need_peers()
    rig = Rig(tmp_path / "rig")
    try:
        cf = CloudflareStandIn(rig)
        home = tmp_path / "laptop-home"  # the laptop user's HOME: no ~/.ssh at all yet
        home.mkdir()
        laptop_env = {**cf.env(), "HOME": str(home)}
        exe = shutil.which("handy-colab") or "handy-colab"
        folder = tmp_path / "laptop" / "colab_data"
        # The stand-in edge's addresses and CA reach cloudflared the way any user's extra
        # cloudflared flags do: through the config that init writes.
        edge = [f"--cloudflared-arg={arg}" for arg in cf.extra_args()]
        res = rig.run("laptop", [exe, "init", str(folder), "--yes", *edge], env=laptop_env)
        assert res.returncode == 0, res.stderr
        steps = res.stdout
        key = home / ".ssh" / "id_ed25519"
        assert key.is_file() and "made now" in steps
        assert json.loads((folder / "user_config.json").read_text())["route"] == "cloudflared"

        # "Upload the folder to My Drive": the runtime gets a copy of it, nothing else.
        drive = tmp_path / "drive" / "colab_data"
        shutil.copytree(folder, drive)
        assert f"handy-colab up /content/drive/MyDrive/{folder.name}" in steps
        rt = RouteRuntime(rig, drive, key, tmp_path / "unused-config", tmp_path / "unused", cf=cf)
        up = rt.up()
        assert up.returncode == 0, up.stderr + up.stdout
        assert "tunnel: cloudflared (the config names no relay: a quick tunnel" in up.stdout
        pasted = next(ln for ln in up.stdout.splitlines() if "handy-colab connect 'hc1:" in ln)
        hc1 = pasted.split("'")[1]

        # The laptop runs the connect line init printed, with the line `up` printed pasted in.
        printed = next(ln for ln in steps.splitlines() if "handy-colab connect 'hc1:...'" in ln)
        argv = shlex.split(printed.split("(the line")[0])
        assert argv[:3] == ["handy-colab", "connect", "hc1:..."]
        assert argv[3:] == ["--identity", str(key)]
        res = rig.run("laptop", [exe, "connect", hc1, *argv[3:]], env=laptop_env)
        assert res.returncode == 0, res.stderr + res.stdout
        # connect wrote its default files under this HOME (OpenSSH itself reads the passwd
        # entry's home, so ssh is pointed at the file connect owns).
        own = home / ".ssh" / "config.d" / "handy-colab"
        assert own.is_file()
        ssh = ["ssh", "-F", str(own), "-o", "BatchMode=yes", "colab"]
        res = rig.run("laptop", [*ssh, "true"], env=laptop_env)
        assert res.returncode == 0, res.stderr
        res = rig.run("laptop", [*ssh, "echo from-init; exit 7"], env=laptop_env)
        assert (res.returncode, res.stdout) == (7, "from-init\n"), res.stderr
        down = rt.handy("rt", "down")
        assert down.returncode == 0, down.stderr
        rt.assert_nothing_runs()
    finally:
        leftovers = rig.close()
    assert leftovers == [], f"processes left running: {leftovers}"
