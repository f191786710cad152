"""The descriptor: what the laptop needs to reach a runtime, as a file or one pasted line.

``up`` writes it to ``DIR/connections/NAME.json`` (connection.py builds it) and prints it as an
``hc1:`` line; ``connect`` reads either back, validating every field, since they end up in the
laptop's ssh config and known_hosts. It holds no secret: host keys are public and the identity
is only named, never copied into it.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import paste
from .choices import NAME_RE, RUNTIME_NAME_RULE, SOCKET_PATH_RE, runtime_name_problem
from .configfields import as_port
from .errors import ConfigError
from .keys import parse_public_key_line
from .paste import PASTE_PREFIX as PASTE_PREFIX
from .paste import is_paste as is_paste
from .tunnels.cloudflared_config import valid_hostname

# Format 1: the relay route. Format 2 adds the cloudflared route; relay descriptors are still
# written as format 1, so laptops with an older handy-colab keep reading them.
FORMAT = 2
RELAY_FORMAT = 1
# Fields ``from_dict`` defaults when absent: the pasted line leaves them out when they hold
# just that (shorter to paste; the file keeps every field for older laptops).
_PASTE_DEFAULTS: dict[str, Any] = {
    "relay_host_keys": [],
    "python": "",
    "home": "",
    "workdir": "",
    "forwards": [],
    "identity_hint": "",
    "socket_path": "",
    "hostname": "",
    "frp": {},
    "version": "",
}
# Account names on the runtime and the relay: no '%' (an ssh token), '@' or ':'.
USER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")
_LABEL_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
# identity_hint: a key file directly in the config folder, by name only.
_FILE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
# The handy-colab version that wrote it: the laptop compares it with its own. Strict, since
# it is printed in a warning: digits and dots, then a short pre/post/local suffix.
VERSION_RE = re.compile(r"^[0-9]+(\.[0-9]+){1,3}([a-z0-9.+-]{0,20})?$")
_MAX_FORWARDS = 64
_FILE_MAX = 256 * 1024  # a descriptor file is about 2 KiB


def host_problem(value: object) -> str | None:
    """Why ``value`` is not an address the laptop may pin and connect to (None: it is).

    A DNS name of two labels or more, or an IP literal (IPv6 without brackets). A single
    label is refused: aliases are single labels, so an address pin can never be an alias's.
    """
    if not isinstance(value, str) or not value:
        return "is missing"
    if "%" not in value:
        try:
            ipaddress.ip_address(value)
            return None
        except ValueError:
            pass
    labels = value.split(".")
    if len(value) > 253 or len(labels) < 2 or not all(_LABEL_RE.match(x) for x in labels):
        return "must be a DNS name with a dot (letters, digits, '-') or an IP address"
    if labels[-1].isdigit():
        return "is neither a DNS name nor an IP address"
    return None


def path_problem(value: object) -> str | None:
    """A path on the runtime (python, home, workdir): empty, or absolute and printable."""
    if not isinstance(value, str):
        return "must be a string"
    if value and (not value.startswith("/") or len(value) > 4096 or _CONTROL_RE.search(value)):
        return "must be an absolute path of printable characters"
    return None


@dataclass
class Descriptor:
    name: str
    # relay route: "public" | "private"; cloudflared: "quick" | "named"; frp: + "p2p"
    mode: str
    user: str  # login user on the runtime
    host_keys: list[str]  # the runtime's host keys, "type base64"
    relay_host: str = ""
    relay_port: int = 0
    relay_user: str = ""  # private mode: the relay account the laptop's proxy logs into
    relay_host_keys: list[str] = field(default_factory=list)
    public_host: str = ""
    remote_port: int = 0
    python: str = ""  # the interpreter sessions get first on PATH (the notebook's)
    home: str = ""
    workdir: str = ""  # where sessions start (the notebook's directory)
    forwards: list[int] = field(default_factory=list)
    identity_hint: str = ""  # file name of the key in the config folder, if any
    socket_path: str = ""  # private mode: the runtime's Unix socket on the relay
    route: str = "relay"  # "relay" | "cloudflared" | "frp"
    hostname: str = ""  # cloudflared: the tunnel's public hostname (a quick one changes)
    # frp: server, port, proxy, server_name, verified, stun (no secrets: those stay in the
    # config folder, which `connect` reads for the private modes)
    frp: dict[str, Any] = field(default_factory=dict)
    format: int = RELAY_FORMAT
    # The runtime's handy-colab version ("" from one too old to say; laptops that predate
    # the field ignore it, as they ignore every field they do not know).
    version: str = ""

    @property
    def cloudflared(self) -> bool:
        return self.route == "cloudflared"

    @property
    def via_proxy_command(self) -> bool:
        """ssh reaches the runtime through a ProxyCommand (no HostName/Port to give)."""
        return self.mode != "public"

    # Where ssh connects for the runtime itself.
    @property
    def host(self) -> str:
        if self.cloudflared:
            return self.hostname
        return self.public_host if self.mode == "public" else "127.0.0.1"

    @property
    def port(self) -> int:
        return 443 if self.cloudflared else self.remote_port

    @property
    def reach(self) -> str:
        """How the laptop reaches the runtime, in words."""
        if self.cloudflared:
            return f"through Cloudflare ({self.mode} tunnel https://{self.hostname})"
        if self.route == "frp":
            return (
                f"through frps {self.frp.get('server')}:{self.frp.get('port')} ({self.mode} mode)"
            )
        return f"through the relay ({self.mode} mode)"

    @property
    def start_dir(self) -> str:
        """Where sessions start: the notebook's directory (older descriptors: the home)."""
        return self.workdir or self.home

    @property
    def relay_alias(self) -> str:
        return f"{self.name}-relay"

    def to_paste(self) -> str:
        """The descriptor as one line to paste into `handy-colab connect` (no secrets in it)."""
        data = {
            k: v
            for k, v in json.loads(self.to_json()).items()
            if not (k in _PASTE_DEFAULTS and v == _PASTE_DEFAULTS[k])
        }
        return paste.encode(data)

    @classmethod
    def from_paste(cls, text: str) -> Descriptor:
        """A pasted ``hc1:...`` line (as paste.py unwraps it), validated exactly as a
        descriptor file is."""
        return cls.from_dict(paste.decode(text), "the pasted hc1: line")

    def to_json(self) -> str:
        data = asdict(self)
        if self.route == "relay":
            # Exactly the format-1 fields: older laptops refuse none of them.
            for fld in ("route", "hostname", "frp"):
                data.pop(fld)
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> Descriptor:
        """Validate every field: they end up in the laptop's ssh config and known_hosts."""

        def bad(fld: str, problem: str) -> ConfigError:
            return ConfigError(
                f"{source}: field '{fld}' {problem}. Fix: use the "
                f"connections/NAME.json written by `handy-colab up`, unedited"
            )

        fmt = data.get("format", FORMAT)
        if isinstance(fmt, bool) or not isinstance(fmt, int):
            raise bad("format", "must be a number")
        if fmt > FORMAT:
            raise ConfigError(
                f"{source}: descriptor format {fmt} is newer than this "
                f"handy-colab understands. Fix: upgrade handy-colab on the laptop"
            )
        route = data.get("route", "relay")
        if route not in ("relay", "cloudflared", "frp"):
            raise bad("route", f"must be relay, cloudflared or frp, not {route!r}")
        relay_route = route == "relay"
        # Each allow-list keeps a descriptor to its own alias: a space, newline, quote or
        # '%' here would add ssh directives, a dotted name would shadow a real host.
        name = data.get("name")
        problem = runtime_name_problem(name) if isinstance(name, str) else "is missing"
        if problem is not None:
            raise bad("name", f"{problem} ({name!r:.60}); a runtime name is {RUNTIME_NAME_RULE}")
        if not isinstance(data.get("mode"), str):
            raise bad("mode", "is missing")
        for fld in ("user", "relay_user") if relay_route else ("user",):
            value = data.get(fld)
            if not isinstance(value, str) or not USER_RE.match(value):
                raise bad(fld, f"is not an account name ({value!r:.60})")
        for fld in ("relay_host", "public_host") if relay_route else ():
            problem = host_problem(data.get(fld))
            if problem is not None:
                raise bad(fld, f"{problem} ({data.get(fld)!r:.60})")
        modes = {
            "relay": ("public", "private"),
            "cloudflared": ("quick", "named"),
            "frp": ("public", "private", "p2p"),
        }[route]
        if data["mode"] not in modes:
            raise bad("mode", f"must be {' or '.join(modes)}, not {data['mode']!r}")
        hostname = ""
        frp: dict[str, Any] = {}
        if relay_route:
            _check_relay_fields(data, bad)
        elif route == "frp":
            frp = _check_frp_fields(data, bad)
        else:
            raw_host = data.get("hostname")
            checked = valid_hostname(raw_host) if isinstance(raw_host, str) else None
            if checked is None or checked != raw_host:
                raise bad("hostname", f"must be a DNS host name ({raw_host!r:.60})")
            hostname = checked
        fwd = data.get("forwards", [])
        if (
            not isinstance(fwd, list)
            or len(fwd) > _MAX_FORWARDS
            or any(as_port(p, strict=True) is None for p in fwd)
        ):
            raise bad("forwards", f"must be a list of at most {_MAX_FORWARDS} port numbers")
        keys: dict[str, list[str]] = {}
        key_fields = (("host_keys", True), ("relay_host_keys", False))
        for fld, required in key_fields if relay_route else key_fields[:1]:
            value = data.get(fld, [])
            if not isinstance(value, list) or (required and not value):
                raise bad(fld, "must list public host keys")
            keys[fld] = []
            for entry in value:
                parsed = (
                    parse_public_key_line(entry, source)
                    if isinstance(entry, str)
                    and "\n" not in entry
                    and "\r" not in entry
                    and len(entry.split()) in (2, 3)
                    else None
                )
                if parsed is None:
                    raise bad(fld, f"holds something that is not a public key ({entry!r:.40})")
                keys[fld].append(parsed.blob)
        for fld in ("python", "home", "workdir"):
            problem = path_problem(data.get(fld, ""))
            if problem is not None:
                raise bad(fld, f"{problem} ({data.get(fld)!r:.60})")
        hint = data.get("identity_hint", "")
        if not isinstance(hint, str) or (hint and not _FILE_NAME_RE.match(hint)):
            raise bad("identity_hint", f"must be a plain file name ({hint!r:.60})")
        version = data.get("version", "")
        if not isinstance(version, str) or (version and not VERSION_RE.match(version)):
            raise bad("version", f"is not a version number ({version!r:.60})")
        common = {
            "name": data["name"],
            "mode": data["mode"],
            "user": data["user"],
            "host_keys": keys["host_keys"],
            "python": data.get("python", ""),
            "home": data.get("home", ""),
            "workdir": data.get("workdir", ""),
            "forwards": list(fwd),
            "identity_hint": data.get("identity_hint", ""),
            "format": fmt,
            "version": version,
        }
        if route == "cloudflared":
            return cls(**common, route="cloudflared", hostname=hostname)
        if route == "frp":
            public = data["mode"] == "public"
            return cls(
                **common,
                route="frp",
                frp=frp,
                public_host=frp["server"] if public else "",
                remote_port=data["remote_port"] if public else 0,
            )
        return cls(
            **common,
            relay_host=data["relay_host"],
            relay_port=data["relay_port"],
            relay_user=data["relay_user"],
            relay_host_keys=keys["relay_host_keys"],
            public_host=data["public_host"],
            remote_port=data["remote_port"],
            socket_path=data.get("socket_path", "") or "",
        )

    @classmethod
    def load(cls, path: Path) -> Descriptor:
        try:
            with path.open("rb") as f:
                raw = f.read(_FILE_MAX + 1)
            if len(raw) > _FILE_MAX:
                raise ValueError(f"larger than {_FILE_MAX // 1024} KiB")
            data = json.loads(raw)
        except RecursionError:
            raise ConfigError(
                f"{path}: not a descriptor (nested too deeply). Fix: use connections/NAME.json"
            ) from None
        except FileNotFoundError:
            raise ConfigError(
                f"{path}: descriptor not found. Fix: run `handy-colab up` on the "
                f"runtime first; it writes connections/NAME.json"
            ) from None
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"{path}: cannot read the descriptor ({exc}). Fix: copy it again "
                f"from the runtime's config folder"
            ) from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: not a descriptor object. Fix: use connections/NAME.json")
        return cls.from_dict(data, str(path))


def _check_relay_fields(data: dict[str, Any], bad: Callable[[str, str], ConfigError]) -> None:
    """The relay route's ports and socket path (the token fields are checked by the caller)."""
    for fld in ("relay_port", "remote_port"):
        value = data.get(fld)
        zero_ok = fld == "remote_port" and data["mode"] == "private"
        if as_port(value, allow_zero=zero_ok, strict=True) is None:
            raise bad(fld, f"must be a port number, not {value!r}")
    sock = data.get("socket_path", "")
    if data["mode"] == "private" and (not isinstance(sock, str) or not SOCKET_PATH_RE.match(sock)):
        raise bad("socket_path", f"must be an absolute path without spaces ({sock!r})")


_HOSTPORT_RE = re.compile(r"^[A-Za-z0-9._-]{1,253}:[0-9]{1,5}$")


def _check_frp_fields(
    data: dict[str, Any], bad: Callable[[str, str], ConfigError]
) -> dict[str, Any]:
    """The frp route's fields: they become ssh config (public mode) and the laptop's visitor."""
    frp = data.get("frp")
    if not isinstance(frp, dict):
        raise bad("frp", "must be an object")
    for key in ("server", "server_name"):
        problem = host_problem(frp.get(key))
        if problem is not None:
            raise bad(f"frp.{key}", f"{problem} ({frp.get(key)!r:.60})")
    if as_port(frp.get("port"), strict=True) is None:
        raise bad("frp.port", f"must be a port number, not {frp.get('port')!r}")
    if not isinstance(frp.get("proxy"), str) or not NAME_RE.match(frp["proxy"]):
        raise bad("frp.proxy", f"is not a valid proxy name ({frp.get('proxy')!r:.60})")
    if not isinstance(frp.get("stun"), str) or not _HOSTPORT_RE.match(frp["stun"]):
        raise bad("frp.stun", f"is not HOST:PORT ({frp.get('stun')!r:.60})")
    if not isinstance(frp.get("verified"), bool):
        raise bad("frp.verified", "must be true or false")
    if data["mode"] == "public" and as_port(data.get("remote_port"), strict=True) is None:
        raise bad("remote_port", f"must be a port number, not {data.get('remote_port')!r}")
    return {k: frp[k] for k in ("server", "port", "proxy", "server_name", "verified", "stun")}
