"""Cloudflare's side of the cloudflared route, as far as it can run here.

The runtime runs the REAL cloudflared (built from its Go module at the pinned version by
`scripts/build-test-peers.sh`); what stands in for Cloudflare is `cfedge` (tests/peers/cfedge,
built on cloudflared's own protocol packages): the quick-tunnel API, the edge cloudflared
registers with (HTTP/2), and the ``wss://HOSTNAME/`` front the laptop opens. It runs in the
relay namespace (the "internet"); TLS comes from a test CA that cloudflared gets with
``--cacert`` and every other client through ``SSL_CERT_FILE``; hostnames resolve through
``/etc/netns/NS/hosts`` in the laptop's and the runtime's namespaces.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.rig import RELAY_IP, Rig, stop_process

PEERS_BIN = Path(os.environ.get("HANDY_COLAB_TEST_BIN", "/opt/handy-colab-test/bin"))
CLOUDFLARED_BIN = PEERS_BIN / "cloudflared"
CFEDGE_BIN = PEERS_BIN / "cfedge"
# The test peers on PATH run because the tests name them (as a user would: binary "PATH").
PEERS_BY_NAME = {"HANDY_COLAB_CLOUDFLARED_BINARY": "PATH", "HANDY_COLAB_FRPC_BINARY": "PATH"}
API_PORT = 8080
EDGE_PORT = 7844
WSS_PORT = 443
NAMED_HOSTNAME = "colab.handy-colab-test.dev"
# SNI names cloudflared uses for the edge (HTTP/2 and QUIC).
EDGE_SNI = ("h2.cftunnel.com", "quic.cftunnel.com", "cftunnel.com")


# A DNS server that answers every query NXDOMAIN (127.0.0.1:53 of one namespace).
_NXDOMAIN_SERVER = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 53))
while True:
    q, peer = s.recvfrom(4096)
    if len(q) < 12:
        continue
    end = 12
    while end < len(q) and q[end]:
        end += 1 + q[end]
    question = q[12 : end + 5]
    flags = bytes([0x80 | (q[2] & 0x79), 0x83])
    s.sendto(q[:2] + flags + b"\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00" + question, peer)
"""


def prerequisites() -> list[str]:
    return [str(p) for p in (CLOUDFLARED_BIN, CFEDGE_BIN) if not os.access(p, os.X_OK)]


def make_ca_and_leaf(out: Path, names: list[str]) -> tuple[Path, Path, Path]:
    """A throwaway CA and one leaf certificate for ``names``; returns (ca, cert, key)."""
    out.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "handy-colab test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = (out / "ca.pem", out / "edge.pem", out / "edge.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    for p in paths:
        p.chmod(0o644)
    return paths


class CloudflareStandIn:
    """cfedge in the relay namespace, with DNS and the CA set up for the other namespaces."""

    def __init__(self, rig: Rig, pool_size: int = 24, api_mode: str = "ok") -> None:
        self.rig = rig
        self.dir = rig.work / "cloudflare"
        tag = rig.prefix.replace("x", "-")
        self.pool = [f"{tag}-t{i}.trycloudflare.com" for i in range(pool_size)]
        self.ca, cert, key = make_ca_and_leaf(
            self.dir, ["*.trycloudflare.com", NAMED_HOSTNAME, *EDGE_SNI]
        )
        self.netns_dirs: list[Path] = []
        self.helper_pids: set[int] = set()  # the namespaces' DNS stubs (not the runtime's)
        hosts = Path("/etc/hosts").read_text() + "".join(
            f"{RELAY_IP} {h}\n" for h in [*self.pool, NAMED_HOSTNAME, *EDGE_SNI]
        )
        for role in ("laptop", "rt", "router"):
            d = Path("/etc/netns") / rig.ns[role]
            d.mkdir(parents=True, exist_ok=True)
            (d / "hosts").write_text(hosts)
            # No DNS server is reachable from the namespaces: a local one that answers every
            # query "no such name" at once (the host's would time out; a closed port is
            # refused only as fast as the kernel's ICMP rate limit allows) keeps cloudflared's
            # look-ups of its feature flags and edge addresses as quick as where DNS works.
            (d / "resolv.conf").write_text("nameserver 127.0.0.1\n")
            self.netns_dirs.append(d)
            self.helper_pids.add(
                rig.popen(
                    role, [sys.executable, "-c", _NXDOMAIN_SERVER], stderr=subprocess.DEVNULL
                ).pid
            )
        # cloudflared also tries DNS over TLS to 1.1.1.1: the router answers "no route" at
        # once, every time, as a network without that route would (the kernel's ICMP rate
        # limit would otherwise let every second try wait for its 5 s timeout).
        rig.run("router", ["sysctl", "-qw", "net.ipv4.icmp_ratelimit=0"], check=True)
        self.log = self.dir / "cfedge.log"
        with open(self.log, "ab") as log:
            self.proc = rig.popen(
                "relay",
                [
                    str(CFEDGE_BIN),
                    "--api-listen",
                    f"{RELAY_IP}:{API_PORT}",
                    "--edge-listen",
                    f"{RELAY_IP}:{EDGE_PORT}",
                    "--wss-listen",
                    f"{RELAY_IP}:{WSS_PORT}",
                    "--cert",
                    str(cert),
                    "--key",
                    str(key),
                    "--hostnames",
                    ",".join(self.pool),
                    "--named-hostname",
                    NAMED_HOSTNAME,
                    "--api-mode",
                    api_mode,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        for port in (API_PORT, EDGE_PORT, WSS_PORT):
            rig.wait_tcp("relay", RELAY_IP, port)
        rig.cleanups.append(self.close)

    # -- what the runtime's config and the clients need ---------------------------------------
    def extra_args(
        self, edge_ports: tuple[int, ...] = (EDGE_PORT,), api: str | None = None
    ) -> list[str]:
        edges = [arg for port in edge_ports for arg in ("--edge", f"{RELAY_IP}:{port}")]
        return [
            "--quick-service",
            api or f"http://{RELAY_IP}:{API_PORT}",
            *edges,
            "--cacert",
            str(self.ca),
        ]

    def env(self, **extra: str) -> dict[str, str]:
        """The rig's environment + the test CA as the system's, and the peers on PATH."""
        env = self.rig.env()
        env["SSL_CERT_FILE"] = str(self.ca)
        env["PATH"] = f"{PEERS_BIN}:{env.get('PATH', '')}"
        env.update(PEERS_BY_NAME)
        env.update(extra)
        return env

    def defaults_env(self, **extra: str) -> dict[str, str]:
        """env() for a config that says nothing about cloudflared (no user_config.json at all):
        the real cloudflared, first on PATH, through a wrapper that adds extra_args()'s flags,
        which a user's cloudflared does not need (it finds Cloudflare by itself)."""
        env = self.env(**extra)
        env["PATH"] = f"{self.defaults_bin()}:{env['PATH']}"
        return env

    def defaults_bin(self) -> Path:
        """The folder of defaults_env()'s cloudflared wrapper."""
        wrap = self.dir / "defaults-bin"
        wrap.mkdir(exist_ok=True)
        flags = " ".join(f"'{a}'" for a in self.extra_args())
        script = wrap / "cloudflared"
        script.write_text(
            "#!/bin/sh\n"
            f'if [ "$1" = tunnel ]; then shift; exec {CLOUDFLARED_BIN} tunnel "$@" {flags}; fi\n'
            f'exec {CLOUDFLARED_BIN} "$@"\n'
        )
        script.chmod(0o755)
        return wrap

    # -- control --------------------------------------------------------------------------------
    def _control(self, method: str, path: str) -> Any:
        code = (
            "import sys,urllib.request as u;"
            f"r=u.urlopen(u.Request('http://{RELAY_IP}:{API_PORT}{path}',method='{method}'),"
            "timeout=5);sys.stdout.write(r.read().decode())"
        )
        res = self.rig.run("relay", ["python3", "-c", code], check=True)
        return json.loads(res.stdout) if res.stdout.strip().startswith(("{", "[")) else res.stdout

    def api_mode(self, mode: str) -> None:
        self._control("POST", f"/_control/api-mode?mode={mode}")

    def drop(self, hostname: str) -> None:
        self._control("POST", f"/_control/drop?hostname={hostname}")

    def state(self) -> Any:
        return self._control("GET", "/_control/state")

    def close(self) -> None:
        stop_process(self.proc)
        for d in self.netns_dirs:
            shutil.rmtree(d, ignore_errors=True)


def wait_for(pred: Any, timeout: float, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            got = pred()
            if got:
                return got
        time.sleep(interval)
    return pred()
