#!/usr/bin/env python3
"""Private mode's laptop ProxyCommand, before and after it stopped using a local Unix socket.

Run from the repository root, as root (it builds the NAT rig of tests/rig.py):

    python3 bench/bench_private_proxy.py [--rev 7774545] [--reps 15] [--size-mib 64]

One private-mode runtime; two ssh configs on the laptop that differ only in the ProxyCommand:
**socket** runs ``handy_colab.streamlocal`` as it was at ``--rev`` (``ssh -N -L local.sock:...``
plus a pump through the socket), **asyncssh** runs today's (the relay's socket opened as a
channel of the proxy's own asyncssh connection). Interleaved, order flipped every repetition:
the wall time of ``ssh colab true`` and of ``cat`` of a random file both ways.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, write_payload

from tests.e2e.conftest import finish, make_runtime


def old_package(rev: str, into: Path) -> Path:
    """The package as it was at ``rev``, importable from ``into``."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, "src/handy_colab"], check=True, capture_output=True
    ).stdout
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rev", default="7774545", help="the revision with the socket proxy")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--size-mib", type=int, default=64)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="hc-bench-proxy-") as tmpdir:
        tmp = Path(tmpdir)
        old_src = old_package(args.rev, tmp / "old")
        rt = make_runtime(tmp / "rt", "private")
        try:
            new_cfg = rt.ssh_config
            text = new_cfg.read_text()
            launcher = f"{sys.executable} -m handy_colab.streamlocal"
            assert launcher in text, "connect wrote another ProxyCommand than expected"
            old_cfg = tmp / "old_config"
            old_cfg.write_text(
                text.replace(launcher, f"env PYTHONPATH={old_src} {launcher}").replace(
                    f"-F {new_cfg}", f"-F {old_cfg}"
                )
            )
            payload = tmp / "payload"
            write_payload(payload, args.size_mib)
            configs = {"socket": old_cfg, "asyncssh": new_cfg}
            times: dict[str, dict[str, list[float]]] = {
                k: {"true": [], "cat_down": [], "cat_up": []} for k in configs
            }

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
                    times[name]["true"].append(timed(cfg, ["true"]))
                    times[name]["cat_down"].append(timed(cfg, ["cat", str(payload)]))
                    times[name]["cat_up"].append(timed(cfg, ["cat > /dev/null"], upload=True))
            print(
                f"private-mode ProxyCommand, {args.reps} reps, {args.size_mib} MiB, "
                f"{os.cpu_count()} CPUs"
            )
            print("| op | socket (old) | asyncssh (new) | new / old |")
            print("|---|---|---|---|")
            for op in ("true", "cat_down", "cat_up"):
                old = statistics.median(times["socket"][op])
                new = statistics.median(times["asyncssh"][op])
                if op == "true":
                    print(f"| `ssh colab true`, s | {old:.3f} | {new:.3f} | {new / old:.2f} |")
                else:
                    mib_old, mib_new = args.size_mib / old, args.size_mib / new
                    print(
                        f"| {op}, MiB/s | {mib_old:.1f} | {mib_new:.1f} | {mib_new / mib_old:.2f} |"
                    )
        finally:
            finish(rt)
    return 0


if __name__ == "__main__":
    sys.exit(main())
