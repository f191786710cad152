"""The no-account recipe as the docs give it: a config folder holding ONLY the laptop's
public key (no user_config.json) comes up on a cloudflared quick tunnel (the real cloudflared,
the stand-in edge), `connect` works, `ssh colab true` exits 0, and the runtime's host key is
made and kept in the folder's host_keys/."""

from __future__ import annotations

from pathlib import Path

from tests.cfrig import CloudflareStandIn
from tests.e2e.cfhelpers import finish, need_peers, route_runtime
from tests.e2e.conftest import up_and_connect
from tests.rig import Rig


def test_a_folder_with_only_laptop_pub_comes_up_and_takes_ssh(tmp_path: Path) -> None:
    need_peers()
    rig = Rig(tmp_path / "rig")
    try:
        cf = CloudflareStandIn(rig)
        rt = route_runtime(rig, tmp_path, cf=cf)
        # No config at all: the stand-in edge is reached through the real cloudflared by
        # a PATH wrapper (defaults_env), as a user's cloudflared reaches Cloudflare unasked.
        env = cf.defaults_env()
        rt.env = lambda: env  # type: ignore[method-assign]
    except BaseException:
        rig.close()
        raise
    try:
        assert sorted(p.name for p in rt.folder.iterdir()) == ["laptop.pub"]
        up_and_connect(rt)
        res = rt.ssh("true", timeout=60)
        assert res.returncode == 0, res.stderr
        code, st = rt.status()
        assert code == 0 and st["tunnel"]["details"]["tunnel"] == "quick", st
        key = rt.folder / "host_keys" / "ssh_host_ed25519_key"
        assert key.is_file() and (key.stat().st_mode & 0o077) == 0
        pub = (rt.folder / "host_keys" / "ssh_host_ed25519_key.pub").read_text().split()[1]
        # The key the laptop pinned is the one kept in the folder.
        assert pub in rt.known_hosts.read_text()
        assert not (rt.folder / "user_config.json").exists()  # nothing written in its place
        assert rt.handy("rt", "down", "colab").returncode == 0
    finally:
        finish(rt)
