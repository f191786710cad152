"""What frp's p2p mode needs of the NAT rig: a laptop behind a NAT of its own, a STUN server
on the "internet", and routers that take hops off the TTL as real paths do.

    laptop2 192.168.88.2 -- 192.168.88.1 lnat (MASQUERADE) 10.99.0.4 --+-- bridge (relay...)

STUN is coturn in STUN-only mode on two addresses of the relay host (frp's NAT discovery asks
for the server's "other address"). frp's first punch packets carry a low TTL so that they die
before the peer's NAT on a real path; on this one-hop lab path they would arrive and spoil the
punch (tests/peers/frp/FINDINGS.md), so both NAT routers drop what arrives with a TTL a real
path would have used up.
"""

from __future__ import annotations

import shutil
import subprocess

from tests.rig import RELAY_IP, Rig, behind_nat, bridge_port, sh

LNAT_OUT_IP = "10.99.0.4"
LNAT_IN_IP = "192.168.88.1"
LAPTOP2_IP = "192.168.88.2"
STUN_IP2 = "10.99.0.5"
STUN_PORT = 3478


def prerequisites() -> list[str]:
    return [] if shutil.which("turnserver") else ["turnserver (apt-get install coturn)"]


def add_nat_laptop(rig: Rig) -> str:
    """A second laptop, behind its own NAT; returns its role name for rig.run()."""
    for role in ("lnat", "laptop2"):
        rig.ns[role] = f"{rig.prefix}-{role}"
        sh("ip", "netns", "add", rig.ns[role])
        sh("ip", "-n", rig.ns[role], "link", "set", "lo", "up")
    bridge_port(rig.ns["br"], "p9", rig.ns["lnat"], LNAT_OUT_IP)
    behind_nat(rig.ns["lnat"], LNAT_IN_IP, rig.ns["laptop2"], LAPTOP2_IP)
    for role in ("lnat", "router"):
        # Packets from outside with a TTL a real path would have used up never arrive (and,
        # dropped before connection tracking, cannot spoil the NAT's mapping).
        rig.run(
            role,
            [
                "iptables",
                "-t",
                "raw",
                "-A",
                "PREROUTING",
                "-i",
                "eth0",
                "-m",
                "ttl",
                "--ttl-lt",
                "10",
                "-j",
                "DROP",
            ],
            check=True,
        )
    return "laptop2"


def start_stun(rig: Rig) -> None:
    rig.run("relay", ["ip", "addr", "add", f"{STUN_IP2}/24", "dev", "eth0"], check=True)
    rig.popen(
        "relay",
        [
            "turnserver",
            "-n",
            "--stun-only",
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            f"--listening-ip={RELAY_IP}",
            f"--listening-ip={STUN_IP2}",
            f"--listening-port={STUN_PORT}",
            f"--alt-listening-port={STUN_PORT + 1}",
            "--log-file=stdout",
            "--simple-log",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def relay_bytes(rig: Rig) -> int:
    """Bytes in and out of the relay host's interface (frps and STUN live there)."""
    total = 0
    for what in ("rx_bytes", "tx_bytes"):
        res = rig.run("relay", ["cat", f"/sys/class/net/eth0/statistics/{what}"], check=True)
        total += int(res.stdout)
    return total
