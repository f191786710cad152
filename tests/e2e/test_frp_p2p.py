"""frp's p2p mode: the laptop behind a NAT of its own, the runtime behind another, a STUN
server in the rig. The data goes straight between the two NATs (the relay host's interface
sees next to none of it); with UDP dropped, the same ssh config falls back to stcp through
frps and the session still works; `status` says which path the last session took."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from tests.cfrig import wait_for
from tests.e2e.cfhelpers import finish
from tests.e2e.conftest import need
from tests.e2e.test_frp import make_frp_runtime, need_frp
from tests.p2prig import STUN_PORT, add_nat_laptop, prerequisites, relay_bytes, start_stun
from tests.rig import RELAY_IP

MIB = 1024 * 1024


def test_p2p_direct_then_fallback_through_frps(tmp_path: Path) -> None:
    need_frp()
    need(prerequisites(), "p2p prerequisites")
    rt = make_frp_runtime(tmp_path, "p2p", start=False, stun_server=f"{RELAY_IP}:{STUN_PORT}")
    try:
        laptop2 = add_nat_laptop(rt.rig)
        start_stun(rt.rig)
        res = rt.up()
        assert res.returncode == 0, res.stderr
        res = rt.connect_to(rt.ssh_config, rt.known_hosts, str(rt.folder))
        assert res.returncode == 0, res.stderr
        payload = tmp_path / "payload.bin"
        payload.write_bytes(os.urandom(8 * MIB))
        digest = hashlib.sha256(payload.read_bytes()).hexdigest()

        def moved(remote: str) -> tuple[int, float]:
            before = relay_bytes(rt.rig)
            t0 = time.monotonic()
            res = rt.rig.run(
                laptop2,
                [
                    "scp",
                    "-F",
                    str(rt.ssh_config),
                    "-o",
                    "BatchMode=yes",
                    "-q",
                    str(payload),
                    f"colab:{remote}",
                ],
                env=rt.env(),
                timeout=120,
            )
            assert res.returncode == 0, res.stderr
            assert hashlib.sha256(Path(remote).read_bytes()).hexdigest() == digest
            return relay_bytes(rt.rig) - before, time.monotonic() - t0

        direct, took = moved(str(tmp_path / "direct.bin"))
        # 8 MiB went up; the relay host saw control traffic only.
        assert direct < 1 * MIB, f"{direct} bytes crossed the relay host in p2p mode"

        def path() -> str:
            return str(rt.status()[1]["tunnel"]["details"]["p2p_path"])

        # status refreshes its details with every end-to-end check (10 s).
        assert wait_for(lambda: path().startswith("direct"), 25), path()
        print(f"p2p: 8 MiB in {took:.1f}s, {direct} bytes through the relay host")

        # UDP blocked on the laptop's NAT: no hole can be punched; stcp through frps carries it.
        rt.rig.run(
            laptop2 := "lnat", ["iptables", "-I", "FORWARD", "-p", "udp", "-j", "DROP"], check=True
        )
        laptop2 = "laptop2"
        relayed, took = moved(str(tmp_path / "relayed.bin"))
        assert relayed > 8 * MIB, f"only {relayed} bytes crossed the relay host"
        assert wait_for(lambda: path().startswith("through frps"), 25), path()
        print(f"fallback: 8 MiB in {took:.1f}s, {relayed} bytes through the relay host")
        # ssh hangs up on its ProxyCommand without waiting: the visitor ends on its own, soon.
        assert wait_for(lambda: rt.rig.ns_pids("laptop2") == [], 15), rt.rig.ns_pids("laptop2")
    finally:
        finish(rt)
