"""Command line: parse, dispatch, and turn a HandyColabError into one line and an exit code."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from . import __version__
from .config import BACKENDS, TUNNEL_CHOICES
from .errors import HandyColabError

# Commands that live wholly in their module: ``add_parser(sub)`` registers the subcommand and
# sets ``func`` (called with the parsed args, returns the exit code). Import must stay cheap.
PLUGGED_COMMANDS: tuple[str, ...] = ("forward", "code", "init", "listing")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="handy-colab", description=__doc__)
    p.add_argument("--version", action="version", version=f"handy-colab {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="runtime side: start sshd and the tunnel from a config folder")
    up.add_argument("folder", metavar="DIR", help="config folder (user_config.json + keys)")
    up.add_argument("--name", help="runtime name (the ssh Host alias); default from the config")
    up.add_argument(
        "--foreground", action="store_true", help="stay attached; Ctrl-C stops the runtime"
    )
    up.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait until reachable (default 60)"
    )
    up.add_argument(
        "--no-install", action="store_true", help="skip the config's python_packages/os_packages"
    )
    up.add_argument(
        "--server",
        choices=BACKENDS,
        help="SSH server: OpenSSH's sshd or the embedded one (default: config, else auto)",
    )
    up.add_argument(
        "--tunnel",
        choices=TUNNEL_CHOICES,
        help="the route: a relay with OpenSSH's ssh or the embedded client, or cloudflared "
        "(default: config, else auto)",
    )

    st = sub.add_parser("status", help="health of the runtime(s); exit 0 only when healthy")
    st.add_argument("name", nargs="?")
    st.add_argument("--json", action="store_true")

    dn = sub.add_parser("down", help="stop the runtime(s) and everything they started")
    dn.add_argument("name", nargs="?")

    lg = sub.add_parser("logs", help="the supervisor's log")
    lg.add_argument("name", nargs="?")
    lg.add_argument("-n", "--lines", type=int, default=200)

    px = sub.add_parser(
        "proxy",
        add_help=False,
        help="ProxyCommand: private mode (stdio to the relay's socket), or --ws HOST for a "
        "Cloudflare Tunnel",
    )
    px.add_argument("rest", nargs=argparse.REMAINDER)

    sub.add_parser("demo", help="run the whole path locally (relay on loopback), then clean up")

    cn = sub.add_parser("connect", help="laptop side: write ~/.ssh config for a runtime")
    cn.add_argument("source", metavar="SOURCE", help="connections/NAME.json or the config folder")
    cn.add_argument("--identity", metavar="KEY", help="private key that logs into the runtime")
    cn.add_argument("--ssh-config", metavar="FILE", help="write the Host block here instead")
    cn.add_argument("--known-hosts", metavar="FILE", help="pin host keys here instead")
    cn.add_argument("--name", help="which runtime, when the folder holds several")
    cn.add_argument(
        "--cloudflared-access",
        action="store_true",
        help="cloudflared route: connect through `cloudflared access ssh` instead of "
        "handy-colab's own WebSocket proxy",
    )
    cn.add_argument(
        "--os",
        dest="client_os",
        choices=["linux", "macos", "windows"],
        help="write the config for this laptop OS (default: this one); windows: what "
        "Windows' OpenSSH accepts",
    )
    cn.add_argument(
        "--no-vscode",
        action="store_true",
        help="leave VS Code's settings.json alone (default: say the host is Linux there)",
    )

    fs = sub.add_parser(
        "frps-setup", help="relay side: an frps with TLS, a token and a CA for your VPS"
    )
    fs.add_argument("--server-name", required=True, help="the VPS's DNS name or IP address")
    fs.add_argument("--bind-port", type=int, default=7000, help="frps's port (default 7000)")
    fs.add_argument("--ports", default="6000-6100", help="remote ports allowed (LOW-HIGH)")
    fs.add_argument("--dashboard-port", type=int, help="dashboard on 127.0.0.1 (default off)")
    fs.add_argument("--out", help="write the files into this folder (no root needed)")
    fs.add_argument("--apply", action="store_true", help="write to /etc and a systemd unit (root)")

    rs = sub.add_parser(
        "relay-setup", help="relay side: print (or --apply, as root) a locked-down relay account"
    )
    rs.add_argument("--key", required=True, help="the runtime's relay public key: .pub or line")
    rs.add_argument("--account", default="handy-colab", help="account on the relay")
    rs.add_argument("--mode", choices=["public", "private"], default="public")
    rs.add_argument("--remote-port", type=int, help="public mode: the port the relay exposes")
    rs.add_argument("--socket-path", help="private mode: the Unix socket on the relay")
    rs.add_argument("--name", default="colab", help="runtime name (default colab)")
    rs.add_argument(
        "--laptop-key", action="append", default=[], help="private mode: a laptop's public key"
    )
    rs.add_argument("--apply", action="store_true", help="carry out the plan (root, on the relay)")
    rs.add_argument("--sshd-config-dir", help="drop-in folder (default /etc/ssh/sshd_config.d)")
    rs.add_argument("--sshd-config", help="main sshd config (default /etc/ssh/sshd_config)")
    for mod in PLUGGED_COMMANDS:
        importlib.import_module(f".commands.{mod}", __package__).add_parser(sub)
    return p


def _proxy(rest: list[str]) -> int:
    """ProxyCommand: its own options (``-F``, ``--ws``...) are not the CLI's to parse."""
    if rest[:1] == ["--ws"]:
        from .tunnels.websocket import main as ws_main

        return ws_main(rest[1:])
    if rest[:1] == ["--frp"]:
        from .tunnels.frp_visitor import main as frp_main

        return frp_main(rest[1:])
    from .streamlocal import main as proxy_main

    return proxy_main(rest)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["proxy"] and argv[1:2] not in (["-h"], ["--help"]):
        # argparse's REMAINDER drops a leading option such as private mode's `-F FILE`.
        return _proxy(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        func = getattr(args, "func", None)
        if func is not None:
            code: int = func(args)
            return code
        if args.command == "up":
            from .commands.runtime_cmds import cmd_up

            return cmd_up(
                args.folder,
                args.name,
                args.foreground,
                args.timeout,
                not args.no_install,
                args.server,
                args.tunnel,
            )
        if args.command == "status":
            from .commands.runtime_cmds import cmd_status

            return cmd_status(args.name, args.json)
        if args.command == "down":
            from .commands.runtime_cmds import cmd_down

            return cmd_down(args.name)
        if args.command == "logs":
            from .commands.runtime_cmds import cmd_logs

            return cmd_logs(args.name, args.lines)
        if args.command == "proxy":
            return _proxy(args.rest)
        if args.command == "demo":
            from .demo import run_demo

            report = run_demo(say=lambda m: print(m, flush=True))
            print("\nthe command printed:\n" + report.ssh_output, end="")
            return 0
        if args.command == "connect":
            from .commands.connect import cmd_connect

            return cmd_connect(
                args.source,
                args.identity,
                args.ssh_config,
                args.known_hosts,
                args.name,
                args.cloudflared_access,
                args.client_os,
                not args.no_vscode,
            )
        if args.command == "frps-setup":
            from .commands.frps_setup import cmd_frps_setup

            return cmd_frps_setup(
                args.server_name,
                args.bind_port,
                args.ports,
                args.dashboard_port,
                args.out,
                args.apply,
            )
        if args.command == "relay-setup":
            from .commands.relay_setup import cmd_relay_setup

            return cmd_relay_setup(
                args.key,
                args.account,
                args.mode,
                args.remote_port,
                args.socket_path,
                args.name,
                args.laptop_key,
                args.apply,
                args.sshd_config_dir,
                args.sshd_config,
            )
    except HandyColabError as exc:
        print(f"handy-colab: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("handy-colab: interrupted", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
