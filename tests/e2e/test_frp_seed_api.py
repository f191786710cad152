"""The seed's notebook API, from a real kernel behind the NAT: ``FRPTunnel(folder)`` against a
token-less frps (as the seed's frp users had), and ``PortmapTunnel(folder)`` and the older
``tunnel_starter.start_tunnel(folder)`` against an OpenSSH relay, in one rig; the laptop logs
into both with pinned host keys."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.e2e.cfhelpers import RouteRuntime, finish
from tests.e2e.conftest import REMOTE_PORT, write_seed_folder
from tests.e2e.test_frp import need_frp
from tests.frprig import FRPS_PORT, Frps
from tests.kernel import Kernel
from tests.rig import RELAY_IP, Rig, keygen


def test_seed_api_frp_and_portmap_from_a_kernel(tmp_path: Path) -> None:
    need_frp()
    rig = Rig(tmp_path / "rig")
    kernel = None
    try:
        Frps(rig, token="")  # the seed's FRPTunnel had no token
        keys = tmp_path / "keys"
        keys.mkdir()
        relay_key = keygen(keys / "relay", "rsa", pem=True)
        laptop_key = keygen(keys / "laptop")
        rig.start_relay([relay_key, laptop_key])
        frp_folder = tmp_path / "drive" / "frp_data"
        frp_folder.mkdir(parents=True)
        shutil.copy(f"{laptop_key}.pub", frp_folder / "public_key.pub")
        # The seed README's file name, and its tunnel_options read as frp's.
        (frp_folder / "mapping_config.json").write_text(
            json.dumps(
                {
                    "tunnel_options": {
                        "service_url": RELAY_IP,
                        "service_port": FRPS_PORT,
                        "local_port": 6044,
                    },
                    "python_packages": [],
                    "os_packages": [],
                }
            )
        )
        portmap_folder = tmp_path / "drive" / "colab_data"
        write_seed_folder(portmap_folder, relay_key, laptop_key)
        rt = RouteRuntime(
            rig, frp_folder, laptop_key, tmp_path / "laptop" / "config", tmp_path / "laptop" / "kh"
        )
        work = tmp_path / "content"
        work.mkdir()
        env = rt.env()
        env["HOME"] = str(tmp_path)
        kernel = Kernel(tmp_path / "kernel", rig.ns["rt"], env, work)
        cell = (
            "from handy_colab import FRPTunnel, PortmapTunnel, tunnel_starter\n"
            f"frp_block = FRPTunnel({str(frp_folder)!r}, name='frpseed').start_tunnel()\n"
            f"pm_block = PortmapTunnel({str(portmap_folder)!r}).start_tunnel()\n"
            f"again = tunnel_starter.start_tunnel({str(portmap_folder)!r})\n"
        )
        res = kernel.run(cell, timeout=180).check()
        assert "through frps 10.99.0.1:7000 (public mode)" in res.stdout
        assert "not verified" in kernel.value("frp_block")
        assert f"-p {REMOTE_PORT}" in kernel.value("pm_block")
        assert "already running" in kernel.value("again")
        for folder, name in ((frp_folder, "frpseed"), (portmap_folder, "colab")):
            res = rt.connect_to(
                rt.ssh_config, rt.known_hosts, str(folder / "connections" / f"{name}.json")
            )
            assert res.returncode == 0, res.stderr
            res = rig.run(
                "laptop",
                ["ssh", "-F", str(rt.ssh_config), "-o", "BatchMode=yes", name, "pwd"],
                env=rt.env(),
            )
            assert (res.returncode, res.stdout.strip()) == (0, str(work)), res.stderr
        assert "Port 6044" in rt.ssh_config.read_text()
        kernel.run(
            "import handy_colab\nhandy_colab.stop('frpseed'); handy_colab.stop('colab')"
        ).check()
    finally:
        if kernel is not None:
            kernel.shutdown()
        finish(RouteRuntime(rig, tmp_path, tmp_path, tmp_path, tmp_path))
