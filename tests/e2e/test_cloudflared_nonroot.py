"""The cloudflared route on a locked-down runtime: a normal user, no OpenSSH binaries, no
root. `up` picks the embedded server and a quick tunnel by itself; the laptop logs in."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.cfrig import CLOUDFLARED_BIN, PEERS_BY_NAME
from tests.e2e.cfhelpers import make_cf_runtime, need_peers
from tests.e2e.test_embedded_nonroot import need_nonroot
from tests.nonroot import NonRoot


def _uid(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def test_quick_tunnel_as_a_normal_user_without_openssh(tmp_path: Path) -> None:
    need_peers()
    need_nonroot()
    rt = make_cf_runtime(tmp_path, start=False)
    nr = NonRoot()
    down = None
    try:
        ca = nr.root / "ca.pem"
        shutil.copy(rt.cf.ca, ca)
        ca.chmod(0o644)
        (nr.bin / "cloudflared").symlink_to(CLOUDFLARED_BIN)
        nr.extra_env.update(PEERS_BY_NAME)
        nr.extra_env["SSL_CERT_FILE"] = str(ca)
        drive = nr.root / "drive"
        folder = drive / "colab_data"
        shutil.copytree(rt.folder, folder)
        args = rt.cf.extra_args()
        args[args.index("--cacert") + 1] = str(ca)
        (folder / "user_config.json").write_text(json.dumps({"cloudflared": {"extra_args": args}}))
        nr.own(drive)
        drive.chmod(0o700)
        res = rt.rig.run("rt", nr.argv("up", str(folder), "--timeout", "40"), timeout=90)
        assert res.returncode == 0, res.stderr + res.stdout
        assert "server: embedded (not root" in res.stdout
        assert "tunnel: cloudflared (the config names no relay" in res.stdout
        res = rt.connect_to(rt.ssh_config, rt.known_hosts, str(folder / "connections/colab.json"))
        assert res.returncode == 0, res.stderr
        res = rt.ssh("id -un; command -v ssh sshd || echo no-openssh")
        assert res.stdout.split() == [nr.pw.pw_name, "no-openssh"], res.stderr
        runtime_pids = set(rt.rig.ns_pids("rt")) - rt.cf.helper_pids
        assert runtime_pids and {_uid(p) for p in runtime_pids} <= {nr.pw.pw_uid, None}
    finally:
        down = rt.rig.run("rt", nr.argv("down"), timeout=60)
        leftovers = rt.rig.close()
        nr.close()
    assert down.returncode == 0, down.stderr
    assert leftovers == [], f"processes left running: {leftovers}"
