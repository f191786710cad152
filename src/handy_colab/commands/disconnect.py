"""`handy-colab disconnect`: end the relay connections `connect` holds (private mode)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "disconnect",
        help="laptop side: end the relay connection held for a private-mode runtime",
        description="Private mode: `connect` and each `ssh NAME` keep one OpenSSH connection to "
        "the relay\nopen for up to 10 minutes after the last session, so the next `ssh` starts "
        "at once.\nThis ends it now (and every session still using it). Without NAME: all of "
        "them.",
        epilog="Example:\n  handy-colab disconnect colab",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="the runtime (default: all)")
    p.add_argument("--ssh-config", metavar="FILE", help="the file connect wrote (if not default)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..client.holds import end_holds

    config = Path(args.ssh_config) if args.ssh_config else None
    ended = end_holds(args.names, config)
    for alias in ended:
        print(f"Ended the relay connection held for {alias}")
    if not ended:
        print("No relay connection was held")
    return 0
