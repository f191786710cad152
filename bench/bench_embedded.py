#!/usr/bin/env python3
"""Benchmark: the embedded (asyncssh) server and tunnel client against OpenSSH, side by side.

Run from the repository root, as root (it builds the NAT rig of tests/rig.py):

    python3 bench/bench_embedded.py [--size-mib 256] [--runs 5] [--reps 3] [--modes public]

In one rig, four runtimes run at the same time from copies of one config folder, each with
its own name and relay port, differing only in their parts:

    openssh   OpenSSH sshd      + OpenSSH `ssh -R`     (the reference)
    emb-srv   embedded server   + OpenSSH `ssh -R`
    emb-tun   OpenSSH sshd      + embedded tunnel client (the tunnel client alone, against
              the reference: the one difference is the client that carries the bytes)
    emb-all   embedded server   + embedded tunnel client (no OpenSSH on the runtime)

For each it measures time to ready (`up` -> `connect` -> first `ssh NAME true` from the
laptop, `down` between runs) and the throughput of one random file from the laptop through
the relay: `ssh NAME cat` down and up, `scp` down and up (SFTP mode), interleaved per op with
the order rotated every repetition. It reports each as a ratio over the reference, the CPU
time the tunnel process (``ssh -R`` or the embedded client) spent per GiB carried, and the
memory (RSS) of the supervisor alone and of its whole tree (supervisor + server + tunnel,
without session children), read from /proc when idle after the transfers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench_core import OPS, Bench, Route
from common import REPO, first_ssh, fmt, log, rotated, run_main, summary

from handy_colab.proc import descendants
from tests.e2e.conftest import REMOTE_PORT, Runtime, make_runtime
from tests.rig import prerequisites

# name -> (server, tunnel)
CONFIGS: dict[str, tuple[str, str]] = {
    "openssh": ("openssh", "openssh"),
    "emb-srv": ("embedded", "openssh"),
    "emb-tun": ("openssh", "embedded"),
    "emb-all": ("embedded", "embedded"),
}
REFERENCE = "openssh"


def tree_rss_kib(root_pid: int) -> tuple[int, int]:
    """(RSS of root_pid, RSS of root_pid and all its descendants), in KiB."""

    def rss(pid: int) -> int:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    own = rss(root_pid)
    return own, own + sum(rss(pid) for pid in descendants(root_pid))


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of ``pid`` so far (None once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class EmbeddedBench(Bench):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.result.update(
            configs={k: {"server": s, "tunnel": t} for k, (s, t) in CONFIGS.items()},
            memory={},
        )

    def folder_for(self, rt: Runtime, name: str, index: int) -> Path:
        folder = rt.folder.parent / f"folder-{name}"
        if not folder.exists():
            shutil.copytree(rt.folder, folder)
            cfg = json.loads((folder / "user_config.json").read_text())
            cfg["name"] = name
            if rt.mode == "public":
                cfg["tunnel_options"]["service_port"] = REMOTE_PORT + 10 + index
            else:
                cfg["relay"]["socket_path"] = f"{rt.rig.relay_socket}.{name}"
            (folder / "user_config.json").write_text(json.dumps(cfg, indent=2))
        return folder

    def up(self, rt: Runtime, name: str, folder: Path) -> None:
        server, tunnel = CONFIGS[name]
        res = rt.rig.handy(
            "rt", "up", str(folder), "--server", server, "--relay-client", tunnel, "--timeout", "40"
        )
        if res.returncode != 0:
            raise RuntimeError(f"{name} up failed: {res.stderr or res.stdout}")
        res = rt.connect(folder / "connections" / f"{name}.json")
        if res.returncode != 0:
            raise RuntimeError(f"{name} connect failed: {res.stderr or res.stdout}")

    def ready_times(self, rt: Runtime, name: str, folder: Path) -> dict[str, Any]:
        samples = []
        for i in range(self.args.runs):
            rt.rig.handy("rt", "down", name, timeout=60)
            t0 = time.perf_counter()
            self.up(rt, name, folder)
            first_ssh(rt.rig, [*rt.ssh_base(), name], t0, 90, name)
            samples.append(time.perf_counter() - t0)
            log(f"{rt.mode} {name} ready run {i + 1}: {samples[-1]:.3f}s")
        return {"samples": samples, "total_s": summary(samples)}

    def tunnel_pid(self, rt: Runtime, name: str) -> int:
        st = json.loads((rt.rig.state_dir / name / "state.json").read_text())
        return int(st["tunnel"]["pid"] or 0)  # 0 (no such process) while it reconnects

    def memory(self, rt: Runtime, name: str) -> dict[str, Any]:
        st = json.loads((rt.rig.state_dir / name / "state.json").read_text())
        own, tree = tree_rss_kib(int(st["pid"]))
        return {
            "supervisor_rss_mib": own / 1024,
            "tree_rss_mib": tree / 1024,
            "server_kind": st["server"]["kind"],
            "tunnel_kind": st["tunnel"]["kind"],
        }

    def run_mode(self, mode: str) -> None:
        rt = make_runtime(self.work / mode, mode, start=False)
        self.runtimes.append(rt)
        self.prefixes.append(rt.rig.prefix)
        folders = {n: self.folder_for(rt, n, i) for i, n in enumerate(CONFIGS)}
        ready = {n: self.ready_times(rt, n, folders[n]) for n in CONFIGS}
        self.result["time_to_ready"][mode] = ready
        # All of them stay up for the transfers.
        routes = [
            Route(
                n,
                [*rt.ssh_base(), n],
                ["scp", "-F", str(rt.ssh_config), "-o", "BatchMode=yes", "-q"],
                n,
            )
            for n in CONFIGS
        ]
        out: dict[str, Any] = {op: {r.name: {"samples": []} for r in routes} for op in OPS}
        for rep in range(self.args.reps):
            order = rotated(routes, rep)
            for op in OPS:
                for route in order:
                    pid = self.tunnel_pid(rt, route.name)
                    c0 = cpu_seconds(pid)
                    s = self.transfer(rt, route, op, verify=rep == 0)
                    c1 = cpu_seconds(pid)
                    # CPU the tunnel process (ssh -R or the embedded client) spent per GiB
                    # carried: what it costs per byte, whatever else shared the cores.
                    if s["mib_s"] is not None and c0 is not None and c1 is not None:
                        s["tunnel_cpu_s_per_gib"] = (c1 - c0) / self.args.size_mib * 1024
                    out[op][route.name]["samples"].append(s)
                    if s["mib_s"] is not None:
                        log(
                            f"  {mode} rep {rep + 1} {op:8s} {route.name:8s} "
                            f"{s['mib_s']:7.1f} MiB/s"
                        )
                    elif rep == 0:
                        raise RuntimeError(f"{route.name} {op} failed: {s.get('error')}")
                    if s.get("sha256_ok") is False:
                        raise RuntimeError(f"{route.name} {op}: sha256 mismatch")
        for op in OPS:
            ref = None
            for r in routes:
                e = out[op][r.name]
                e["mib_s"] = summary([s["mib_s"] for s in e["samples"] if s["mib_s"]])
                e["tunnel_cpu_s_per_gib"] = summary(
                    [s["tunnel_cpu_s_per_gib"] for s in e["samples"] if "tunnel_cpu_s_per_gib" in s]
                )
                if r.name == REFERENCE:
                    ref = e["mib_s"]["median"]
            for r in routes:
                med = out[op][r.name]["mib_s"]["median"]
                out[op][r.name]["ratio"] = med / ref if med and ref else None
        self.result["throughput"][mode] = out
        time.sleep(2)  # let the transfers' buffers go before reading memory
        self.result["memory"][mode] = {n: self.memory(rt, n) for n in CONFIGS}
        for n in CONFIGS:
            rt.rig.handy("rt", "down", n, timeout=60)


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"## embedded vs OpenSSH ({m['date']}, nproc {m['nproc_cmd']}, "
        f"{m['ssh_version'].split(',')[0]})",
        "",
    ]
    for mode, ready in result["time_to_ready"].items():
        ref = ready[REFERENCE]["total_s"]["median"]
        lines += [
            f"### {mode}: time to ready (up -> connect -> first ssh), seconds",
            "",
            "| config | server | tunnel | median | min | max | ratio |",
            "|---|---|---|---|---|---|---|",
        ]
        for n, r in ready.items():
            t = r["total_s"]
            s, tu = CONFIGS[n]
            lines.append(
                f"| {n} | {s} | {tu} | {fmt(t['median'], '.2f')} | "
                f"{fmt(t['min'], '.2f')} | {fmt(t['max'], '.2f')} | "
                f"{fmt(t['median'] / ref if t['median'] and ref else None, '.2f')} |"
            )
        ops = result["throughput"].get(mode, {})
        size = result["params"]["size_mib"]
        lines += [
            "",
            f"### {mode}: throughput, {size} MiB, MiB/s median (ratio over {REFERENCE})",
            "",
            "| op | " + " | ".join(CONFIGS) + " |",
            "|---|" + "---|" * len(CONFIGS),
        ]
        for op in OPS:
            if op not in ops:
                continue
            cells = [
                f"{fmt(ops[op][n]['mib_s']['median'])} ({fmt(ops[op][n]['ratio'], '.2f')}x)"
                for n in CONFIGS
            ]
            lines.append(f"| {op.replace('_', ' ')} | " + " | ".join(cells) + " |")
        lines += [
            "",
            f"### {mode}: CPU of the tunnel process (ssh -R or embedded), s per GiB, median",
            "",
            "| op | " + " | ".join(CONFIGS) + " |",
            "|---|" + "---|" * len(CONFIGS),
        ]
        for op in OPS:
            if op in ops:
                cells = [
                    fmt(ops[op][n].get("tunnel_cpu_s_per_gib", {}).get("median"), ".2f")
                    for n in CONFIGS
                ]
                lines.append(f"| {op.replace('_', ' ')} | " + " | ".join(cells) + " |")
        mem = result["memory"].get(mode, {})
        if mem:
            lines += [
                "",
                f"### {mode}: memory when idle (RSS, MiB)",
                "",
                "| config | supervisor | supervisor + server + tunnel |",
                "|---|---|---|",
            ]
            for n, r in mem.items():
                lines.append(f"| {n} | {r['supervisor_rss_mib']:.1f} | {r['tree_rss_mib']:.1f} |")
        lines.append("")
    if result.get("leftovers"):
        lines += [f"LEFTOVERS: {result['leftovers']}"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--runs", type=int, default=5, help="time-to-ready runs per config")
    ap.add_argument("--reps", type=int, default=3, help="throughput repetitions")
    ap.add_argument("--modes", default="public", help="comma-separated: public,private")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "embedded.json")
    args = ap.parse_args(argv)
    missing = prerequisites()
    if missing:
        print(f"cannot run: missing {', '.join(missing)}", file=sys.stderr)
        return 2

    bench = EmbeddedBench(args)

    def body() -> None:
        bench.make_payload()
        for mode in args.modes.split(","):
            bench.run_mode(mode)

    return run_main(bench, body, args.out, markdown)


if __name__ == "__main__":
    sys.exit(main())
