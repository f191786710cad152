"""`init`: the laptop's first run. Asks (in a terminal) or takes flags, writes the config
folder through `client.init`, and prints exactly what to do next."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..client.init import InitPlan, InitRequest, InitResult

T = TypeVar("T")

_ROUTE_HELP = (
    "cloudflared: a quick tunnel, no account (default); relay: your OpenSSH relay; "
    "frp: your frps; portmap: portmap.io (the seed's format)"
)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "init",
        help="laptop side, first run: use (or make) your SSH key and write a config folder",
        description="Write a config folder for `handy-colab up` (your public key, the route's "
        "settings and\nkeys) and say what to do next. Asks in a terminal; with --yes (or no "
        "terminal) it\ntakes flags and defaults only. Copy the folder to the runtime, e.g. to "
        "Google Drive.",
        epilog="Example:\n  handy-colab init                        # asks; a cloudflared "
        "quick tunnel by default\n  handy-colab init cfg --route relay --relay-host "
        "vps.example.org --remote-port 2222 --yes",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("folder", nargs="?", metavar="DIR", help="folder to write (default colab_data)")
    p.add_argument("--route", help=_ROUTE_HELP)
    p.add_argument("--name", help="runtime name, the ssh Host alias (default colab)")
    p.add_argument(
        "--key", metavar="PATH", help="your private key (default: ~/.ssh/id_ed25519, ...)"
    )
    p.add_argument("--force", action="store_true", help="replace DIR's config (a backup is kept)")
    p.add_argument("-y", "--yes", action="store_true", help="ask nothing: flags and defaults")
    r = p.add_argument_group("relay route")
    r.add_argument(
        "--relay-host",
        metavar="HOST",
        help="the relay's address (HOST:PORT sets --relay-port too)",
    )
    r.add_argument("--relay-port", metavar="PORT", help="the relay's sshd port (default 22)")
    r.add_argument("--relay-user", metavar="USER", help="relay account (default handy-colab)")
    r.add_argument(
        "--relay-key", metavar="PATH", help="key the runtime logs in with (default: new)"
    )
    r.add_argument("--relay-host-key", metavar="KEY", help="pin: a key line or a .pub/keyscan file")
    r.add_argument("--mode", help="public (the relay exposes a port; default) or private")
    r.add_argument("--remote-port", metavar="PORT", help="relay/frp public mode: the exposed port")
    r.add_argument("--socket-path", metavar="PATH", help="private mode: the socket on the relay")
    f = p.add_argument_group("frp route")
    f.add_argument(
        "--frp-server", metavar="HOST", help="frps's address (HOST:PORT sets --frp-port too)"
    )
    f.add_argument("--frp-port", metavar="PORT", help="frps's bindPort (default 7000)")
    f.add_argument("--frp-ca", metavar="PATH", help="frps's CA (frps-setup's frps_ca.pem)")
    f.add_argument("--frp-token", metavar="PATH", help="frps's token file (frp_token)")
    f.add_argument("--frp-mode", help="public (default), private or p2p")
    f.add_argument("--frp-server-name", metavar="NAME", help="name in frps's certificate")
    m = p.add_argument_group("portmap route (portmap.io)")
    m.add_argument("--pem", metavar="PATH", help="portmap.io's key, <user>.first.pem")
    m.add_argument(
        "--service-url",
        metavar="HOST",
        help="e.g. user-12345.portmap.host (HOST:PORT sets --service-port too)",
    )
    m.add_argument("--service-port", metavar="PORT", help="the port of portmap.io's rule")
    m.add_argument("--local-port", metavar="PORT", help="default: the service port")
    c = p.add_argument_group("cloudflared route")
    c.add_argument(
        "--cloudflared-arg",
        metavar="ARG",
        action="append",
        default=[],
        help="one more cloudflared flag for the config (repeat; e.g. --cloudflared-arg=--region)",
    )
    p.set_defaults(func=run)


class _Asker:
    """A value from its flag; else, in a terminal, from a question; else its default."""

    def __init__(self, interactive: bool) -> None:
        self.interactive = interactive

    def __call__(
        self,
        given: str | None,
        question: str,
        check: Callable[[str], T],
        default: str | None = None,
        optional: bool = False,
    ) -> T | None:
        if given is not None:
            return check(given)
        if not self.interactive:
            return check(default) if default is not None else None
        hint = f" [{default}]" if default is not None else " [none]" if optional else ""
        while True:
            try:
                answer = input(f"{question}{hint}: ").strip()
            except EOFError:
                raise ConfigError(
                    f"{question}: no answer (input ended). Fix: answer it, or pass flags with --yes"
                ) from None
            answer = answer or default or ""
            if not answer and optional:
                return None
            if not answer:
                print("  (an answer is needed here)")
                continue
            try:
                return check(answer)
            except ConfigError as exc:
                print(f"  {exc}")


def _request(args: argparse.Namespace, ask: _Asker) -> InitRequest:
    from ..client import init as lib
    from ..client import init_inputs as chk

    def port(flag: str) -> Callable[[str], int]:
        return lambda v: chk.check_port(v, flag)

    def host_and_port(
        host_arg: str | None,
        port_arg: str | None,
        questions: tuple[str, str],
        flags: tuple[str, str],
        default_port: str | None = None,
    ) -> tuple[str | None, int | None]:
        """A host flag and its port flag; HOST:PORT sets the port (split_host_port). None:
        not given, and plan_init then names the missing flag."""
        flag, port_flag = flags
        got = ask(
            host_arg, questions[0], lambda v: chk.split_host_port(v, flag, port_flag, port_arg)
        )
        host, split = got or (None, None)
        given = port_arg if split is None else str(split)
        return host, ask(given, questions[1], port(port_flag), default_port)

    def choice(flag: str, options: tuple[str, ...]) -> Callable[[str], str]:
        return lambda v: chk.check_choice(v, flag, options)

    def path(flag: str) -> Callable[[str], Path]:
        return lambda v: chk.check_file(v, flag)

    def any_port(v: str) -> int:
        # 0: the relay picks a free port (config.md), so runtimes need not agree on ports.
        return chk.check_port(v, "--remote-port", allow_zero=True)

    def user(v: str) -> str:
        return chk.check_user(v, "--relay-user")

    def target(v: str) -> Path:
        folder = Path(v).expanduser().absolute()
        lib.check_target(folder, args.force)  # now, not after every other question
        return folder

    folder = ask(args.folder, "Config folder to write", target, lib.DEFAULT_FOLDER)
    route = ask(
        args.route, f"Route ({', '.join(lib.ROUTES)})", choice("--route", lib.ROUTES), "cloudflared"
    )
    assert folder is not None and route is not None
    req = lib.InitRequest(
        folder=folder,
        route=route,
        name=chk.check_name(args.name or "colab"),
        key=Path(args.key) if args.key else None,
        force=args.force,
        cloudflared_args=list(args.cloudflared_arg),
    )
    if route == "relay":
        req.relay_host, relay_port = host_and_port(
            args.relay_host,
            args.relay_port,
            ("Relay host", "Relay SSH port"),
            ("--relay-host", "--relay-port"),
            "22",
        )
        req.relay_port = relay_port or 22
        req.relay_user = (
            ask(args.relay_user, "Relay account", user, lib.DEFAULT_RELAY_USER)
            or lib.DEFAULT_RELAY_USER
        )
        req.mode = (
            ask(
                args.mode,
                "Mode (public, private)",
                choice("--mode", ("public", "private")),
                "public",
            )
            or "public"
        )
        if req.mode == "public":
            req.remote_port = ask(args.remote_port, "Port the relay exposes (0: any)", any_port)
        elif args.socket_path:
            req.socket_path = chk.check_socket_path(args.socket_path)
        key = ask(
            args.relay_key,
            "Relay key file (empty: make a new one)",
            path("--relay-key"),
            optional=True,
        )
        req.relay_key = key
        req.relay_host_key = ask(
            args.relay_host_key,
            "Relay host key to pin (empty: pinned on first use)",
            lambda v: chk.check_host_key(v, "--relay-host-key"),
            optional=True,
        )
    elif route == "frp":
        req.frp_server, frp_port = host_and_port(
            args.frp_server,
            args.frp_port,
            ("frps address", "frps port"),
            ("--frp-server", "--frp-port"),
            "7000",
        )
        req.frp_port = frp_port or 7000
        req.frp_ca = ask(args.frp_ca, "frps's CA file (frps_ca.pem)", path("--frp-ca"))
        req.frp_token = ask(args.frp_token, "frps's token file", path("--frp-token"), optional=True)
        modes = ("public", "private", "p2p")
        req.frp_mode = (
            ask(args.frp_mode, "Mode (public, private, p2p)", choice("--frp-mode", modes), "public")
            or "public"
        )
        if req.frp_mode == "public":
            req.remote_port = ask(args.remote_port, "Port frps exposes", port("--remote-port"))
        if args.frp_server_name:
            req.frp_server_name = chk.check_host(args.frp_server_name, "--frp-server-name")
    elif route == "portmap":
        req.pem = ask(args.pem, "portmap.io's key file (<user>.first.pem)", path("--pem"))
        req.service_url, req.service_port = host_and_port(
            args.service_url,
            args.service_port,
            ("portmap.io host (HOST of its rule tcp://HOST:PORT)", "Service port"),
            ("--service-url", "--service-port"),
        )
        default_local = str(req.service_port) if req.service_port else None
        req.local_port = ask(args.local_port, "Local port", port("--local-port"), default_local)
    return req


def run(args: argparse.Namespace) -> int:
    from ..client.init import plan_init, write_init

    interactive = not args.yes and sys.stdin.isatty()
    req = _request(args, _Asker(interactive))
    plan = plan_init(req)
    if plan.laptop_key.made and interactive:
        yes = _Asker(True)(
            None,
            f"No SSH key in ~/.ssh: make a new ed25519 key at {plan.laptop_key.private}? (y/n)",
            lambda v: v.lower().startswith("y"),
            "y",
        )
        if not yes:
            raise ConfigError(
                f"{plan.laptop_key.private}: not made (answered no). Fix: pass --key with "
                f"the private key ssh should log in with"
            )
    print(render(write_init(plan)), end="")
    return 0


def render(res: InitResult) -> str:
    """What was written and the next steps, as the user should follow them."""
    plan, req, key = res.plan, res.plan.request, res.laptop_key
    from ..keys import fingerprint

    made = (
        f" (made now, no passphrase: add one with `ssh-keygen -p -f {key.private}`)"
        if key.made
        else ""
    )
    names = ", ".join(p.name for p in res.written) or "nothing new (the same files were there)"
    out = [f"Your laptop's key: {key.private} {fingerprint(key.public_line)}{made}"]
    out.append(f"Wrote {plan.folder} ({_route_words(req)}): {names}")
    if res.backup is not None:
        out.append(f"Backup of the previous config: {res.backup}")
    if res.removed_wheels:
        old = ", ".join(p.name for p in res.removed_wheels)
        out.append(f"Removed the older wheel(s) {old}: the folder holds this version's only")
    out += ["", "Next:"]
    step = 1
    if req.route == "relay":
        out.append(
            f"{step}. Once, on the relay as root, set up its locked-down account "
            f"(`handy-colab help relay`):"
        )
        out.append(f"     {_relay_setup_line(res)} --apply")
        out.append("   then reload sshd as it says. (Skip this if the account already exists.)")
        step += 1
    if req.route == "frp":
        out.append(
            f"{step}. frps must run on {req.frp_server} with frps-setup's files "
            f"(`handy-colab help frp`)."
        )
        step += 1
    drive = f"/content/drive/MyDrive/{plan.folder.name}"
    wheel = res.wheel.name if res.wheel is not None else None
    # The folder's wheel is this very version: the runtime installs it, not an index's.
    install = f"%pip install -q {drive}/{wheel}" if wheel else "%pip install -q handy-colab"
    cell = [
        "from google.colab import drive; drive.mount('/content/drive')",
        install,
        f"import handy_colab; handy_colab.up({drive!r})",
    ]
    out.append(f"{step}. Give the runtime the folder. On Google Colab, either")
    out.append(
        f"   a) upload the folder {plan.folder.name} to the top of your Google Drive (My Drive),"
    )
    out.append("      then run in a notebook cell:")
    out += [f"        {line}" for line in cell]
    secrets = plan.secrets_config
    if secrets is not None:
        out.append("   b) or, without Drive, add Colab secrets (key icon in the side bar; allow")
        out.append("      notebook access):")
        out.append(f"        HANDY_COLAB_PUBLIC_KEYS = {key.public_line}")
        out.append(f"        HANDY_COLAB_CONFIG      = {json.dumps(secrets)}")
        private = _relay_key_file(plan)
        if private is not None:
            out.append(
                f"        HANDY_COLAB_RELAY_KEY   = the whole content of {private} (a private "
                "key: paste it there only, never share it)"
            )
        if wheel:
            out.append(f"      upload {wheel} from the folder with the Files pane (to /content),")
        out.append("      then run in a notebook cell:")
        local = f"%pip install -q /content/{wheel}" if wheel else "%pip install -q handy-colab"
        out += [f"        {local}", "        import handy_colab; handy_colab.up()"]
    else:
        out.append("   (the frp route needs the folder's files: Colab secrets cannot carry them)")
    shell = f"pip install {drive}/{wheel} && " if wheel else ""
    out.append(f"   On the runtime's terminal instead of a cell: {shell}handy-colab up {drive}")
    then = f"pip install <that folder>/{wheel}, then " if wheel else ""
    out.append(
        f"   Elsewhere (Kaggle, a JupyterHub, any shell): copy {plan.folder.name} there and run "
        f"{then}handy-colab up <that folder>"
    )
    if wheel:
        out.append(
            f"   {wheel} is this laptop's handy-colab; its dependencies (asyncssh, websockets;"
        )
        out.append(
            "   Colab already has cryptography and tqdm) come from PyPI, so a runtime without "
            "internet"
        )
        out.append(
            "   needs them installed first, e.g. from a wheelhouse: pip download asyncssh "
            "websockets -d wh"
        )
        out.append("   here, copy wh there, pip install --no-index --find-links wh <the wheel>")
    step += 1
    ident = f"--identity {shlex.quote(str(key.private))}"
    synced = f"handy-colab connect '<the synced Drive>/{plan.folder.name}' {ident}"
    out.append(f"{step}. On this laptop, once `up` is ready:")
    if req.route == "frp" and req.frp_mode != "public":
        out.append("   (frp's private modes need the folder: its secret is there, not in the line)")
        out.append("     with Google Drive for desktop syncing the folder here:")
        out.append(f"     {synced}")
        out.append(f"   (or copy connections/ from the runtime's folder into {plan.folder} and")
        out.append(f"    connect {shlex.quote(str(plan.folder))} {ident})")
    else:
        out.append("     handy-colab connect 'hc1:...' " + ident + "    (the line `up` printed)")
        out.append("   or, when Google Drive for desktop syncs the folder here:")
        out.append(f"     {synced}")
    out.append(f"   then: ssh {req.name}")
    return "\n".join(out) + "\n"


def _route_words(req: InitRequest) -> str:
    if req.route == "cloudflared":
        return "a cloudflared quick tunnel: no account, no server"
    if req.route == "relay":
        where = f"port {req.remote_port}" if req.remote_port else "a port the relay picks"
        if req.mode != "public":
            where = "a socket (private mode)"
        return f"your OpenSSH relay {req.relay_host}, {where}"
    if req.route == "frp":
        return f"your frps {req.frp_server}, {req.frp_mode} mode"
    return f"portmap.io {req.service_url}:{req.service_port}, the seed's format"


def _relay_key_file(plan: InitPlan) -> Path | None:
    from ..client.init import RELAY_KEY

    if plan.request.route == "relay":
        return plan.folder / RELAY_KEY
    if plan.request.route == "portmap" and plan.request.pem is not None:
        return plan.folder / plan.request.pem.name
    return None


def _relay_setup_line(res: InitResult) -> str:
    req = res.plan.request
    assert res.relay_public_line is not None
    argv = ["handy-colab", "relay-setup", "--key", res.relay_public_line]
    argv += ["--account", req.relay_user, "--mode", req.mode, "--name", req.name]
    if req.mode == "public":
        argv += ["--remote-port", str(req.remote_port)]
    else:
        argv += ["--laptop-key", res.laptop_key.public_line]
        if req.socket_path:
            argv += ["--socket-path", req.socket_path]
    return shlex.join(argv)
