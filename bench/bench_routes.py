#!/usr/bin/env python3
"""One table for every tunnel route: time to ready, throughput both ways, echo RTT, RSS.

Run from the repository root, as root, after `bash scripts/build-test-peers.sh`, under the
machine-wide e2e lock:

    flock /tmp/hc-e2e.lock .venv/bin/python bench/bench_routes.py [--quick]
        [--routes openssh-public,...] [--runs 5] [--reps 3] [--size-mib 256] [--out FILE]

Routes (each in a NAT rig of its own, built with the e2e rigs' own code, all alive at once so
that every measurement rotates over the routes side by side):

    openssh-public     relay, OpenSSH sshd + `ssh -R` to a TCP port (the seed's folder)
    openssh-private    relay, OpenSSH sshd + `ssh -R` to a Unix socket (laptop via ProxyCommand)
    embedded-public    relay, embedded server + embedded (asyncssh) tunnel client
    embedded-private   the same in private mode
    cloudflared-quick  real cloudflared quick tunnel to cfedge (HTTP/2), laptop `proxy --ws`
    frp-public         real frpc -> frps, tcp proxy on a public port
    frp-private        stcp: the laptop's frpc visitor
    frp-p2p            xtcp from a laptop behind a NAT of its own (STUN in the rig)

For each route:

1. Time to ready: launch `handy-colab up` (runtime namespace) -> `handy-colab connect`
   (laptop) -> first successful `ssh NAME true` from the laptop namespace; `down` between runs;
   median of --runs, the runs rotating over the routes.
2. Throughput of one random file of --size-mib (on tmpfs): `ssh NAME cat FILE` down (bytes
   counted on the laptop) and `ssh NAME wc -c < FILE` up (count checked); MiB/s over the
   whole command's wall time (handshake included); median of --reps, interleaved per op
   with the order rotated every repetition.
3. Small-echo round trip: one `ssh NAME cat` session kept open, 200 two-byte lines written
   and read back one at a time (bench_frp's ECHO); median RTT per repetition, then the
   median over the repetitions.
4. RSS of the runtime: the supervisor and all its descendants (server, tunnel client, and
   during transfers the session's own processes), from /proc: once idle after ready (2 s
   settle), and the peak sampled every 0.2 s during that route's transfers.

Everything is torn down in ``finally``: rigs, namespaces, processes and temporary files.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_embedded import tree_rss_kib
from bench_frp import ECHO
from common import (
    MIB,
    REPO,
    fmt,
    log,
    machine_info,
    ready_sample,
    rotated,
    run_main,
    summary,
    tmpfs_dir,
    write_payload,
)

from handy_colab.proc import descendants
from tests import cfrig, frprig, p2prig
from tests.e2e.cfhelpers import RouteRuntime, make_cf_runtime
from tests.e2e.conftest import Runtime, make_runtime
from tests.e2e.test_frp import make_frp_runtime
from tests.rig import RELAY_IP, prerequisites

ROUTES = (
    "openssh-public",
    "openssh-private",
    "embedded-public",
    "embedded-private",
    "cloudflared-quick",
    "frp-public",
    "frp-private",
    "frp-p2p",
)
REFERENCE = "openssh-public"  # the ratios' denominator (the seed's own route)
OPS = ("down", "up")
NAME = "colab"  # every runtime's name: each route has a rig (and a state dir) of its own
RSS_INTERVAL = 0.2
# What one route's failure may raise: it is noted in the table and the other routes go on.
ROUTE_ERRORS = (RuntimeError, AssertionError, OSError, ValueError, subprocess.SubprocessError)


@dataclass
class Target:
    """One route's runtime in its rig, with what differs between the routes' helpers."""

    route: str
    rt: Runtime | RouteRuntime
    up_args: list[str]
    server: str
    tunnel: str
    role: str = "laptop"  # the namespace the laptop's ssh runs in
    connect_source: str | None = None  # None: the folder's descriptor

    def env(self) -> dict[str, str]:
        if isinstance(self.rt, RouteRuntime):
            return self.rt.env()
        return self.rt.rig.env()

    def handy(self, role: str, *args: str, timeout: float = 120) -> Any:
        exe = shutil.which("handy-colab") or "handy-colab"
        return self.rt.rig.run(role, [exe, *args], timeout=timeout, env=self.env())

    def up(self) -> Any:
        return self.rt.up(*self.up_args)

    def connect(self) -> Any:
        source = self.connect_source or str(self.rt.folder / "connections" / f"{NAME}.json")
        return self.handy(
            "laptop",
            "connect",
            source,
            "--identity",
            str(self.rt.laptop_key),
            "--ssh-config",
            str(self.rt.ssh_config),
            "--known-hosts",
            str(self.rt.known_hosts),
        )

    def ssh(self, *cmd: str, opts: Sequence[str] = ()) -> list[str]:
        return ["ssh", "-F", str(self.rt.ssh_config), "-o", "BatchMode=yes", *opts, NAME, *cmd]

    def laptop_argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.rt.rig.ns[self.role], *argv]

    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.rt.rig.state_dir / NAME / "state.json").read_text())
        return data

    def supervisor_pid(self) -> int:
        pid = int(self.state().get("pid") or 0)
        if pid <= 0:  # pid 0 would make "its descendants" every process on the machine
            raise RuntimeError(f"{self.route}: state.json names no supervisor pid")
        return pid


class RssPeak:
    """Samples the RSS of one process tree on a thread until stopped; keeps the maximum."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.peak_kib = max(self.peak_kib, tree_rss_kib(self.pid)[1])
            if self._stop.wait(RSS_INTERVAL):
                return

    def __enter__(self) -> RssPeak:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


class RoutesBench:
    def __init__(self, args: argparse.Namespace, routes: list[str]) -> None:
        self.args = args
        self.routes = routes
        self.work = Path(tempfile.mkdtemp(prefix="hc-bench-routes-"))
        self.data = tmpfs_dir("hc-bench-routes-data-")
        self.src = self.data / "payload.bin"
        self.targets: list[Target] = []  # every rig built (all torn down in close)
        self.active: list[Target] = []  # the routes still measured (none has failed yet)
        self.leftovers: list[str] = []
        self.result: dict[str, Any] = {
            "machine": machine_info(),
            "params": {
                "routes": routes,
                "ready_runs": args.runs,
                "reps": args.reps,
                "size_mib": args.size_mib,
                "server_for_cloudflared_frp": args.server,
                "quick": args.quick,
                "order": "each run / rep / op rotates over the routes (all alive at once)",
                "throughput_definition": "size / wall time of the whole ssh command",
                "rss_definition": "VmRSS of the supervisor + all its descendants; idle after "
                f"ready (2 s settle); peak sampled every {RSS_INTERVAL} s during transfers",
            },
            "routes": {},
            "skipped": {},
        }

    # -- set-up -------------------------------------------------------------------------------
    def missing(self, route: str) -> list[str]:
        if route.startswith("cloudflared"):
            return cfrig.prerequisites()
        if route == "frp-p2p":
            return frprig.prerequisites() + p2prig.prerequisites()
        if route.startswith("frp"):
            return frprig.prerequisites()
        return []

    def build(self, route: str) -> Target:
        tmp = self.work / route
        kind, mode = route.split("-", 1)
        if kind in ("openssh", "embedded"):
            rt = make_runtime(tmp, mode, start=False)
            return Target(route, rt, ["--server", kind, "--relay-client", kind], kind, kind)
        if kind == "cloudflared":
            # HTTP/2: the stand-in edge speaks no QUIC.
            cf = make_cf_runtime(
                tmp, server=self.args.server, start=False, cloudflared={"protocol": "http2"}
            )
            return Target(route, cf, [], self.args.server, "cloudflared")
        extra: dict[str, Any] = {}
        if mode == "p2p":
            extra["stun_server"] = f"{RELAY_IP}:{p2prig.STUN_PORT}"
        frt = make_frp_runtime(tmp, mode, server=self.args.server, start=False, **extra)
        # The private modes' connect needs the folder's secret, so it reads the folder.
        target = Target(
            route, frt, [], self.args.server, f"frp {mode}", connect_source=str(frt.folder)
        )
        if mode == "p2p":
            try:
                target.role = p2prig.add_nat_laptop(frt.rig)
                p2prig.start_stun(frt.rig)
            except BaseException:
                self.close_target(target)
                raise
        return target

    def fail(self, t: Target, exc: BaseException) -> None:
        """One route failed: note why and go on with the others (its rig stays for close)."""
        log(f"{t.route}: FAILED, left out from here on: {exc}")
        self.result["routes"][t.route]["error"] = str(exc)[-500:]
        self.active.remove(t)

    def close_target(self, t: Target) -> None:
        try:
            left = t.rt.rig.close()
        except Exception as exc:  # keep cleaning the rest
            left = [f"close failed: {exc!r}"]
        if left:
            self.leftovers.append(f"{t.route}: processes killed at teardown: {left}")
            log(f"{t.route}: {left}")

    def close(self) -> None:
        for t in self.targets:
            self.close_target(t)
        self.targets.clear()
        shutil.rmtree(self.work, ignore_errors=True)
        shutil.rmtree(self.data, ignore_errors=True)
        self.result["leftovers"] = self.leftovers

    # -- time to ready ------------------------------------------------------------------------
    def ready_once(self, t: Target, first: bool) -> dict[str, float]:
        if not first:
            res = t.handy("rt", "down", NAME, timeout=60)
            if res.returncode != 0:
                raise RuntimeError(f"{t.route}: down failed: {res.stderr or res.stdout}")
        # The laptop starts from nothing each run; the config folder (host key) stays.
        for f in (t.rt.ssh_config, t.rt.known_hosts):
            f.unlink(missing_ok=True)
        return ready_sample(
            t.rt.rig,
            t.up,
            t.connect,
            t.ssh(),
            120,
            t.route,
            role=t.role,
            env=t.env(),
            connect_timeout=10,
            timeout=60,
        )

    def time_to_ready(self) -> None:
        samples: dict[str, list[dict[str, float]]] = {t.route: [] for t in self.active}
        for run in range(self.args.runs):
            for t in rotated(self.active, run):
                try:
                    s = self.ready_once(t, first=run == 0)
                except ROUTE_ERRORS as exc:
                    self.fail(t, exc)
                    continue
                samples[t.route].append(s)
                log(
                    f"{t.route:17s} ready run {run + 1}: {s['total_s']:.2f}s (up "
                    f"{s['up_s']:.2f}, connect {s['connect_s']:.2f}, ssh "
                    f"{s['first_ssh_s']:.2f} x{s['ssh_attempts']})"
                )
        for t in self.active:
            r = self.result["routes"][t.route]
            r["time_to_ready"] = {
                k: summary([s[k] for s in samples[t.route]])
                for k in ("total_s", "up_s", "connect_s", "first_ssh_s")
            }
            r["time_to_ready"]["samples"] = samples[t.route]

    # -- memory -------------------------------------------------------------------------------
    def idle_rss(self) -> None:
        time.sleep(2)  # let up's own checks and the first sessions' buffers go
        for t in list(self.active):
            try:
                pid = t.supervisor_pid()
                st = t.state()
            except ROUTE_ERRORS as exc:
                self.fail(t, exc)
                continue
            own, tree = tree_rss_kib(pid)
            self.result["routes"][t.route].update(
                supervisor_rss_idle_mib=own / 1024,
                tree_rss_idle_mib=tree / 1024,
                processes_idle=tree_processes(pid),
                ran={
                    "server": (st.get("server") or {}).get("kind"),
                    "tunnel": (st.get("tunnel") or {}).get("kind"),
                },
            )
            log(f"{t.route:17s} idle RSS: supervisor {own / 1024:.1f} MiB, tree {tree / 1024:.1f}")

    # -- throughput ---------------------------------------------------------------------------
    def transfer(self, t: Target, op: str) -> float | None:
        """One timed transfer; None when it failed or moved the wrong number of bytes."""
        size = self.args.size_mib * MIB
        remote = f"cat {self.src}" if op == "down" else "wc -c"
        buf = bytearray(MIB)
        got = 0
        with open(self.src if op == "up" else os.devnull, "rb") as stdin:
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                t.laptop_argv(t.ssh(remote)),
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=t.env(),
            )
            assert proc.stdout is not None
            # A hung route must not hang the whole run (the reads below have no timeout).
            watchdog = threading.Timer(max(60.0, 2.0 * self.args.size_mib), proc.kill)
            watchdog.start()
            try:
                # Count what comes back instead of trusting the exit code alone (for "up" it
                # is wc's count of what arrived).
                while n := proc.stdout.readinto(buf):  # type: ignore[attr-defined]
                    got += n
                _, err = proc.communicate()
            finally:
                watchdog.cancel()
            secs = time.perf_counter() - t0
        if op == "down":
            ok = got == size
        else:
            ok = bytes(buf[: min(got, 64)]).strip() == str(size).encode()
        if proc.returncode != 0 or not ok:
            log(
                f"  {t.route} {op} FAILED rc={proc.returncode} bytes back={got}: "
                f"{err.decode(errors='replace').strip()[-300:]}"
            )
            return None
        return float(self.args.size_mib) / secs

    def echo_rtt_ms(self, t: Target) -> float | None:
        res = t.rt.rig.run(t.role, ["python3", "-c", ECHO, *t.ssh("cat")], env=t.env(), timeout=120)
        try:
            return float(res.stdout.strip()) * 1000
        except ValueError:
            log(f"  {t.route} echo FAILED: {res.stderr.strip()[-300:]}")
            return None

    def throughput(self) -> None:
        mib_s: dict[str, dict[str, list[float]]] = {
            t.route: {op: [] for op in OPS} for t in self.targets
        }
        failures: dict[str, int] = {t.route: 0 for t in self.targets}
        crossed: dict[str, list[float]] = {t.route: [] for t in self.targets}
        rtts: dict[str, list[float]] = {t.route: [] for t in self.targets}
        peaks: dict[str, int] = {t.route: 0 for t in self.targets}
        for rep in range(self.args.reps):
            for op in OPS:
                for t in rotated(self.active, rep):
                    if t not in self.active:
                        continue
                    try:
                        before = p2prig.relay_bytes(t.rt.rig)
                        with RssPeak(t.supervisor_pid()) as peak:
                            v = self.transfer(t, op)
                        peaks[t.route] = max(peaks[t.route], peak.peak_kib)
                    except ROUTE_ERRORS as exc:
                        log(f"  {t.route} {op} FAILED: {exc}")
                        v = None
                    if v is None:
                        failures[t.route] += 1
                        if failures[t.route] >= 2:  # a broken route would only eat the time
                            self.fail(t, RuntimeError(f"{failures[t.route]} transfers failed"))
                        continue
                    mib_s[t.route][op].append(v)
                    # Which path the bytes took: ~2 when everything goes in and out of the
                    # relay host (relay, edge or frps), ~0 when p2p goes around it.
                    moved = p2prig.relay_bytes(t.rt.rig) - before
                    crossed[t.route].append(moved / (self.args.size_mib * MIB))
                    log(f"  rep {rep + 1} {op:4s} {t.route:17s} {v:7.1f} MiB/s")
            for t in rotated(self.active, rep):
                try:
                    rtt = self.echo_rtt_ms(t)
                except ROUTE_ERRORS as exc:
                    log(f"  {t.route} echo FAILED: {exc}")
                    rtt = None
                if rtt is not None:
                    rtts[t.route].append(rtt)
                    log(f"  rep {rep + 1} echo {t.route:17s} {rtt:6.2f} ms")
        for t in self.targets:
            r = self.result["routes"][t.route]
            r["throughput_mib_s"] = {op: summary(mib_s[t.route][op]) for op in OPS}
            r["throughput_samples"] = mib_s[t.route]
            r["transfer_failures"] = failures[t.route]
            r["echo_rtt_ms"] = summary(rtts[t.route])
            r["echo_rtt_samples_ms"] = rtts[t.route]
            r["tree_rss_peak_mib"] = peaks[t.route] / 1024
            r["relay_host_bytes_per_byte"] = summary(crossed[t.route])

    # -- the run ------------------------------------------------------------------------------
    def body(self) -> None:
        if prerequisites():
            raise RuntimeError(f"cannot run: missing {', '.join(prerequisites())}")
        for route in self.routes:
            missing = self.missing(route)
            if missing:
                self.result["skipped"][route] = f"missing {', '.join(missing)}"
                log(f"{route}: skipped, missing {', '.join(missing)}")
                continue
            t0 = time.perf_counter()
            try:
                target = self.build(route)
            except ROUTE_ERRORS as exc:  # the rig helpers tear down what they built
                self.result["skipped"][route] = f"rig failed: {exc!r}"[-500:]
                log(f"{route}: rig failed: {exc!r}")
                continue
            self.targets.append(target)
            self.active.append(target)
            self.result["routes"][route] = {
                "server": target.server,
                "tunnel": target.tunnel,
                "laptop_namespace": target.role,
                "rig_build_s": time.perf_counter() - t0,
            }
            log(f"{route}: rig {target.rt.rig.prefix} built in {time.perf_counter() - t0:.1f}s")
        if not self.active:
            raise RuntimeError("no route can run here")
        t0 = time.perf_counter()
        write_payload(self.src, self.args.size_mib)
        log(f"payload {self.args.size_mib} MiB in {time.perf_counter() - t0:.1f}s")
        self.time_to_ready()
        self.idle_rss()
        self.throughput()
        if not self.active:
            raise RuntimeError("every route failed")


def tree_processes(root: int) -> list[dict[str, Any]]:
    """What the RSS is made of: each process of the tree with its own RSS."""
    out = []
    for pid in [root, *descendants(root)]:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        out.append({"pid": pid, "rss_mib": tree_rss_kib(pid)[0] / 1024, "cmd": cmd[:160]})
    return out


def ratio(x: float | None, ref: float | None) -> float | None:
    return x / ref if x and ref else None


def render(result: dict[str, Any]) -> str:
    m, p = result["machine"], result["params"]
    routes: dict[str, Any] = result["routes"]
    ref = routes.get(REFERENCE, {})

    def med(r: dict[str, Any], *path: str) -> float | None:
        cur: Any = r
        for k in path:
            cur = (cur or {}).get(k)
        return cur if isinstance(cur, (int, float)) else None

    lines = [
        f"## All routes, one run ({m['date']}, {m['nproc']} cores, kernel {m['kernel']}, "
        f"{m['ssh_version'].split(',')[0]}, {p['size_mib']} MiB, {p['ready_runs']} ready runs, "
        f"{p['reps']} reps)",
        "",
        f"Medians; in brackets the ratio over {REFERENCE} (ready time and RTT: lower is better,"
        " MiB/s: higher is better). RSS: the supervisor and all its "
        "descendants on the runtime. Via relay host: bytes in + out of the relay host's "
        "interface per payload byte (2: all through it; 0: around it).",
        "",
        "| route | server | tunnel | ready, s | up / connect / first ssh, s | down MiB/s "
        "| up MiB/s | echo RTT, ms | RSS idle, MiB | RSS peak, MiB | via relay host |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(r: dict[str, Any], spec: str, *path: str) -> str:
        """The median at ``path`` and, in brackets, its ratio over the reference route."""
        v = med(r, *path)
        return f"{fmt(v, spec)} ({fmt(ratio(v, med(ref, *path)), '.2f')})"

    for name, r in routes.items():
        parts = "/".join(
            fmt(med(r, "time_to_ready", k, "median"), ".2f")
            for k in ("up_s", "connect_s", "first_ssh_s")
        )
        cells = [
            cell(r, ".2f", "time_to_ready", "total_s", "median"),
            parts,
            *(cell(r, ".1f", "throughput_mib_s", op, "median") for op in OPS),
            cell(r, ".2f", "echo_rtt_ms", "median"),
            fmt(med(r, "tree_rss_idle_mib")),
            fmt(med(r, "tree_rss_peak_mib")),
            fmt(med(r, "relay_host_bytes_per_byte", "median"), ".2f"),
        ]
        lines.append(f"| {name} | {r['server']} | {r['tunnel']} | " + " | ".join(cells) + " |")
    notes = []
    for name, r in routes.items():
        if r.get("error"):
            notes.append(f"{name}: FAILED: {r['error']}")
        if r.get("transfer_failures"):
            notes.append(f"{name}: {r['transfer_failures']} transfer(s) failed")
    for name, why in result.get("skipped", {}).items():
        notes.append(f"{name}: skipped ({why})")
    if result.get("error"):
        notes.append(f"ERROR: {result['error']}")
    if result.get("leftovers"):
        notes.append(f"LEFTOVERS: {result['leftovers']}")
    if "wall_s" in result:
        notes.append(f"whole run: {result['wall_s']:.0f} s")
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


QUICK = {"runs": 1, "reps": 1, "size_mib": 16}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--routes", default=",".join(ROUTES), help="comma-separated subset")
    ap.add_argument("--runs", type=int, default=5, help="time-to-ready runs per route")
    ap.add_argument("--reps", type=int, default=3, help="throughput / echo repetitions")
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument(
        "--server",
        default="openssh",
        choices=("openssh", "embedded"),
        help="the SSH server of the cloudflared and frp routes (the relay routes fix theirs)",
    )
    ap.add_argument(
        "--quick", action="store_true", help="runs 1, reps 1, 16 MiB: a few minutes end to end"
    )
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "routes.json")
    args = ap.parse_args(argv)
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)
    routes = [r for r in args.routes.split(",") if r]
    bad = [r for r in routes if r not in ROUTES]
    if bad or not routes:
        ap.error(f"--routes: unknown {bad}; choose from {','.join(ROUTES)}")
    if os.geteuid() != 0:
        print("cannot run: needs root (network namespaces)", file=sys.stderr)
        return 2

    bench = RoutesBench(args, routes)
    return run_main(bench, bench.body, args.out, render)


if __name__ == "__main__":
    sys.exit(main())
