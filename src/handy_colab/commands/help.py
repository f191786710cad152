"""`handy-colab help [TOPIC]`: the user docs shipped in the package, readable where only
the program is (a pip install, a notebook runtime), not just in a checkout."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "help",
        help="the user guide: the config folder, each route, the laptop, recovery, security",
        description="Print a page of handy-colab's user guide (the project's documentation,\n"
        "shipped with the program). Without TOPIC, list the topics.",
        epilog="Example:\n  handy-colab help\n  handy-colab help config\n"
        "  handy-colab help cloudflared | less",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("topic", nargs="?", metavar="TOPIC", help="the page (default: list them)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..userdocs import page, topics

    if args.topic is not None:
        print(page(args.topic), end="")
        return 0
    known = topics()
    width = max((len(t.name) for t in known), default=0)
    print("Topics (handy-colab help TOPIC):")
    for topic in known:
        print(f"  {topic.name:<{width}}  {topic.title}")
    return 0
