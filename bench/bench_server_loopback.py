#!/usr/bin/env python3
"""Benchmark: the embedded SSH server against a dedicated OpenSSH sshd, directly on loopback.

Run from the repository root (as root, or as a user who can run sshd on a high port):

    .venv/bin/python bench/bench_server_loopback.py [--size-mib 512] [--reps 5]
        [--cipher aes128-ctr] [--out FILE]

Both servers run side by side on 127.0.0.1, each on its own port, with the same host key,
the same authorized key and the same client (OpenSSH's ssh/scp from PATH, its own config
and pinned known_hosts). No relay and no tunnel: this isolates the server. Operations, on
one random file in /dev/shm (or the temp dir):

    cat_down   ssh HOST cat FILE >/dev/null        cat_up   ssh HOST 'cat >/dev/null' <FILE
    scp_down   scp HOST:FILE /dev/null (SFTP)      scp_up   scp FILE HOST:... (SFTP)
    scpO_down  scp -O (legacy protocol)            scpO_up  scp -O

Each sample is the file size over the wall time of the whole client command (handshake
included). Samples are interleaved per operation, with the order of the two servers flipped
every repetition so drift favours neither. Without --cipher each side negotiates what a
stock client does with it (the embedded server offers no chacha20: see asyncssh_server.py);
--cipher forces one cipher on both to compare like with like.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))

from loopback import loopback_runtime, write_client_config  # noqa: E402

from handy_colab.proc import WatchedProcess  # noqa: E402
from handy_colab.server.base import free_port  # noqa: E402
from handy_colab.server.embedded import EmbeddedServer  # noqa: E402
from handy_colab.state import RuntimeDir  # noqa: E402

OPS = ("cat_down", "cat_up", "scp_down", "scp_up", "scpO_down", "scpO_up")
MIB = 1 << 20


def negotiated_cipher(cfg: Path, host: str, extra: list[str]) -> str:
    res = subprocess.run(
        ["ssh", "-F", str(cfg), *extra, "-v", host, "true"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    for line in res.stderr.splitlines():
        if "kex: server->client cipher:" in line:
            return line.split("cipher:")[1].split()[0]
    return "?"


class Bench:
    def __init__(self, tmp: Path, size_mib: int) -> None:
        self.tmp = tmp
        self.size = size_mib * MIB
        os.environ["HANDY_COLAB_STATE_DIR"] = str(tmp / "state")
        cfg, self.host_key, self.client_key = loopback_runtime(tmp)
        self.work = tmp / "work"
        self.work.mkdir()
        self.emb = EmbeddedServer(cfg, RuntimeDir.for_name("bench").ensure(), self.host_key)
        self.emb.cwd = self.work
        self.emb.prepare()
        self.emb.start()
        self.sshd = self.start_sshd(cfg.login_user)
        shm = Path("/dev/shm")
        data_dir = Path(tempfile.mkdtemp(prefix="hc-bench-", dir=shm if shm.is_dir() else tmp))
        self.data_dir = data_dir
        self.payload = data_dir / "payload.bin"
        with self.payload.open("wb") as fh:
            for _ in range(size_mib):
                fh.write(os.urandom(MIB))
        self.ssh_config = write_client_config(
            tmp,
            {"embedded": self.emb.port, "openssh": self.sshd_port},
            cfg.login_user,
            self.client_key,
            self.host_key.public_line,
        )

    def start_sshd(self, user: str) -> WatchedProcess:
        d = self.tmp / "sshd"
        d.mkdir()
        hk = d / "host_key"
        hk.write_bytes(self.host_key.data)
        hk.chmod(0o600)
        shutil.copy(f"{self.client_key}.pub", d / "authorized_keys")
        self.sshd_port = free_port()
        sftp = next(
            (
                p
                for p in ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server")
                if os.access(p, os.X_OK)
            ),
            "internal-sftp",
        )
        (d / "sshd_config").write_text(
            "\n".join(
                [
                    f"Port {self.sshd_port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {hk}",
                    f"AuthorizedKeysFile {d / 'authorized_keys'}",
                    f"PidFile {d / 'sshd.pid'}",
                    "StrictModes no",
                    "UsePAM no",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    f"AllowUsers {user}",
                    f"Subsystem sftp {sftp}",
                    "",
                ]
            )
        )
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(exist_ok=True)
        proc = WatchedProcess(
            ["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config")], label="sshd"
        )
        status, _ = proc.wait_for(re.compile("Server listening"), re.compile("fatal"), 10)
        if status != "ready":
            raise SystemExit(f"sshd did not start: {proc.last_lines(5)}")
        return proc

    def argv(self, op: str, host: str, extra: list[str]) -> tuple[list[str], Path | None]:
        """The client command for ``op`` and the file to feed its stdin, if any."""
        cfg = ["-F", str(self.ssh_config), *extra]
        # Both servers run on this machine: an absolute path keeps uploads out of $HOME.
        remote = self.data_dir / f"up-{host}.bin"
        legacy = ["-O"] if op.startswith("scpO") else []
        if op == "cat_down":
            return ["ssh", *cfg, host, f"cat {self.payload}"], None
        if op == "cat_up":
            return ["ssh", *cfg, host, "cat >/dev/null"], self.payload
        if op.endswith("_down"):
            return ["scp", *cfg, *legacy, "-q", f"{host}:{self.payload}", "/dev/null"], None
        return ["scp", *cfg, *legacy, "-q", str(self.payload), f"{host}:{remote}"], None

    def sample(self, op: str, host: str, extra: list[str]) -> float:
        argv, feed = self.argv(op, host, extra)
        with feed.open("rb") if feed else open(os.devnull, "rb") as stdin:
            start = time.monotonic()
            res = subprocess.run(
                argv, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600
            )
            wall = time.monotonic() - start
        if res.returncode != 0:
            raise SystemExit(f"{op} on {host} failed ({res.returncode}): {res.stderr!r}")
        return self.size / MIB / wall

    def close(self) -> None:
        self.emb.stop()
        self.sshd.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--cipher", default="", help="force this cipher on both (ssh -c)")
    ap.add_argument("--ops", default=",".join(OPS))
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    for tool in ("ssh", "scp", "ssh-keygen", "/usr/sbin/sshd"):
        if shutil.which(tool) is None:
            raise SystemExit(f"needs {tool}")
    ops = [op for op in args.ops.split(",") if op]
    extra = ["-c", args.cipher] if args.cipher else []
    tmp = Path(tempfile.mkdtemp(prefix="hc-bench-loopback-"))
    bench = None
    try:
        bench = Bench(tmp, args.size_mib)
        ciphers = {
            h: negotiated_cipher(bench.ssh_config, h, extra) for h in ("openssh", "embedded")
        }
        print(f"ciphers: {ciphers}", flush=True)
        samples: dict[str, dict[str, list[float]]] = {
            h: {op: [] for op in ops} for h in ("openssh", "embedded")
        }
        for rep in range(args.reps):
            for op in ops:
                order = ("openssh", "embedded") if rep % 2 == 0 else ("embedded", "openssh")
                for host in order:
                    samples[host][op].append(bench.sample(op, host, extra))
            print(f"rep {rep + 1}/{args.reps} done", flush=True)
        result: dict[str, Any] = {
            "size_mib": args.size_mib,
            "reps": args.reps,
            "ciphers": ciphers,
            "nproc": os.cpu_count(),
            "ops": {},
        }
        print(f"\n{'op':10s} {'openssh MiB/s':>14s} {'embedded MiB/s':>15s} {'ratio':>6s}")
        for op in ops:
            o = statistics.median(samples["openssh"][op])
            e = statistics.median(samples["embedded"][op])
            result["ops"][op] = {
                "openssh_median": o,
                "embedded_median": e,
                "ratio": e / o,
                "openssh": samples["openssh"][op],
                "embedded": samples["embedded"][op],
            }
            print(f"{op:10s} {o:14.0f} {e:15.0f} {e / o:6.2f}")
        if args.out:
            args.out.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        if bench is not None:
            bench.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
