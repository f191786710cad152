#!/usr/bin/env python3
"""Benchmark: the frp route (public, private, and p2p when the rig can punch) against the
OpenSSH relay, side by side in one NAT rig.

Run from the repository root, as root, after `bash scripts/build-test-peers.sh`:

    .venv/bin/python bench/bench_frp.py [--size-mib 256] [--reps 3] [--runs 3]

One rig: a stock OpenSSH relay and a real frps on the relay host; one runtime namespace
running three runtimes at once (OpenSSH sshd each): `relay` (`ssh -R`, public mode, the seed's
format), `frp-pub` (tcp proxy) and `frp-priv` (stcp, the laptop's frpc visitor). For each:
time to ready (`up` -> `connect` -> first `ssh NAME true`, `down` between runs), throughput of
one 256 MiB file (`ssh NAME cat` both ways, scp both ways; interleaved, order rotated), the
round trip of a small echo through an open session (median of 200), and the bytes that
crossed the relay host's interface per MiB moved.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import (
    MIB,
    REPO,
    OneRigBench,
    fmt,
    log,
    rotated,
    run_and_report,
    summary,
    timed_run,
    write_payload,
)

from tests.e2e.conftest import Runtime, finish, make_runtime
from tests.frprig import Frps, prerequisites
from tests.p2prig import add_nat_laptop, start_stun
from tests.rig import RELAY_IP

ROUTES = ("relay", "frp-pub", "frp-priv", "frp-p2p")
# The p2p route is measured from a laptop behind a NAT of its own (the others' laptop has none).
ROLE = {"frp-p2p": "laptop2"}
OPS = ("cat_down", "cat_up", "scp_down", "scp_up")
ECHO = """
import subprocess, sys, time
p = subprocess.Popen(sys.argv[1:], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
p.stdin.write(b"x\\n"); p.stdout.readline()  # the session is up
rtts = []
for _ in range(200):
    t = time.perf_counter(); p.stdin.write(b"x\\n"); p.stdout.readline()
    rtts.append(time.perf_counter() - t)
p.stdin.close(); p.wait()
rtts.sort(); print(rtts[len(rtts) // 2])
"""


class FrpBench(OneRigBench):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args, "frp", finish)
        self.rt: Runtime | None = None
        self.result.update(
            params=vars(args) | {"out": str(args.out)},
            time_to_ready={},
            throughput={},
            echo_rtt_ms={},
            relay_bytes_per_mib={},
        )

    # -- set-up ---------------------------------------------------------------------------------
    def folders(self, rt: Runtime) -> dict[str, Path]:
        frps = Frps(rt.rig)
        out = {"relay": rt.folder}
        add_nat_laptop(rt.rig)
        start_stun(rt.rig)
        for name, mode in (("frp-pub", "public"), ("frp-priv", "private"), ("frp-p2p", "p2p")):
            folder = self.work / name
            folder.mkdir()
            shutil.copy(f"{rt.laptop_key}.pub", folder / "laptop.pub")
            section = frps.folder_config(
                folder, mode, proxy_name=name, remote_port=6055, stun_server=f"{RELAY_IP}:3478"
            )
            if mode != "public":
                section.pop("remote_port")
            cfg = {"name": name, "server": {"kind": "openssh"}, "frp": section}
            (folder / "user_config.json").write_text(json.dumps(cfg))
            out[name] = folder
        return out

    def env(self, rt: Runtime) -> dict[str, str]:
        env = rt.rig.env()
        env["PATH"] = f"/opt/handy-colab-test/bin:{env['PATH']}"
        return env

    def handy(self, rt: Runtime, role: str, *args: str) -> subprocess.CompletedProcess[str]:
        exe = shutil.which("handy-colab") or "handy-colab"
        return rt.rig.run(role, [exe, *args], env=self.env(rt), timeout=180)

    def ssh(self, rt: Runtime, name: str, *cmd: str, **kw: Any) -> list[str]:
        return ["ssh", "-F", str(rt.ssh_config), "-o", "BatchMode=yes", name, *cmd]

    # -- measurements ---------------------------------------------------------------------------
    def time_to_ready(self, rt: Runtime, name: str, folder: Path) -> None:
        samples = []
        for _ in range(self.args.runs):
            self.handy(rt, "rt", "down", name)
            t0 = time.perf_counter()
            res = self.handy(rt, "rt", "up", str(folder), "--name", name, "--no-install")
            t_up = time.perf_counter() - t0
            if res.returncode != 0:
                raise RuntimeError(f"{name}: up failed: {res.stderr}")
            t1 = time.perf_counter()
            res = self.handy(
                rt,
                "laptop",
                "connect",
                str(folder),
                "--name",
                name,
                "--identity",
                str(rt.laptop_key),
                "--ssh-config",
                str(rt.ssh_config),
                "--known-hosts",
                str(rt.known_hosts),
            )
            t_conn = time.perf_counter() - t1
            assert res.returncode == 0, res.stderr
            t2 = time.perf_counter()
            res = rt.rig.run(ROLE.get(name, "laptop"), self.ssh(rt, name, "true"), env=self.env(rt))
            t_ssh = time.perf_counter() - t2
            assert res.returncode == 0, res.stderr
            samples.append({"up": t_up, "connect": t_conn, "first_ssh": t_ssh})
            total = t_up + t_conn + t_ssh
            log(f"{name}: ready in {total:.2f}s (up {t_up:.2f}, connect {t_conn:.2f})")
        self.result["time_to_ready"][name] = {
            "total": summary([s["up"] + s["connect"] + s["first_ssh"] for s in samples]),
            **{k: summary([s[k] for s in samples]) for k in ("up", "connect", "first_ssh")},
        }

    def relay_rx_tx(self, rt: Runtime) -> int:
        out = rt.rig.run("relay", ["cat", "/sys/class/net/eth0/statistics/rx_bytes"]).stdout
        out2 = rt.rig.run("relay", ["cat", "/sys/class/net/eth0/statistics/tx_bytes"]).stdout
        return int(out) + int(out2)

    def transfer(self, rt: Runtime, name: str, op: str) -> float | None:
        scp = ["scp", "-F", str(rt.ssh_config), "-o", "BatchMode=yes", "-q"]
        copy = self.data / f"copy-{name}"
        argv = {
            "cat_down": self.ssh(rt, name, f"cat {self.src}"),
            "cat_up": self.ssh(rt, name, "cat > /dev/null"),
            "scp_down": [*scp, f"{name}:{self.src}", str(copy)],
            "scp_up": [*scp, str(self.src), f"{name}:{copy}.up"],
        }[op]
        with open(self.src if op == "cat_up" else os.devnull, "rb") as stdin:
            ns = rt.rig.ns[ROLE.get(name, "laptop")]
            secs, res = timed_run(ns, argv, stdin=stdin, env=self.env(rt), timeout=600)
        for p in (copy, Path(f"{copy}.up")):
            p.unlink(missing_ok=True)
        if res.returncode != 0:
            log(f"  {name} {op} FAILED: {res.stderr.decode(errors='replace')[-200:]}")
            return None
        return self.args.size_mib / secs

    def throughput(self, rt: Runtime) -> None:
        samples: dict[str, dict[str, list[float]]] = {op: {r: [] for r in ROUTES} for op in OPS}
        crossed: dict[str, list[float]] = {r: [] for r in ROUTES}
        for rep in range(self.args.reps):
            order = rotated(ROUTES, rep)
            for op in OPS:
                for name in order:
                    before = self.relay_rx_tx(rt)
                    v = self.transfer(rt, name, op)
                    if v is not None:
                        samples[op][name].append(v)
                        crossed[name].append(
                            (self.relay_rx_tx(rt) - before) / MIB / self.args.size_mib
                        )
                        log(f"  rep {rep + 1} {op:8s} {name:8s} {v:7.1f} MiB/s")
        for op in OPS:
            self.result["throughput"][op] = {r: summary(samples[op][r]) for r in ROUTES}
        self.result["relay_bytes_per_mib"] = {
            r: statistics.median(v) for r, v in crossed.items() if v
        }

    def echo(self, rt: Runtime) -> None:
        for name in ROUTES:
            res = rt.rig.run(
                ROLE.get(name, "laptop"),
                ["python3", "-c", ECHO, *self.ssh(rt, name, "cat")],
                env=self.env(rt),
                timeout=120,
            )
            self.result["echo_rtt_ms"][name] = float(res.stdout.strip()) * 1000
            log(f"{name}: echo rtt {self.result['echo_rtt_ms'][name]:.2f} ms")

    def body(self) -> None:
        if prerequisites() or os.geteuid() != 0:
            raise RuntimeError("needs root and the frp peers (bash scripts/build-test-peers.sh)")
        write_payload(self.src, self.args.size_mib)
        self.rt = make_runtime(self.work / "rig", "public", start=False)
        folders = self.folders(self.rt)
        for name, folder in folders.items():
            self.time_to_ready(self.rt, name, folder)
        self.throughput(self.rt)
        self.echo(self.rt)


def render(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        f"## frp vs the OpenSSH relay ({m['date']}, nproc {m['nproc_cmd']}, "
        f"{r['params']['size_mib']} MiB, {r['params']['reps']} reps)",
        "",
        "| route | ready, s (median) | up | connect | first ssh | echo RTT, ms "
        "| relay bytes per MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ROUTES:
        t = r["time_to_ready"].get(name) or {}
        cells = [
            fmt((t.get(k) or {}).get("median"), ".2f")
            for k in ("total", "up", "connect", "first_ssh")
        ]
        lines.append(
            f"| {name} | {' | '.join(cells)} | {fmt(r['echo_rtt_ms'].get(name), '.2f')} | "
            f"{fmt(r['relay_bytes_per_mib'].get(name), '.2f')} |"
        )
    lines += ["", "| op | " + " | ".join(f"{n} MiB/s" for n in ROUTES) + " |"]
    lines.append("|---" * (len(ROUTES) + 1) + "|")
    for op in OPS:
        t = r["throughput"].get(op) or {}
        lines.append(
            f"| {op} | " + " | ".join(fmt((t.get(n) or {}).get("median")) for n in ROUTES) + " |"
        )
    if r.get("leftovers"):
        lines.append(f"\nLEFTOVERS: {r['leftovers']}")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-mib", type=int, default=256)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "frp.json")
    args = p.parse_args()
    bench = FrpBench(args)
    return run_and_report(bench, bench.body, args.out, render, time.perf_counter())


if __name__ == "__main__":
    sys.exit(main())
