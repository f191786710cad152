#!/usr/bin/env python3
"""Private mode's laptop ProxyCommand: the held relay connection against the asyncssh proxy.

Run from the repository root, as root (it builds the NAT rig of tests/rig.py), with the
project's venv:

    .venv/bin/python3 bench/bench_private_proxy.py [--reps 9] [--size-mib 64]

One private-mode runtime; two ssh configs on the laptop that differ only in the ProxyCommand:
**held** is what `connect` writes on Linux and macOS (client/relayhop.py: an OpenSSH master
to the relay holds a local forward, the ProxyCommand is a stdlib-only script that connects to
it), **asyncssh** is the one Windows keeps (streamlocal.py: its own asyncssh connection to the
relay for every ssh). Interleaved, order flipped every repetition: the wall time of
``ssh colab true`` with the held connection up ("warm") and with none ("cold": the first ssh
after `disconnect`, or after the connection expired), and ``cat`` of a random file both ways.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import write_payload

from tests.e2e.conftest import finish, make_runtime


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--size-mib", type=int, default=64)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="hc-bench-proxy-") as tmpdir:
        tmp = Path(tmpdir)
        rt = make_runtime(tmp / "rt", "private")
        try:
            held_cfg = rt.ssh_config
            text = held_cfg.read_text()
            hop = re.search(r"ProxyCommand (\S+) -I -S \S+relayhop\.py --dir \S+ --tag \S+ ", text)
            assert hop, "connect wrote another ProxyCommand than expected"
            asy_cfg = tmp / "asyncssh_config"
            asy_cfg.write_text(
                text.replace(hop[0], f"ProxyCommand {hop[1]} -m handy_colab.streamlocal ").replace(
                    f"-F {held_cfg}", f"-F {asy_cfg}"
                )
            )
            payload = tmp / "payload"
            write_payload(payload, args.size_mib)
            configs = {"held": held_cfg, "asyncssh": asy_cfg}
            ops = ("true_cold", "true_warm", "cat_down", "cat_up")
            times: dict[str, dict[str, list[float]]] = {k: {op: [] for op in ops} for k in configs}

            def timed(cfg: Path, cmd: list[str], upload: bool = False) -> float:
                argv = ["ip", "netns", "exec", rt.rig.ns["laptop"], "ssh", "-F", str(cfg)]
                argv += ["-o", "BatchMode=yes", "colab", *cmd]
                with open(payload if upload else os.devnull, "rb") as stdin:
                    start = time.monotonic()
                    res = subprocess.run(argv, stdin=stdin, capture_output=True)
                    took = time.monotonic() - start
                assert res.returncode == 0, res.stderr
                return took

            for i in range(args.reps):
                order = list(configs.items())
                if i % 2:
                    order.reverse()
                for name, cfg in order:
                    res = rt.rig.handy("laptop", "disconnect", "--ssh-config", str(held_cfg))
                    assert res.returncode == 0, res.stderr
                    times[name]["true_cold"].append(timed(cfg, ["true"]))
                    times[name]["true_warm"].append(timed(cfg, ["true"]))
                    times[name]["cat_down"].append(timed(cfg, ["cat", str(payload)]))
                    times[name]["cat_up"].append(timed(cfg, ["cat > /dev/null"], upload=True))
            print(
                f"private-mode ProxyCommand, {args.reps} reps, {args.size_mib} MiB, "
                f"{os.cpu_count()} CPUs"
            )
            print("| op | asyncssh (Windows) | held (Linux, macOS) | held / asyncssh |")
            print("|---|---|---|---|")
            for op in ops:
                asy = statistics.median(times["asyncssh"][op])
                held = statistics.median(times["held"][op])
                if op.startswith("true"):
                    what = f"`ssh colab true` {op[5:]}, s"
                    print(f"| {what} | {asy:.3f} | {held:.3f} | {held / asy:.2f} |")
                else:
                    mib_a, mib_h = args.size_mib / asy, args.size_mib / held
                    print(f"| {op}, MiB/s | {mib_a:.1f} | {mib_h:.1f} | {mib_h / mib_a:.2f} |")
        finally:
            finish(rt)
    return 0


if __name__ == "__main__":
    sys.exit(main())
