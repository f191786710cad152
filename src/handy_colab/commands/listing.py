"""`handy-colab list`: the runtimes this laptop knows (and whether they answer), and the
runtimes running on this machine."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "list",
        help="laptop side: every runtime `connect` set up here (reachable or not), and those "
        "running here",
        description="List the runtimes `connect` set up on this laptop, each probed for its SSH "
        "banner\n(reachable or not, and how long it took), and the runtimes `up` runs on this "
        "machine.",
        epilog="Example:\n  handy-colab list\n  handy-colab list --json --timeout 5",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--ssh-config", metavar="FILE", help="the file connect wrote (if not default)")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds per probe (default 2)")
    p.add_argument(
        "--json", action="store_true", help="machine-readable output: one object, always"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import runtime
    from ..client.listing import list_laptop

    laptop = list_laptop(Path(args.ssh_config) if args.ssh_config else None, args.timeout)
    here = []
    for name in runtime.names():
        healthy, st = runtime.status(name)
        if st and st.get("phase") not in ("stopped",):
            tun = st.get("tunnel") or {}
            here.append(
                {
                    "name": name,
                    "healthy": healthy,
                    "phase": st.get("phase"),
                    "tunnel": tun.get("kind"),
                    "endpoint": tun.get("endpoint"),
                }
            )
    if args.json:
        known = [vars(item) for item in laptop]
        print(json.dumps({"laptop": known, "running": here}, indent=2, sort_keys=True))
        return 0
    if not laptop and not here:
        print(
            "No runtimes: none set up on this laptop (run `handy-colab connect 'hc1:...'`), "
            "none running here (run `handy-colab up DIR`)"
        )
        return 0
    if laptop:
        print("Runtimes this laptop can reach with `ssh NAME`:")
        width = max(len(item.alias) for item in laptop)
        for item in laptop:
            state = "reachable" if item.reachable else "NOT reachable"
            print(
                f"  {item.alias:<{width}}  {item.route:<17}  {state} ({item.detail}, "
                f"{item.seconds:.1f}s)"
            )
    if here:
        print("Runtimes running on this machine:")
        for rt in here:
            state = "healthy" if rt["healthy"] else f"NOT healthy ({rt['phase']})"
            print(f"  {rt['name']}  {state}, tunnel {rt['tunnel']} {rt['endpoint']}")
    return 0
