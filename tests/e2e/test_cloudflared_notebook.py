"""Colab with the laptop's public key in a Colab secret and no relay anywhere: a real kernel
behind the NAT runs ``handy_colab.up()``, which brings up a quick tunnel through the real
cloudflared and the stand-in edge, warns about Colab's terms, and shows the laptop's one
command; the laptop pastes it and logs in with the host key pinned.

The config secret here holds only what points cloudflared at the stand-in edge (a real
notebook needs no config at all: tests/unit/test_platforms.py shows that path)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cfrig import PEERS_BIN, PEERS_BY_NAME
from tests.e2e.cfhelpers import finish, make_cf_runtime, need_peers
from tests.e2e.test_notebook import _fake_colab
from tests.kernel import Kernel


def test_colab_public_key_secret_only_gives_a_quick_tunnel(tmp_path: Path) -> None:
    need_peers()
    rt = make_cf_runtime(tmp_path / "rig", start=False)
    kernel = None
    try:
        secrets_file = tmp_path / "secrets.json"
        secrets_file.write_text(
            json.dumps({"HANDY_COLAB_PUBLIC_KEYS": (rt.folder / "laptop.pub").read_text()})
        )
        secrets_file.chmod(0o600)
        home = tmp_path / "home"
        home.mkdir()
        workdir = tmp_path / "content"
        workdir.mkdir()
        env = rt.env()
        env.update(
            HOME=str(home),
            PATH=f"{PEERS_BIN}:/usr/local/bin:/usr/bin:/bin",
            **PEERS_BY_NAME,
            COLAB_RELEASE_TAG="release-colab-hc-test",
            PYTHONPATH=str(_fake_colab(tmp_path / "fake")),
            HC_FAKE_SECRETS=str(secrets_file),
        )
        kernel = Kernel(tmp_path / "kernel", rt.rig.ns["rt"], env, workdir)
        # The stand-in edge's settings: what a user never writes (the real edge needs none).
        extra = json.dumps({"cloudflared": {"extra_args": rt.cf.extra_args()}})
        env_cell = (
            "import json, os\n"
            f"s = json.load(open({str(secrets_file)!r}))\n"
            f"s['HANDY_COLAB_CONFIG'] = {extra!r}\n"
            f"json.dump(s, open({str(secrets_file)!r}, 'w'))\n"
        )
        kernel.run(env_cell).check()
        first = kernel.run("import handy_colab\nrt = handy_colab.up()").check()
        assert "Colab" in first.stderr, "the terms warning stays"
        assert kernel.value("rt.tunnel").startswith("cloudflared")
        text = kernel.value("rt.text()")
        assert "through Cloudflare (quick tunnel https://" in text
        line = kernel.value("rt.connect_command")
        assert line.startswith("handy-colab connect 'hc1:")
        html = kernel.run("rt").check().results[0]["text/html"]
        assert "hc1:" in html and "Cloudflare" in html
        pasted = line.split("'")[1]
        res = rt.connect_to(rt.ssh_config, rt.known_hosts, pasted)
        assert res.returncode == 0, res.stderr
        res = rt.ssh("pwd; echo $COLAB_RELEASE_TAG")
        assert res.returncode == 0, res.stderr
        assert res.stdout.split() == [str(workdir), "release-colab-hc-test"]
        assert kernel.value("rt.stop()") is True
    finally:
        if kernel is not None:
            kernel.shutdown()
        finish(rt)
