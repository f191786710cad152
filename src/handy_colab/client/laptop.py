"""What the laptop knows of its runtimes: the aliases `connect` wrote, and their descriptors.

`connect` keeps a copy of each runtime's descriptor beside the pinned known_hosts
(``~/.ssh/handy-colab-runtimes/ALIAS.json``) and names it in the runtime's Host block, so
`list`, `code` and `forward` work from the ssh config file alone, whatever folder or pasted
line the descriptor came from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..descriptor import Descriptor
from ..errors import ClientConfigError, HandyColabError
from ..fsutil import atomic_write, read_text_or_empty
from ..sshquote import host_options, unquote_proxy

RUNTIMES_DIR = "handy-colab-runtimes"
DESCRIPTOR_COMMENT = "# handy-colab descriptor: "
_BLOCK_RE = re.compile(
    r"^# >>> handy-colab (?P<name>\S+) >>>\n(?P<body>.*?)^# <<< handy-colab (?P=name) <<<",
    re.S | re.M,
)


def default_ssh_config() -> Path:
    return Path.home() / ".ssh" / "config.d" / "handy-colab"


def alias_of(name: str) -> str:
    """The ssh Host alias of a runtime: lowercase, as VS Code reopens it from "Recent"."""
    return name.lower()


def descriptor_copy(alias: str, known_hosts: Path) -> Path:
    """Where the laptop keeps its copy of ``alias``'s descriptor."""
    return known_hosts.parent / RUNTIMES_DIR / f"{alias}.json"


def save_descriptor(desc: Descriptor, known_hosts: Path) -> Path:
    """Keep the laptop's copy of ``desc`` (no secrets in it) beside the pinned host keys."""
    path = descriptor_copy(desc.name, known_hosts)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic_write(path, desc.to_json(), mode=0o600)
    return path


def saved_descriptor(alias: str, known_hosts: Path) -> Descriptor | None:
    """The copy an earlier `connect` kept (None: none, or unreadable)."""
    try:
        return Descriptor.load(descriptor_copy(alias, known_hosts))
    except HandyColabError:
        return None


@dataclass
class KnownRuntime:
    alias: str
    descriptor: Descriptor | None  # None: written by an older connect, or the copy is gone
    config_file: Path
    descriptor_file: Path | None
    options: dict[str, str]  # the runtime's Host block, lowercase keys (first value wins)

    @property
    def known_hosts(self) -> Path | None:
        value = self.options.get("userknownhostsfile")
        return Path(value).expanduser() if value else None


def known_runtimes(ssh_config: Path | None = None) -> list[KnownRuntime]:
    """Every runtime `connect` wrote into ``ssh_config`` (default: the managed file)."""
    config = (ssh_config or default_ssh_config()).expanduser()
    found = []
    for m in _BLOCK_RE.finditer(read_text_or_empty(config)):
        alias, body = m["name"], m["body"]
        desc_file = None
        for line in body.splitlines():
            if line.startswith(DESCRIPTOR_COMMENT):
                desc_file = Path(line[len(DESCRIPTOR_COMMENT) :].strip())
        desc = None
        if desc_file is not None:
            try:
                desc = Descriptor.load(desc_file)
            except HandyColabError:
                desc = None
        found.append(KnownRuntime(alias, desc, config, desc_file, host_options(body, alias)))
    return found


def find_runtime(name: str, ssh_config: Path | None = None) -> KnownRuntime:
    """The runtime ``name`` (any case) that `connect` wrote, or a one-line error naming those
    it knows."""
    known = known_runtimes(ssh_config)
    for rt in known:
        if rt.alias == alias_of(name):
            return rt
    where = ssh_config or default_ssh_config()
    have = ", ".join(rt.alias for rt in known) or "none"
    raise ClientConfigError(
        f"{where}: no runtime '{name}' (known: {have}). Fix: run `handy-colab connect "
        f"'hc1:...'` (or with the config folder) on this laptop first"
    )


def proxy_argv(rt: KnownRuntime) -> list[str] | None:
    """The runtime's ProxyCommand as an argv (None: ssh connects straight to HostName/Port).

    Our ProxyCommands hold no shell syntax (Windows' ssh runs them without a shell), so a
    POSIX split is exactly what ssh's ``exec`` would run.
    """
    cmd = rt.options.get("proxycommand")
    if not cmd or cmd == "none":
        return None
    try:
        return unquote_proxy(cmd)
    except ValueError:
        raise ClientConfigError(
            f"{rt.config_file}: the ProxyCommand of {rt.alias} cannot be read ({cmd!r:.60}). "
            f"Fix: run `handy-colab connect` for it again"
        ) from None
