#!/usr/bin/env python3
"""Benchmark of the core path: time to ready, and throughput of ours versus a hand-made tunnel.

Run from the repository root, as root (it builds the NAT rig of tests/rig.py):

    python3 bench/bench_core.py [--size-mib 256] [--runs 5] [--reps 3] [--out FILE]

For each mode (public, private) it builds one rig and measures, on this machine, in one run:

1. Time to ready: from launching ``handy-colab up DIR`` (rt namespace) through
   ``handy-colab connect`` until the first successful ``ssh -F cfg colab true`` from the
   laptop namespace. ``handy-colab down`` and a fresh state directory between runs; the config
   folder (and so the runtime's host key) is kept, as a real user's Drive folder would be.
2. Throughput of one random file, both ways, with ``ssh HOST cat`` and ``scp``, through our
   tunnel and through a hand-made baseline that reproduces the seed project's own commands:
   a plain sshd started by hand in the rt namespace and
   ``ssh -oStrictHostKeyChecking=no -oUserKnownHostsFile=/dev/null -i KEY -N -R ...``.
   Ours and the baseline run in the same rig at the same time, interleaved, with the order
   flipped every repetition (A B, B A, ...) so slow drift does not favour either side.

Each throughput sample is the file size over the wall time of the whole client command, so
it includes the SSH handshake(s) of that command; the same holds for both sides.
Everything is torn down in ``finally``: rigs, namespaces, processes and temporary files.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import (
    REPO,
    close_runtime,
    compile_package,
    first_ssh,
    fmt,
    hand_sshd_config,
    log,
    machine_info,
    ready_sample,
    run_main,
    sha256,
    stale_namespaces,
    summary,
    timed_run,
    tmpfs_dir,
    write_payload,
)

from tests.e2e.conftest import Runtime, finish, make_runtime
from tests.rig import RELAY_IP, RELAY_USER, keygen, prerequisites

MODES = ("public", "private")
OPS = ("cat_down", "cat_up", "scp_down", "scp_up")
BASE_REMOTE_PORT = 2323  # the baseline's port on the relay (ours uses conftest's REMOTE_PORT)
BASE_SSHD_PORT = 22022  # the hand-started sshd, 127.0.0.1 in the rt namespace
BY_HAND = "by-hand"  # a side of --ready-only: the seed's commands by hand (--by-hand)


def popen_logged(rig: Any, argv: list[str], log_file: Path) -> subprocess.Popen[bytes]:
    """Start ``argv`` in the runtime namespace, in a session of its own, output to a log."""
    with open(log_file, "ab") as fh:
        proc: subprocess.Popen[bytes] = rig.popen(
            "rt",
            argv,
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return proc


@dataclass
class Route:
    """How the laptop reaches one SSH server: argv prefixes for ssh and scp, and a target."""

    name: str
    ssh: list[str]  # up to and including the destination
    scp: list[str]  # options only
    target: str  # scp's HOST in HOST:PATH


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="hc-bench-"))
        self.data = tmpfs_dir("hc-bench-data-")  # the payload and its copies
        self.src = self.data / "payload.bin"
        self.src_sha = ""
        self.runtimes: list[Runtime] = []
        self.leftovers: list[str] = []
        self.prefixes: list[str] = []
        self.result: dict[str, Any] = {
            "machine": machine_info(),
            "params": {
                "size_mib": args.size_mib,
                "ready_runs": args.runs,
                "throughput_reps": args.reps,
                "payload_dir": str(self.data),
                "order": "interleaved per op; ours first on even reps, baseline first on odd reps",
                "throughput_definition": "size / wall time of the whole client "
                "command (handshakes included)",
            },
            "time_to_ready": {},
            "throughput": {},
            "verified": {},
            "ciphers": {},
        }

    # -- payload ----------------------------------------------------------------------------
    def make_payload(self) -> None:
        t0 = time.perf_counter()
        self.src_sha = write_payload(self.src, self.args.size_mib)
        log(f"payload {self.args.size_mib} MiB at {self.src} in {time.perf_counter() - t0:.1f}s")

    # -- time to ready ----------------------------------------------------------------------
    def time_to_ready(self, rt: Runtime) -> dict[str, Any]:
        """Ready runs of this checkout's handy-colab; with --other-bin, interleaved with runs of
        another install's (order flipped every run), so both see the same machine."""
        sides: list[str | None] = [None]
        if self.args.other_bin:
            sides.append(str(self.args.other_bin))
        if self.args.by_hand and rt.mode == "public":
            sides.append(BY_HAND)
        out = self._ready_runs(rt, sides)
        res = out[None]
        if self.args.other_bin:
            res["other"] = out[str(self.args.other_bin)]
        if BY_HAND in out:
            res["by_hand"] = out[BY_HAND]
        return res

    def _ready_runs(self, rt: Runtime, sides: list[str | None]) -> dict[str | None, dict[str, Any]]:
        path0 = os.environ["PATH"]
        per: dict[str | None, list[dict[str, Any]]] = {s: [] for s in sides}
        try:
            for i in range(self.args.runs):
                order = sides if i % 2 == 0 else sides[::-1]
                for side in order:
                    if side == BY_HAND:
                        per[side].append(self._by_hand_once(rt))
                        log(f"{rt.mode} by hand run {i + 1}: {per[side][-1]['total_s']:.3f}s")
                        continue
                    os.environ["PATH"] = f"{side}{os.pathsep}{path0}" if side else path0
                    s = self._ready_once(rt, first=not any(per[x] for x in sides if x != BY_HAND))
                    log(
                        f"{rt.mode} {side or 'this checkout'} ready run {i + 1}: "
                        f"{s['total_s']:.3f}s (up {s['up_s']:.3f}, connect {s['connect_s']:.3f}, "
                        f"ssh {s['first_ssh_s']:.3f} x{s['ssh_attempts']})"
                    )
                    per[side].append(s)
        finally:
            os.environ["PATH"] = path0
        result: dict[str | None, dict[str, Any]] = {}
        for side, samples in per.items():
            out: dict[str, Any] = {"samples": samples}
            for key in ("total_s", "up_s", "connect_s", "first_ssh_s"):
                out[key] = summary([s[key] for s in samples if s[key] is not None])
            result[side] = out
        return result

    def _by_hand_once(self, rt: Runtime) -> dict[str, Any]:
        """The seed's own commands by hand: sshd and `ssh -R` launched at once, then the
        laptop's `ssh true` tried until it works. No checks, no pinning: the floor."""
        rig = rt.rig
        d, sshd_argv, tunnel_argv, route = self.baseline_files(rt, self.work / rt.mode)
        t0 = time.perf_counter()
        procs = [popen_logged(rig, sshd_argv, d / "sshd.log")]
        procs.append(popen_logged(rig, tunnel_argv, d / "tunnel.log"))
        try:
            attempts = first_ssh(rig, route.ssh, t0, 60, "by hand")
            total = time.perf_counter() - t0
        finally:
            for proc in procs:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(10)
            # The relay drops the forward when the tunnel's session ends; wait for that.
            deadline = time.time() + 20
            while (
                time.time() < deadline
                and rig.run(
                    "relay", ["sh", "-c", f"ss -ltn | grep -q ':{BASE_REMOTE_PORT} '"]
                ).returncode
                == 0
            ):
                time.sleep(0.1)
        return {"total_s": total, "up_s": None, "connect_s": None, "first_ssh_s": None,
                "ssh_attempts": attempts}  # fmt: skip

    def _ready_once(self, rt: Runtime, first: bool) -> dict[str, Any]:
        rig = rt.rig
        down_s = None
        if not first:
            t = time.perf_counter()
            res = rig.handy("rt", "down", timeout=60)
            down_s = time.perf_counter() - t
            if res.returncode != 0:
                raise RuntimeError(f"down failed: {res.stderr or res.stdout}")
        # A fresh state each run; the config folder (host keys) and relay stay.
        shutil.rmtree(rig.state_dir, ignore_errors=True)
        for f in (rt.ssh_config, rt.known_hosts):
            f.unlink(missing_ok=True)
        s = ready_sample(rig, rt.up, rt.connect, [*rt.ssh_base(), "colab"], 90, rt.mode)
        return {**s, "previous_down_s": down_s}

    # -- baseline ---------------------------------------------------------------------------
    def start_baseline(self, rt: Runtime, tmp: Path) -> Route:
        rig = rt.rig
        d, sshd_argv, tunnel_argv, route = self.baseline_files(rt, tmp)
        popen_logged(rig, sshd_argv, d / "sshd.log")
        rig.wait_tcp("rt", "127.0.0.1", BASE_SSHD_PORT)
        popen_logged(rig, tunnel_argv, d / "tunnel.log")
        if rt.mode == "public":
            rig.wait_tcp("laptop", RELAY_IP, BASE_REMOTE_PORT, timeout=20)
        else:
            rig.wait_tcp("relay", "127.0.0.1", BASE_REMOTE_PORT, timeout=20)
        return route

    def baseline_files(self, rt: Runtime, tmp: Path) -> tuple[Path, list[str], list[str], Route]:
        """The hand-made tunnel: its folder, sshd's and ssh -R's argv, the laptop's way in."""
        d = tmp / "baseline"
        if (d / "route.json").exists():
            saved = json.loads((d / "route.json").read_text())
            return d, saved["sshd"], saved["tunnel"], Route(*saved["route"])
        d.mkdir()
        hostkey = keygen(d / "ssh_host_ed25519_key")
        ak = d / "authorized_keys"
        shutil.copy(f"{rt.laptop_key}.pub", ak)
        cfg = hand_sshd_config(
            d, BASE_SSHD_PORT, hostkey, ak, "Subsystem sftp /usr/lib/openssh/sftp-server"
        )
        sshd_argv = ["/usr/sbin/sshd", "-D", "-e", "-f", str(cfg)]
        if rt.mode == "public":
            spec = f"{BASE_REMOTE_PORT}:localhost:{BASE_SSHD_PORT}"
        else:
            spec = f"127.0.0.1:{BASE_REMOTE_PORT}:localhost:{BASE_SSHD_PORT}"
        # The seed project's own command, as it runs it (no ExitOnForwardFailure, no -v).
        argv = [
            "ssh",
            "-oStrictHostKeyChecking=no",
            "-oUserKnownHostsFile=/dev/null",
            "-i",
            str(rt.relay_key),
            "-N",
            "-R",
            spec,
            f"{RELAY_USER}@{RELAY_IP}",
        ]
        # The laptop side of the baseline: no host key checking, the laptop key. A config
        # file (not -o) so that the ProxyJump hop gets the same options.
        lcfg = d / "laptop_config"
        lcfg.write_text(
            "\n".join(
                [
                    "Host *",
                    "    StrictHostKeyChecking no",
                    "    UserKnownHostsFile /dev/null",
                    f"    IdentityFile {rt.laptop_key}",
                    "    BatchMode yes",
                    "    LogLevel ERROR",
                    "",
                ]
            )
        )
        if rt.mode == "public":
            target = f"root@{RELAY_IP}"
            ssh = ["ssh", "-F", str(lcfg), "-p", str(BASE_REMOTE_PORT), target]
            scp = ["scp", "-F", str(lcfg), "-q", "-P", str(BASE_REMOTE_PORT)]
        else:
            target = "root@127.0.0.1"
            jump = ["-J", f"{RELAY_USER}@{RELAY_IP}"]
            ssh = ["ssh", "-F", str(lcfg), *jump, "-p", str(BASE_REMOTE_PORT), target]
            scp = ["scp", "-F", str(lcfg), "-q", *jump, "-P", str(BASE_REMOTE_PORT)]
        route = Route("baseline", ssh, scp, target)
        (d / "route.json").write_text(
            json.dumps({"sshd": sshd_argv, "tunnel": argv, "route": ["baseline", ssh, scp, target]})
        )
        return d, sshd_argv, argv, route

    # -- throughput -------------------------------------------------------------------------
    def run_laptop(
        self, rt: Runtime, argv: list[str], stdin: Any = subprocess.DEVNULL, timeout: float = 300
    ) -> tuple[float, int, str]:
        secs, res = timed_run(
            rt.rig.ns["laptop"], argv, stdin=stdin, env=rt.rig.env(), timeout=timeout
        )
        return secs, res.returncode, res.stderr.decode(errors="replace")

    def transfer(self, rt: Runtime, route: Route, op: str, verify: bool) -> dict[str, Any]:
        down_copy = self.data / f"down-{route.name}.bin"
        up_copy = self.data / f"up-{route.name}.bin"
        if op == "cat_down":
            secs, rc, err = self.run_laptop(rt, [*route.ssh, f"cat {self.src}"])
        elif op == "cat_up":
            with open(self.src, "rb") as fh:
                secs, rc, err = self.run_laptop(rt, [*route.ssh, "cat > /dev/null"], stdin=fh)
        elif op == "scp_down":
            secs, rc, err = self.run_laptop(
                rt, [*route.scp, f"{route.target}:{self.src}", str(down_copy)]
            )
        else:
            secs, rc, err = self.run_laptop(
                rt, [*route.scp, str(self.src), f"{route.target}:{up_copy}"]
            )
        sample: dict[str, Any] = {
            "seconds": secs,
            "rc": rc,
            "mib_s": self.args.size_mib / secs if rc == 0 else None,
        }
        if rc != 0:
            sample["error"] = err.strip()[-300:]
            log(f"  {route.name} {op} FAILED rc={rc}: {sample['error']}")
        copy = down_copy if op == "scp_down" else up_copy if op == "scp_up" else None
        if copy is not None:
            if verify and rc == 0:
                sample["sha256_ok"] = copy.exists() and sha256(copy) == self.src_sha
                if not sample["sha256_ok"]:
                    log(f"  {route.name} {op}: sha256 MISMATCH")
            copy.unlink(missing_ok=True)
        return sample

    def throughput(self, rt: Runtime, routes: list[Route]) -> dict[str, Any]:
        out: dict[str, Any] = {op: {r.name: {"samples": []} for r in routes} for op in OPS}
        verified: dict[str, dict[str, bool]] = {r.name: {} for r in routes}
        for rep in range(self.args.reps):
            order = routes if rep % 2 == 0 else list(reversed(routes))
            for op in OPS:
                for route in order:
                    s = self.transfer(rt, route, op, verify=rep == 0)
                    out[op][route.name]["samples"].append(s)
                    if "sha256_ok" in s:
                        verified[route.name][op] = s["sha256_ok"]
                    if s["mib_s"] is not None:
                        log(
                            f"  {rt.mode} rep {rep + 1} {op:8s} {route.name:8s} "
                            f"{s['mib_s']:7.1f} MiB/s ({s['seconds']:.2f}s)"
                        )
        for op in OPS:
            for r in routes:
                entry = out[op][r.name]
                vals = [s["mib_s"] for s in entry["samples"] if s["mib_s"] is not None]
                entry["mib_s"] = summary(vals)
                entry["failures"] = sum(1 for s in entry["samples"] if s["mib_s"] is None)
            ours, base = out[op]["ours"]["mib_s"]["median"], out[op]["baseline"]["mib_s"]["median"]
            out[op]["ratio_ours_over_baseline"] = ours / base if ours and base else None
        self.result["verified"][rt.mode] = verified
        return out

    def ciphers(self, rt: Runtime, route: Route) -> list[str]:
        res = rt.rig.run("laptop", [*route.ssh[:1], "-v", *route.ssh[1:], "true"], timeout=60)
        return sorted(
            {
                m.group(0)
                for m in re.finditer(
                    r"kex: (?:algorithm|server->client "
                    r"cipher): \S+",
                    res.stderr,
                )
            }
        )

    # -- per mode ---------------------------------------------------------------------------
    def run_mode(self, mode: str) -> None:
        tmp = self.work / mode
        rt = make_runtime(tmp, mode, start=False)
        self.runtimes.append(rt)
        self.prefixes.append(rt.rig.prefix)
        log(f"{mode}: rig {rt.rig.prefix} built")
        self.result["time_to_ready"][mode] = self.time_to_ready(rt)
        if self.args.ready_only:
            return
        # The runtime of the last ready run stays up for the throughput part.
        ours = Route(
            "ours",
            [*rt.ssh_base(), "colab"],
            ["scp", "-F", str(rt.ssh_config), "-o", "BatchMode=yes", "-q"],
            "colab",
        )
        base = self.start_baseline(rt, tmp)
        routes = [ours, base]
        for r in routes:
            res = rt.rig.run("laptop", [*r.ssh, "true"], timeout=60)
            if res.returncode != 0:
                raise RuntimeError(f"{mode} {r.name}: ssh true failed: {res.stderr}")
        self.result["ciphers"][mode] = {r.name: self.ciphers(rt, r) for r in routes}
        supervisor_log = rt.rig.state_dir / "colab" / "supervisor.log"
        with contextlib.suppress(OSError):
            text = supervisor_log.read_text(errors="replace")
            self.result["ciphers"][mode]["ours_tunnel"] = sorted(
                set(re.findall(r"kex: (?:algorithm|server->client cipher): \S+", text))
            )
        self.result["throughput"][mode] = self.throughput(rt, routes)

    def close(self) -> None:
        for rt in self.runtimes:
            close_runtime(rt, self.leftovers, finish)
        self.runtimes.clear()
        shutil.rmtree(self.work, ignore_errors=True)
        shutil.rmtree(self.data, ignore_errors=True)
        self.result["leftovers"] = self.leftovers + stale_namespaces(self.prefixes)


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"## handy-colab core benchmark ({m['date']}, nproc {m['nproc_cmd']}, "
        f"{m['ssh_version'].split(',')[0]})",
        "",
        "### Time to ready (up -> connect -> first `ssh colab true`), seconds",
        "",
        "| mode | runs | median | min | max | median up | median connect | median first ssh |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode, ours in result["time_to_ready"].items():
        rows = [(mode, ours)]
        if "other" in ours:
            rows.append((f"{mode} (--other-bin)", ours["other"]))
        if "by_hand" in ours:
            rows.append((f"{mode} (by hand, seed's commands)", ours["by_hand"]))
        for label, r in rows:
            t = r["total_s"]
            lines.append(
                f"| {label} | {len(r['samples'])} | {fmt(t['median'], '.2f')} | "
                f"{fmt(t['min'], '.2f')} | {fmt(t['max'], '.2f')} | "
                f"{fmt(r['up_s']['median'], '.2f')} | "
                f"{fmt(r['connect_s']['median'], '.2f')} | "
                f"{fmt(r['first_ssh_s']['median'], '.2f')} |"
            )
    size = result["params"]["size_mib"]
    lines += [
        "",
        f"### Throughput, {size} MiB, MiB/s (median of "
        f"{result['params']['throughput_reps']}; min-max)",
        "",
        "| mode | op | ours | baseline | ours/baseline |",
        "|---|---|---|---|---|",
    ]
    for mode, ops in result["throughput"].items():  # empty with --ready-only
        for op in OPS:
            o, b = ops[op]["ours"]["mib_s"], ops[op]["baseline"]["mib_s"]
            lines.append(
                f"| {mode} | {op.replace('_', ' ')} | {fmt(o['median'])} "
                f"({fmt(o['min'])}-{fmt(o['max'])}) | {fmt(b['median'])} "
                f"({fmt(b['min'])}-{fmt(b['max'])}) | "
                f"{fmt(ops[op]['ratio_ours_over_baseline'], '.2f')} |"
            )
    ver = result.get("verified", {})
    if ver:
        lines += [
            "",
            "sha256 of scp'd copies: "
            + "; ".join(
                f"{mode} {route}: "
                + ", ".join(f"{op} {'ok' if ok else 'MISMATCH'}" for op, ok in ops.items())
                for mode, routes in ver.items()
                for route, ops in routes.items()
            ),
        ]
    if result.get("leftovers"):
        lines += ["", f"LEFTOVERS: {result['leftovers']}"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--runs", type=int, default=5, help="time-to-ready runs per mode")
    ap.add_argument("--reps", type=int, default=3, help="throughput repetitions per side")
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated subset")
    ap.add_argument(
        "--ready-only", action="store_true", help="measure time to ready only (no throughput)"
    )
    ap.add_argument(
        "--by-hand",
        action="store_true",
        help="with --ready-only, public mode: also time the seed's own commands by hand "
        "(sshd and ssh -R launched at once, then ssh true until it works), interleaved",
    )
    ap.add_argument(
        "--other-bin",
        type=Path,
        help="a bin directory holding another handy-colab (e.g. an older checkout's .venv/bin):"
        " its time to ready is measured interleaved with this checkout's",
    )
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "core.json")
    args = ap.parse_args(argv)
    missing = prerequisites()
    if missing:
        print(f"cannot run: missing {', '.join(missing)}", file=sys.stderr)
        return 2
    modes = [m for m in args.modes.split(",") if m]
    if any(m not in MODES for m in modes):
        ap.error(f"--modes must be a subset of {','.join(MODES)}")

    bench = Bench(args)
    if args.other_bin:
        compile_package(str(args.other_bin / "python"))

    def body() -> None:
        if not args.ready_only:
            bench.make_payload()
        for mode in modes:
            bench.run_mode(mode)

    return run_main(bench, body, args.out, markdown)


if __name__ == "__main__":
    sys.exit(main())
