#!/usr/bin/env python3
"""Benchmark: the cloudflared route, through the real cloudflared and the stand-in edge.

Run from the repository root, as root, after `bash scripts/build-test-peers.sh`:

    .venv/bin/python bench/bench_cloudflared.py [--size-mib 256] [--reps 3] [--runs 5]

In one NAT rig (tests/rig.py + tests/cfrig.py) one runtime runs on a quick tunnel; from the
laptop namespace the same 256 MiB file goes down (`ssh colab cat FILE`) and up
(`ssh colab 'cat > /dev/null' < FILE`) over three routes, interleaved per op, the order
rotated every repetition:

    ws-proxy   ssh with handy-colab's WebSocket ProxyCommand (Python, no cloudflared)
    cf-access  ssh with `cloudflared access ssh` as the ProxyCommand (Go; the same edge path)
    direct     ssh to the same server from the runtime itself (no tunnel: the ceiling)

It reports MiB/s (each command's handshake included), the ratio ws-proxy / cf-access, and
the CPU seconds per MiB of each ProxyCommand process (measured by bench/cpu_wrap.py). It also
measures time to ready: `up` (launch -> cloudflared's /ready -> the name resolves -> the SSH
banner back through the edge), the tunnel's own launch -> ready, and the first `ssh colab
true` after it (HTTP/2: the stand-in edge speaks no QUIC).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from common import (
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

from tests.cfrig import PEERS_BIN, prerequisites
from tests.e2e.cfhelpers import CfRuntime, finish, make_cf_runtime

OPS = ("cat_down", "cat_up")
ROUTES = ("ws-proxy", "cf-access", "direct")


class CloudflaredBench(OneRigBench):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args, "cf", finish)
        self.rt: CfRuntime | None = None
        self.result.update(
            params={
                "size_mib": args.size_mib,
                "reps": args.reps,
                "ready_runs": args.runs,
                "protocol": "http2",
                "throughput_definition": "size / wall time of the whole ssh command",
            },
            time_to_ready={},
            throughput={},
            cpu_s_per_mib={},
        )

    # -- time to ready ------------------------------------------------------------------------
    def time_to_ready(self, rt: CfRuntime) -> None:
        samples = []
        for i in range(self.args.runs):
            rt.handy("rt", "down")
            t0 = time.perf_counter()
            res = rt.up()
            t_up = time.perf_counter() - t0
            if res.returncode != 0:
                raise RuntimeError(f"up failed: {res.stderr}")
            if i == 0:
                assert rt.connect().returncode == 0
            t1 = time.perf_counter()
            res = rt.ssh("true")
            t_ssh = time.perf_counter() - t1
            if res.returncode != 0:
                raise RuntimeError(f"first ssh failed: {res.stderr}")
            _, st = rt.status()
            tunnel_ready = st["tunnel"]["details"]["ready_seconds"]
            samples.append({"up": t_up, "tunnel_ready": tunnel_ready, "first_ssh": t_ssh})
            log(f"ready run {i + 1}: up {t_up:.2f}s (tunnel {tunnel_ready:.2f}s), ssh {t_ssh:.2f}s")
        self.result["time_to_ready"] = {
            k: summary([s[k] for s in samples]) for k in ("up", "tunnel_ready", "first_ssh")
        }
        self.result["time_to_ready"]["samples"] = samples

    # -- throughput ---------------------------------------------------------------------------
    def configs(self, rt: CfRuntime) -> dict[str, Path]:
        host = rt.descriptor_data()["hostname"]
        wrap = f"{sys.executable} {REPO / 'bench' / 'cpu_wrap.py'}"
        proxies = {
            "ws-proxy": f"{sys.executable} -m handy_colab.tunnels.websocket {host}",
            "cf-access": f"{PEERS_BIN / 'cloudflared'} access ssh --hostname {host}",
        }
        out = {}
        for name, cmd in proxies.items():
            cfg = self.work / f"{name}.config"
            cfg.write_text(
                "\n".join(
                    [
                        "Host colab",
                        "    User root",
                        "    HostKeyAlias colab",
                        f"    UserKnownHostsFile {rt.known_hosts}",
                        "    StrictHostKeyChecking yes",
                        f"    IdentityFile {rt.laptop_key}",
                        "    IdentitiesOnly yes",
                        "    BatchMode yes",
                        f"    ProxyCommand {wrap} {self.work / (name + '.cpu')} -- {cmd}",
                        "",
                    ]
                )
            )
            out[name] = cfg
        return out

    def run(self, rt: CfRuntime, route: str, op: str, cfgs: dict[str, Path]) -> float | None:
        if route == "direct":
            _, st = rt.status()
            port = st["server"]["port"]
            role = "rt"
            ssh = ["ssh", "-p", str(port), "-i", str(rt.laptop_key), "-o", "BatchMode=yes"]
            ssh += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
            ssh += ["-o", "LogLevel=ERROR", "root@127.0.0.1"]
        else:
            role = "laptop"
            ssh = ["ssh", "-F", str(cfgs[route]), "colab"]
        remote = f"cat {self.src}" if op == "cat_down" else "cat > /dev/null"
        with open(self.src if op == "cat_up" else os.devnull, "rb") as stdin:
            secs, res = timed_run(
                rt.rig.ns[role], [*ssh, remote], stdin=stdin, env=rt.env(), timeout=600
            )
        if res.returncode != 0:
            log(f"  {route} {op} FAILED: {res.stderr.decode(errors='replace')[-300:]}")
            return None
        return self.args.size_mib / secs

    def throughput(self, rt: CfRuntime) -> None:
        cfgs = self.configs(rt)
        # Host key checks pass for both ProxyCommands before anything is timed.
        for name, cfg in cfgs.items():
            res = rt.rig.run("laptop", ["ssh", "-F", str(cfg), "colab", "true"], env=rt.env())
            if res.returncode != 0:
                raise RuntimeError(f"{name}: ssh true failed: {res.stderr}")
        for name in cfgs:
            (self.work / f"{name}.cpu").unlink(missing_ok=True)
        samples: dict[str, dict[str, list[float]]] = {op: {r: [] for r in ROUTES} for op in OPS}
        for rep in range(self.args.reps):
            order = rotated(ROUTES, rep)
            for op in OPS:
                for route in order:
                    v = self.run(rt, route, op, cfgs)
                    if v is not None:
                        samples[op][route].append(v)
                        log(f"  rep {rep + 1} {op:8s} {route:9s} {v:7.1f} MiB/s")
        table: dict[str, Any] = {}
        for op in OPS:
            table[op] = {r: summary(samples[op][r]) for r in ROUTES}
            ws, cf = table[op]["ws-proxy"]["median"], table[op]["cf-access"]["median"]
            table[op]["ratio_ws_over_cf_access"] = ws / cf if ws and cf else None
        self.result["throughput"] = table
        moved = 2 * self.args.size_mib * self.args.reps  # MiB through each proxy in all
        for name in cfgs:
            cpu = [float(x) for x in (self.work / f"{name}.cpu").read_text().split()]
            self.result["cpu_s_per_mib"][name] = sum(cpu) / moved

    def body(self) -> None:
        missing = prerequisites()
        if missing or os.geteuid() != 0:
            raise RuntimeError(f"needs root and {missing} (bash scripts/build-test-peers.sh)")
        log(f"payload {self.args.size_mib} MiB")
        write_payload(self.src, self.args.size_mib)
        self.rt = make_cf_runtime(
            self.work / "rt",
            server=self.args.server,
            start=False,
            cloudflared={"protocol": "http2"},
        )
        self.time_to_ready(self.rt)
        self.throughput(self.rt)


def render(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        f"## cloudflared route ({m['date']}, nproc {m['nproc_cmd']}, {r['params']['size_mib']} "
        f"MiB, {r['params']['reps']} reps)",
        "",
        "| time to ready, s | median | min | max |",
        "|---|---|---|---|",
    ]
    for k, label in (
        ("up", "`up` (until the banner is back through the edge)"),
        ("tunnel_ready", "cloudflared launch -> /ready + name resolves"),
        ("first_ssh", "first `ssh colab true` after up"),
    ):
        s = r["time_to_ready"].get(k) or {}
        lines.append(
            f"| {label} | {fmt(s.get('median'), '.2f')} | {fmt(s.get('min'), '.2f')} | "
            f"{fmt(s.get('max'), '.2f')} |"
        )
    lines += [
        "",
        "| op | ws-proxy MiB/s | cf-access MiB/s | direct MiB/s | ws-proxy / cf-access |",
        "|---|---|---|---|---|",
    ]
    for op in OPS:
        t = r["throughput"].get(op) or {}
        cells = [fmt((t.get(x) or {}).get("median")) for x in ROUTES]
        lines.append(
            f"| {op} | {' | '.join(cells)} | {fmt(t.get('ratio_ws_over_cf_access'), '.2f')} |"
        )
    cpu = r["cpu_s_per_mib"]
    lines += [
        "",
        "CPU seconds per MiB in the ProxyCommand: "
        + ", ".join(f"{k} {v * 1000:.2f} ms" for k, v in cpu.items()),
        "",
    ]
    if r.get("leftovers"):
        lines.append(f"LEFTOVERS: {r['leftovers']}")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-mib", type=int, default=256)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--server", default="openssh", choices=("openssh", "embedded"))
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "cloudflared.json")
    args = p.parse_args()
    bench = CloudflaredBench(args)
    return run_and_report(bench, bench.body, args.out, render, time.perf_counter())


if __name__ == "__main__":
    sys.exit(main())
