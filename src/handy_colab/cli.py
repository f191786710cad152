"""Command line: parse, dispatch, and turn a HandyColabError into one line and an exit code.

The help users see is DESCRIPTION, EPILOG and each command's own text, never this docstring.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Any, NoReturn, cast

from . import __version__
from .choices import BACKENDS, ROUTES, TUNNEL_CHOICES, runtime_name_problem, suggest_runtime_name
from .errors import ConfigError, ExitCode, HandyColabError, exit_code_table

# Commands that live wholly in their module: ``add_parser(sub)`` registers the subcommand and
# sets ``func`` (called with the parsed args, returns the exit code). Import must stay cheap.
PLUGGED_COMMANDS: tuple[str, ...] = (
    "forward",
    "code",
    "init",
    "listing",
    "disconnect",
    "help",
)
# The commands build_parser defines itself (main dispatches them).
OWN_COMMANDS = frozenset(
    {"up", "status", "down", "logs", "proxy", "demo", "connect", "frps-setup", "relay-setup"}
)


DESCRIPTION = """\
Make a notebook runtime (Colab, Kaggle, any machine behind NAT) an SSH host: `ssh NAME`,
scp, rsync, VS Code and PyCharm reach it from your laptop.

On the runtime, `up` starts an SSH server and a tunnel out to you: an SSH relay of yours
(ssh -R), a Cloudflare Tunnel (no account needed) or your frps. On the laptop, `connect`
writes the ssh config for it, with the runtime's host key pinned."""

EPILOG = """\
Example (first run):
  laptop:   handy-colab init colab_data        # writes a config folder; copy it to Drive
  runtime:  handy-colab up /content/drive/MyDrive/colab_data
  laptop:   handy-colab connect 'hc1:...'      # the line `up` printed
            ssh colab

Run `handy-colab COMMAND --help` for a command's options and an example, and
`handy-colab help` for the user guide's topics.

Exit codes (the same in every command; `handy-colab help cli`):
""" + exit_code_table()


class _Skipped:
    """The parser of a subcommand this run does not need: every call on it does nothing.

    A command line names its subcommand first; building only that one saves `up` and
    `connect` the others' parsers and the plugged modules' imports (~20 ms of each start).
    """

    def __getattr__(self, _name: str) -> Any:
        return lambda *_args, **_kw: self


def _command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    purpose: str,
    description: str,
    example: str,
) -> argparse.ArgumentParser:
    """A subcommand whose help says what it is for and shows it in use."""
    only = getattr(sub, "only", None)
    if only is not None and name != only:
        return cast(argparse.ArgumentParser, _Skipped())
    return sub.add_parser(
        name,
        help=purpose,
        description=description,
        epilog=example,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole CLI's parser; with ``only`` (a command defined here), that command alone."""
    p = argparse.ArgumentParser(
        prog="handy-colab",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"handy-colab {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.only = only  # type: ignore[attr-defined]  # read by _command

    up = _command(
        sub,
        "up",
        "runtime side: start the SSH server and the tunnel from a config folder",
        "Start an SSH server on the runtime and the tunnel that lets the laptop reach it, as\n"
        "the config folder says; print how to connect (one `hc1:` line to paste into\n"
        "`handy-colab connect`) and keep both running in the background, reconnecting\n"
        "as needed, until `handy-colab down`.",
        "Example:\n  handy-colab up /content/drive/MyDrive/colab_data\n"
        "  handy-colab up colab_data --route cloudflared --foreground",
    )
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
    # One flag per idea: --route is the route (as in init and the config's "route"),
    # --relay-client the relay route's client (the config's relay.client).
    up.add_argument(
        "--route",
        choices=ROUTES,
        help="how the laptop reaches the runtime: relay (ssh -R to your relay), cloudflared "
        "or frp (default: the config's route)",
    )
    up.add_argument(
        "--relay-client",
        choices=BACKENDS,
        help="relay route: its tunnel client, OpenSSH's ssh or the embedded one; implies "
        "--route relay (default: the config's relay.client, else auto)",
    )
    up.add_argument(
        "--tunnel",
        choices=TUNNEL_CHOICES,
        help="deprecated: --tunnel cloudflared|frp is --route cloudflared|frp, "
        "--tunnel auto|openssh|embedded is --relay-client auto|openssh|embedded",
    )

    st = _command(
        sub,
        "status",
        "runtime side: health of the runtime(s); exit 0 only when healthy",
        "Show the SSH server, the tunnel, reconnects and the last error of a runtime `up`\n"
        "started on this machine (all of them without NAME). Exits 0 only when healthy.",
        "Example:\n  handy-colab status colab\n  handy-colab status --json",
    )
    st.add_argument("name", nargs="?", metavar="NAME", help="the runtime (default: all)")
    st.add_argument(
        "--json",
        action="store_true",
        help="machine-readable output: an object for NAME, else a list ([] when none)",
    )

    dn = _command(
        sub,
        "down",
        "runtime side: stop the runtime(s) and everything they started",
        "Stop a runtime `up` started on this machine (all of them without NAME): the tunnel,\n"
        "the SSH server and its open sessions.",
        "Example:\n  handy-colab down colab",
    )
    dn.add_argument("name", nargs="?", metavar="NAME", help="the runtime (default: all)")

    lg = _command(
        sub,
        "logs",
        "runtime side: the runtime's log (what up did, reconnects, errors)",
        "Print the end of the log of a runtime `up` started on this machine.",
        "Example:\n  handy-colab logs colab -n 50",
    )
    lg.add_argument("name", nargs="?", metavar="NAME", help="the runtime (default: the only one)")
    lg.add_argument("-n", "--lines", type=int, default=200, help="how many lines (default 200)")

    # Only `proxy -h` reaches this parser: main() hands every other `proxy ...` to _proxy.
    px = _command(
        sub,
        "proxy",
        "laptop side: the ssh ProxyCommand `connect` writes (not run by hand)",
        "The ProxyCommand of routes where the runtime has no address of its own: ssh starts\n"
        "it for each connection and talks to the runtime through its stdin/stdout. `connect`\n"
        "writes it into the ssh config (as this command, or the same code by module path).\n"
        "Three forms:\n\n"
        "  handy-colab proxy [-F CONFIG] RELAY SOCKET\n"
        "      relay route, private mode: logs into the relay (RELAY: a Host alias of CONFIG,\n"
        "      or USER@HOST[:PORT]) and opens the runtime's Unix socket SOCKET there as a\n"
        "      direct-streamlocal channel of that SSH connection (what `connect` writes on\n"
        "      Windows; on Linux and macOS it writes a relay connection held between\n"
        "      sessions instead: see `handy-colab disconnect -h`)\n"
        "  handy-colab proxy --ws [--descriptor FILE] [--cloudflared-access] HOSTNAME\n"
        "      cloudflared route: SSH over the tunnel's WebSocket, wss://HOSTNAME/\n"
        "  handy-colab proxy --frp PROFILE\n"
        "      frp route, private and p2p modes: frpc as a visitor, from the profile\n"
        "      `connect` wrote beside the pinned host keys",
        "Example (the by-hand command `up` prints, private mode):\n"
        "  ssh -o 'ProxyCommand=handy-colab proxy me@relay.example.org:22 "
        "/tmp/handy-colab-me-colab.sock' \\\n"
        "      -o HostKeyAlias=colab root@colab",
    )
    px.add_argument("rest", nargs=argparse.REMAINDER, help="the form's arguments (see above)")

    _command(
        sub,
        "demo",
        "try it: the whole path on this machine (a relay on loopback), then clean up",
        "Start a throwaway relay on loopback, bring a runtime up from a temporary config\n"
        "folder, connect to it with ssh as the laptop would, print the result and remove\n"
        "everything it made. Needs nothing but handy-colab.",
        "Example:\n  handy-colab demo",
    )

    cn = _command(
        sub,
        "connect",
        "laptop side: write the ssh config for a runtime, host key pinned",
        "Set up `ssh NAME` for a runtime: its Host block goes into ~/.ssh/config.d/handy-colab\n"
        "(included from ~/.ssh/config, which gains that one line) and its host keys into\n"
        "~/.ssh/handy-colab_known_hosts. SOURCE is the `hc1:` line `up` printed, the\n"
        "runtime's connections/NAME.json, or the whole config folder (e.g. synced by Drive).",
        "Example:\n  handy-colab connect 'hc1:...'\n"
        "  handy-colab connect ~/GoogleDrive/colab_data --identity ~/.ssh/id_ed25519",
    )
    cn.add_argument(
        "source", metavar="SOURCE", help="the hc1: line, connections/NAME.json or the folder"
    )
    cn.add_argument("--identity", metavar="KEY", help="private key that logs into the runtime")
    cn.add_argument("--ssh-config", metavar="FILE", help="write the Host block here instead")
    cn.add_argument("--known-hosts", metavar="FILE", help="pin host keys here instead")
    cn.add_argument("--name", help="which runtime, when the folder holds several")
    cn.add_argument(
        "--alias",
        help="the ssh Host alias to write (default: the runtime's name): to keep two "
        "runtimes of the same name, or when your own ssh config already uses the name",
    )
    cn.add_argument(
        "--replace",
        action="store_true",
        help="take over the alias (or pinned address) even though other host keys hold it "
        "(the runtime was rebuilt with new keys); in a terminal, connect asks instead",
    )
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

    fs = _command(
        sub,
        "frps-setup",
        "relay side: an frps with TLS, a token and a CA for your VPS",
        "Make the VPS side of the frp route: frps's config with TLS, a generated token, a CA\n"
        "and certificate for --server-name, and the ports runtimes may expose. Writes them\n"
        "into --out (no root needed), or with --apply installs them with a systemd unit.\n"
        "The files the runtime needs (frps_ca.pem, frp_token) go into its config folder.",
        "Example:\n  handy-colab frps-setup --server-name vps.example.org --out ./frps\n"
        "  sudo handy-colab frps-setup --server-name vps.example.org --apply",
    )
    fs.add_argument("--server-name", required=True, help="the VPS's DNS name or IP address")
    fs.add_argument("--bind-port", type=int, default=7000, help="frps's port (default 7000)")
    fs.add_argument("--ports", default="6000-6100", help="remote ports allowed (LOW-HIGH)")
    fs.add_argument("--dashboard-port", type=int, help="dashboard on 127.0.0.1 (default off)")
    fs.add_argument("--out", help="write the files into this folder (no root needed)")
    fs.add_argument("--apply", action="store_true", help="write to /etc and a systemd unit (root)")

    rs = _command(
        sub,
        "relay-setup",
        "relay side: print (or --apply, as root) a locked-down relay account",
        "Say what an OpenSSH server needs to be the relay route's relay: an account whose key\n"
        "may only forward the runtime's one port (public mode) or Unix socket (private mode),\n"
        "and nothing else. Prints the plan; with --apply, run as root on the relay, carries it\n"
        "out.",
        "Example:\n  handy-colab relay-setup --key relay_key.pub --remote-port 2222\n"
        "  sudo handy-colab relay-setup --key relay_key.pub --remote-port 2222 --apply",
    )
    rs.add_argument("--key", required=True, help="the runtime's relay public key: .pub or line")
    rs.add_argument("--account", default="handy-colab", help="account on the relay")
    rs.add_argument(
        "--mode",
        choices=["public", "private"],
        default="public",
        help="public: the relay exposes a port; private: a Unix socket only (default public)",
    )
    rs.add_argument("--remote-port", type=int, help="public mode: the port the relay exposes")
    rs.add_argument("--socket-path", help="private mode: the Unix socket on the relay")
    rs.add_argument("--name", default="colab", help="runtime name (default colab)")
    rs.add_argument(
        "--laptop-key", action="append", default=[], help="private mode: a laptop's public key"
    )
    rs.add_argument("--apply", action="store_true", help="carry out the plan (root, on the relay)")
    rs.add_argument("--sshd-config-dir", help="drop-in folder (default /etc/ssh/sshd_config.d)")
    rs.add_argument("--sshd-config", help="main sshd config (default /etc/ssh/sshd_config)")
    rs.add_argument(
        "--keys-dir",
        help="root-owned folder of the accounts' authorized_keys "
        "(default /etc/ssh/handy-colab/authorized_keys)",
    )
    rs.add_argument(
        "--chroot-dir",
        help="private mode: folder of the accounts' own roots (default /var/lib/handy-colab/relay)",
    )
    for mod in PLUGGED_COMMANDS if only is None else ():
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


# The relay route's `--relay-client` value (or the config's client, for "relay") in the one
# string runtime.up and the supervisor take (choices.TUNNEL_REQUESTS).
_DEPRECATED_TUNNEL_ROUTES = ("cloudflared", "frp")


def _tunnel_request(args: argparse.Namespace) -> str | None:
    """`up`'s --route/--relay-client (or the deprecated --tunnel) as runtime.up's ``tunnel``."""
    route, client = args.route, args.relay_client
    if args.tunnel is not None:
        if route is not None or client is not None:
            raise ConfigError(
                f"--tunnel {args.tunnel}: given with --route/--relay-client, which replace it. "
                f"Fix: drop --tunnel"
            )
        new = "--route" if args.tunnel in _DEPRECATED_TUNNEL_ROUTES else "--relay-client"
        # The one line a script's author needs; the old spelling still works meanwhile.
        print(
            f"handy-colab: warning: --tunnel is deprecated; use {new} {args.tunnel}",
            file=sys.stderr,
        )
        if args.tunnel in _DEPRECATED_TUNNEL_ROUTES:
            route = args.tunnel
        else:
            client = args.tunnel
    if client is not None and route not in (None, "relay"):
        raise ConfigError(
            f"--relay-client {client}: applies to the relay route only, not --route {route}. "
            f"Fix: drop --relay-client, or use --route relay"
        )
    if client is not None:
        return str(client)
    return "relay" if route == "relay" else route


def _check_up_flags(args: argparse.Namespace) -> None:
    """A bad flag value is the flag's fault, not the config file's: say so before reading it."""
    if args.name is not None:
        problem = runtime_name_problem(args.name)
        if problem is not None:
            raise ConfigError(
                f"--name {args.name!r}: not a valid runtime name: it {problem}. Fix: use e.g. "
                f"--name {suggest_runtime_name(args.name)}"
            )
    if not args.timeout > 0:
        raise ConfigError(
            f"--timeout {args.timeout:g}: must be more than 0 seconds. Fix: e.g. --timeout 60"
        )


def _commands(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Every command's name and purpose, as the whole parser lists them."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {a.dest: a.help or "" for a in action._choices_actions}
    return {}


def _short_help(parser: argparse.ArgumentParser, problem: str) -> int:
    """No command, or an unknown one: the usage, the commands, one error line; exit 2."""
    commands = _commands(parser)
    width = max(map(len, commands), default=0)
    lines = [parser.format_usage().rstrip(), "", "commands:"]
    lines += [f"  {name:<{width}}  {purpose}" for name, purpose in commands.items()]
    lines += ["", f"handy-colab: error: {problem}"]
    print("\n".join(lines), file=sys.stderr)
    return ExitCode.BAD_INPUT


def _unknown_command(argv: list[str], parser: argparse.ArgumentParser) -> int | None:
    """The short help's exit code when argv names no known command; None when it does."""
    rest = [a for a in argv if a not in ("-v", "--verbose")]
    fix = "Fix: one of the commands above; `handy-colab --help` says more"
    if not rest:
        return _short_help(parser, f"no command given. {fix}")
    if rest[0].startswith("-"):
        return None  # --help, --version, or an unknown option argparse itself reports
    known = _commands(parser)
    if rest[0] in known:
        return None
    import difflib

    close = difflib.get_close_matches(rest[0], list(known), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return _short_help(parser, f"unknown command {rest[0]!r}{hint}. {fix}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["proxy"] and argv[1:2] not in (["-h"], ["--help"]):
        # argparse's REMAINDER drops a leading option such as private mode's `-F FILE`.
        return _proxy(argv[1:])
    only = argv[0] if argv and argv[0] in OWN_COMMANDS else None
    parser = build_parser(only)
    if only is None:
        # Off the fast path (which names a command of its own): the whole parser is built.
        unknown = _unknown_command(argv, parser)
        if unknown is not None:
            return unknown
    args = parser.parse_args(argv)
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
            _check_up_flags(args)
            tunnel = _tunnel_request(args)
            from .forklaunch import ForkLaunch

            # The supervisor will be this process, forked once `up` has read the config and
            # decided to start (forklaunch.py): no second interpreter on the way to ready.
            launch = ForkLaunch(args.timeout, args.server, tunnel)
            try:
                from .commands.runtime_cmds import cmd_up

                return cmd_up(
                    args.folder,
                    args.name,
                    args.foreground,
                    args.timeout,
                    not args.no_install,
                    args.server,
                    tunnel,
                    launch=launch,
                )
            finally:
                if launch is not None:
                    launch.cancel()
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
                alias=args.alias,
                replace=args.replace,
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
                args.keys_dir,
                args.chroot_dir,
            )
    except HandyColabError as exc:
        print(f"handy-colab: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("handy-colab: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    return ExitCode.BAD_INPUT


# After these, nothing of ours is left to run in the process: the program skips the
# interpreter's teardown (~15 ms with `up`'s modules loaded), which is on the way to ready.
QUICK_EXIT = frozenset({"up", "connect"})


def _closed_pipe() -> int:
    """The reader of stdout went away (`| head`): no traceback, and no second error when the
    interpreter flushes stdout on its way out; 141 as a shell reports a SIGPIPE death."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return ExitCode.CLOSED_PIPE


def entry() -> NoReturn:
    """The `handy-colab` program (tests call main(), which always returns)."""
    try:
        code = main()
        sys.stdout.flush()  # here, where a closed pipe is caught, not at interpreter exit
    except BrokenPipeError:
        code = _closed_pipe()
    except SystemExit as exc:  # argparse's --help and usage errors
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            code = _closed_pipe()
        else:
            code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    if sys.argv[1:2] and sys.argv[1] in QUICK_EXIT:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                code = code or 1  # the caller did not get our output: not a success
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
