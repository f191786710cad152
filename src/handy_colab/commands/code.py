"""`code NAME [PATH]`: open VS Code (Remote-SSH) on a runtime `connect` set up."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "code",
        help="laptop side: open VS Code on a runtime (Remote-SSH), in its notebook directory",
        description="Open VS Code's Remote-SSH window on a runtime `connect` set up, in the "
        "notebook's\ndirectory (or PATH), having told VS Code the host runs Linux.",
        epilog="Example:\n  handy-colab code colab\n  handy-colab code colab /content/project "
        "--print    # only show the command and link",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", metavar="NAME", help="the runtime, as `connect` named it")
    p.add_argument(
        "path", metavar="PATH", nargs="?", help="folder on the runtime (default: the notebook's)"
    )
    p.add_argument("--ssh-config", metavar="FILE", help="the file connect wrote (--ssh-config)")
    p.add_argument(
        "--print",
        dest="print_only",
        action="store_true",
        help="only print the command and the vscode:// link; change and start nothing",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..client.laptop import find_runtime
    from ..client.vscode import open_vscode, plan_open, remember_platform
    from ..errors import ConfigError

    ssh_config = Path(args.ssh_config).expanduser() if args.ssh_config else None
    rt = find_runtime(args.name, ssh_config)
    path = args.path or (rt.descriptor.start_dir if rt.descriptor is not None else "")
    if not path:
        raise ConfigError(
            f"{rt.config_file}: the notebook directory of {rt.alias} is not known here (no "
            f"descriptor copy). Fix: give PATH, or run `handy-colab connect` for it again"
        )
    if args.print_only:
        plan = plan_open(rt.alias, path)
        if plan.via == "code":
            print(plan.shown)
        print(plan.link)
        return 0
    for line in remember_platform([rt.alias]).messages:
        print(line)
    opened = open_vscode(rt.alias, path)
    print(f"Opened: {opened.shown}")
    if ssh_config is not None:
        print(
            f"VS Code reads ~/.ssh/config: if that does not include {rt.config_file}, set "
            f'"remote.SSH.configFile" to it in VS Code\'s settings'
        )
    return 0
