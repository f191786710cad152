"""Write ``Host`` blocks and pinned host keys into files the tool owns.

Each runtime's block sits between marker lines, so updating one runtime replaces only its
own block and never touches anything else in the file. The user's ``~/.ssh/config`` only
ever gains one ``Include`` line at the top (with a backup taken first).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..config import CONFIG_FILE, NAME_RE, SEED_README_CONFIG_FILE
from ..connection import PASTE_PREFIX, Descriptor
from ..errors import ClientConfigError, ConfigError, HandyColabError
from ..fsutil import atomic_write, backup, read_text_or_empty
from ..keys import load_private_key
from .laptop import DESCRIPTOR_COMMENT, alias_of, save_descriptor, saved_descriptor

BEGIN = "# >>> handy-colab {name} >>>"
END = "# <<< handy-colab {name} <<<"


def default_paths() -> tuple[Path, Path, Path]:
    ssh_dir = Path.home() / ".ssh"
    return (
        ssh_dir / "config",
        ssh_dir / "config.d" / "handy-colab",
        ssh_dir / "handy-colab_known_hosts",
    )


def _q(path: str) -> str:
    return f'"{path}"' if " " in path else path


def proxy_command(desc: Descriptor, config_file: str, launcher: str | None = None) -> str:
    """ProxyCommand that reaches the runtime's Unix socket on the relay (private mode)."""
    if launcher is None:
        launcher = f"{_q(sys.executable)} -m handy_colab.streamlocal"
    return f"{launcher} -F {_q(config_file)} {desc.relay_alias} {desc.socket_path}"


def frp_launcher() -> str:
    """How connect's ProxyCommand starts the frp visitor (this very interpreter)."""
    return f"{_q(sys.executable)} -m handy_colab.tunnels.frp_visitor"


def ws_launcher(cloudflared_access: bool = False) -> str:
    """How connect's ProxyCommand starts the WebSocket proxy (this very interpreter)."""
    extra = " --cloudflared-access" if cloudflared_access else ""
    return f"{_q(sys.executable)} -m handy_colab.tunnels.websocket{extra}"


def render_host_blocks(
    desc: Descriptor,
    identity: str | None,
    known_hosts: str,
    config_file: str = "~/.ssh/config.d/handy-colab",
    launcher: str | None = None,
    follow: str | None = None,
    frp_profile: str | None = None,
) -> str:
    """The Host block(s) for one runtime: the runtime itself, and its relay in private mode.

    ``launcher``: the ProxyCommand's program (default: this interpreter's module);
    ``follow``: the descriptor a cloudflared ProxyCommand re-reads at each connection;
    ``frp_profile``: the visitor profile of frp's private and p2p modes.
    """
    relay_private = desc.route == "relay" and desc.mode == "private"
    common = [
        f"    UserKnownHostsFile {_q(known_hosts)}",
        "    StrictHostKeyChecking yes",
        "    CheckHostIP no",
        "    UpdateHostKeys no",
    ]
    ident = [f"    IdentityFile {_q(identity)}", "    IdentitiesOnly yes"] if identity else []
    out = []
    if relay_private:
        out += [
            f"Host {desc.relay_alias}",
            f"    HostName {desc.relay_host}",
            f"    Port {desc.relay_port}",
            f"    User {desc.relay_user}",
            f"    HostKeyAlias {desc.relay_alias}",
            *common,
            *ident,
            "",
        ]
    # Everything but public mode goes through a ProxyCommand: no HostName/Port to give.
    where = [f"    HostName {desc.host}", f"    Port {desc.port}"] if desc.mode == "public" else []
    out += [
        f"Host {desc.name}",
        *where,
        f"    User {desc.user}",
        f"    HostKeyAlias {desc.name}",
        *common,
        *ident,
        "    ServerAliveInterval 15",
        "    ServerAliveCountMax 4",
    ]
    if relay_private:
        out.append(f"    ProxyCommand {proxy_command(desc, config_file, launcher)}")
    elif desc.cloudflared:
        from ..tunnels.cloudflared import proxy_command as ws_proxy_command

        cmd = ws_proxy_command(desc.hostname, launcher or ws_launcher(), follow)
        out.append(f"    ProxyCommand {cmd}")
    elif desc.route == "frp" and desc.mode != "public":
        profile = frp_profile or f"~/.ssh/handy-colab-{desc.name}.frp.json"
        out.append(f"    ProxyCommand {launcher or frp_launcher()} {_q(profile)}")
    out += [f"    LocalForward {p} 127.0.0.1:{p}" for p in desc.forwards]
    text = "\n".join(out) + "\n"
    if any(c in text for c in "\r\0") or any(
        not ln.startswith(("Host ", "    ")) for ln in out if ln
    ):
        # Descriptor fields are validated on load; this guards every other caller.
        raise ClientConfigError(
            f"refusing to write an ssh config block for {desc.name!r}: a "
            f"field holds a line break. Fix: rewrite the descriptor with up"
        )
    return text


def replace_block(text: str, name: str, block: str) -> str:
    """Replace (or append) the marked block for ``name``; everything else stays byte for byte."""
    begin, end = BEGIN.format(name=name), END.format(name=name)
    new = f"{begin}\n{block.rstrip()}\n{end}\n"
    pattern = re.compile(rf"^{re.escape(begin)}\n.*?^{re.escape(end)}\n?", re.S | re.M)
    if pattern.search(text):
        return pattern.sub(lambda _m: new, text, count=1)
    if text and not text.endswith("\n"):
        text += "\n"
    sep = "\n" if text.strip() else ""
    return text + sep + new


def address_pattern(host: str, port: int) -> str:
    """How a known_hosts file names host:port (``[host]:port`` unless port 22)."""
    return host if port == 22 else f"[{host}]:{port}"


def known_hosts_lines(desc: Descriptor) -> dict[str, list[str]]:
    entries = {desc.name: [f"{desc.name} {k}" for k in desc.host_keys]}
    if desc.mode == "public" and desc.host and desc.port:
        # Clients that know no HostKeyAlias (PyCharm's sshj, paramiko) look the key up by
        # the address they connect to.
        pattern = address_pattern(desc.host, desc.port)
        entries[pattern] = [f"{pattern} {k}" for k in desc.host_keys]
    if desc.route == "relay" and desc.mode == "private":
        entries[desc.relay_alias] = [f"{desc.relay_alias} {k}" for k in desc.relay_host_keys]
    return entries


def merge_known_hosts(text: str, entries: dict[str, list[str]]) -> str:
    """Replace the lines of our aliases; leave every other line as it was."""
    kept = [ln for ln in text.splitlines() if not ln.split() or ln.split()[0] not in entries]
    for lines in entries.values():
        kept.extend(lines)
    return "\n".join(kept) + "\n"


def write_if_changed(path: Path, new: str, mode: int) -> Path | None:
    """Atomically write ``new``; back up the previous content first. Returns the backup."""
    # A dotfiles-managed config is often a symlink: update its target, keep the link.
    path = path.resolve() if path.is_symlink() else path
    old = read_text_or_empty(path)
    if old == new and path.exists():
        return None
    bak = backup(path) if old else None
    keep_mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else mode
    atomic_write(path, new, mode=keep_mode)
    return bak


def _include_targets(line: str) -> list[str]:
    parts = line.strip().split(None, 1)
    if len(parts) != 2 or parts[0].lower() != "include":
        return []
    try:
        return shlex.split(parts[1], comments=True)
    except ValueError:
        return parts[1].split()


def ensure_include(user_config: Path, managed: Path) -> Path | None:
    """Put ``Include <managed>`` at the top of the user's ssh config if absent."""
    text = read_text_or_empty(user_config)
    target = str(managed)
    home = str(Path.home())
    variants = {target}
    if target.startswith(home + "/"):
        variants.add("~" + target[len(home) :])
    if any(v in _include_targets(line) for line in text.splitlines() for v in variants):
        return None
    # It must come first: an Include after a Host line would only apply inside that Host.
    new = f"Include {_q(target)}\n" + ("\n" + text if text else "")
    return write_if_changed(user_config, new, 0o600)


@dataclass
class ConnectResult:
    name: str
    config_file: Path
    known_hosts: Path
    identity: str | None
    include_in: Path | None
    backups: list[Path] = field(default_factory=list)
    follows: Path | None = None  # the descriptor a quick tunnel's ProxyCommand re-reads
    quick: bool = False  # a quick tunnel: its hostname changes when it restarts


def _resolve_source(source: Path, name: str | None) -> tuple[Descriptor, Path | None, Path | None]:
    """Find the descriptor; also return the config folder (if given one) and the file
    (None for a pasted hc1: line)."""
    if str(source).startswith(PASTE_PREFIX):
        return Descriptor.from_paste(str(source)), None, None
    if source.is_dir():
        conn = source / "connections"
        if name:
            path = conn / f"{name}.json"
            return Descriptor.load(path), source, path
        found = sorted(conn.glob("*.json")) if conn.is_dir() else []
        if not found:
            raise ConfigError(
                f"{conn}: no connection descriptor found. Fix: run `handy-colab up "
                f"{source}` on the runtime first (it writes connections/NAME.json)"
            )
        if len(found) > 1:
            names = ", ".join(p.stem for p in found)
            raise ConfigError(f"{conn}: several runtimes ({names}). Fix: pick one with --name")
        return Descriptor.load(found[0]), source, found[0]
    if source.is_file() and source.name == CONFIG_FILE:
        return _resolve_source(source.parent, name)
    return Descriptor.load(source), None, source


def _prepare_identity(
    identity: Path | None, desc: Descriptor, folder: Path | None, key_dir: Path
) -> str | None:
    if identity is None and folder is not None and desc.identity_hint:
        cand = folder / desc.identity_hint
        if cand.is_file():
            identity = cand
    if identity is None:
        return None
    identity = identity.expanduser()
    if not identity.is_file():
        raise ClientConfigError(
            f"{identity}: identity file not found. Fix: pass --identity with "
            f"the private key that may log into the runtime"
        )
    open_perms = stat.S_IMODE(identity.stat().st_mode) & 0o077
    if open_perms or (folder is not None and identity.parent == folder):
        # ssh refuses keys readable by others, and a Drive copy may vanish: keep a 0600 copy.
        key = load_private_key(identity)
        if key is None:
            raise ClientConfigError(
                f"{identity}: not an SSH private key. Fix: pass the private "
                f"key (not the .pub) with --identity"
            )
        dest = key_dir / f"handy-colab-{desc.name}.key"
        atomic_write(dest, key.data, mode=0o600)
        return str(dest)
    return str(identity.resolve())


def _frp_profile(
    desc: Descriptor, runtime_name: str, folder: Path | None, desc_path: Path | None, key_dir: Path
) -> Path | None:
    """frp's private and p2p modes: the visitor needs frps's token and the proxy's secret,
    which only the config folder holds. Copied (0600) beside the pinned known_hosts."""
    if desc.route != "frp" or desc.mode == "public":
        return None
    if folder is None and desc_path is not None:
        # connections/NAME.json inside a config folder: the folder is two levels up.
        cand = desc_path.parent.parent
        if (cand / CONFIG_FILE).is_file() or (cand / SEED_README_CONFIG_FILE).is_file():
            folder = cand
    if folder is None:
        raise ClientConfigError(
            f"frp {desc.mode} mode needs the proxy's secret, which only the config folder "
            f"holds. Fix: run connect with the config folder (e.g. the synced Drive folder) "
            f"instead of the descriptor alone"
        )
    from ..config import load_config
    from ..tunnels.frp import read_secret
    from ..tunnels.frp_visitor import write_profile

    settings = load_config(folder, runtime_name).frp_settings
    if settings.secret_file is None or not settings.secret_file.is_file():
        raise ClientConfigError(
            f"{folder}: holds no frp secret ({settings.secret_file}). Fix: run `handy-colab up` "
            f"on the runtime first (it makes the secret), and let the folder sync"
        )
    try:
        token = read_secret(settings.token_file, "token") if settings.token_file else None
        secret = read_secret(settings.secret_file, "secret")
    except HandyColabError as exc:
        raise ClientConfigError(str(exc)) from None
    ca = settings.ca_file.read_text() if settings.ca_file else None
    path = key_dir / f"handy-colab-{desc.name}.frp.json"
    write_profile(path, desc.frp, desc.mode, token, secret, ca)
    return path


def connect(
    source: Path,
    *,
    identity: Path | None = None,
    ssh_config: Path | None = None,
    known_hosts: Path | None = None,
    name: str | None = None,
    cloudflared_access: bool = False,
) -> ConnectResult:
    if name is not None and not NAME_RE.match(name):
        raise ConfigError(
            f"--name '{name}' is not a valid runtime name. Fix: use letters, "
            f"digits, '.', '_' or '-'"
        )
    pasted = str(source).startswith(PASTE_PREFIX)
    desc, folder, desc_path = _resolve_source(
        source if pasted else source.expanduser().resolve(), name
    )
    runtime_name = desc.name
    # VS Code lowercases an alias it reopens from "Recent": every alias we write is lowercase.
    desc = dataclasses.replace(desc, name=alias_of(desc.name))
    user_config, managed, default_known = default_paths()
    include_in: Path | None = None
    if ssh_config is not None:
        managed = ssh_config.expanduser().resolve()
    else:
        include_in = user_config
    known = known_hosts.expanduser().resolve() if known_hosts else default_known
    try:
        for d in {managed.parent, known.parent}:
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        ident = _prepare_identity(identity, desc, folder, known.parent)
        backups: list[Path] = []
        profile = _frp_profile(desc, runtime_name, folder, desc_path, known.parent)
        pins = known_hosts_lines(desc)
        before = saved_descriptor(desc.name, known)
        if before is not None:
            # An address this runtime had before (a new port, say) is not left pinned.
            pins |= {k: [] for k in known_hosts_lines(before) if k not in pins}
        saved = save_descriptor(desc, known)
        block = render_host_blocks(
            desc,
            ident,
            str(known),
            str(managed),
            launcher=ws_launcher(cloudflared_access) if desc.cloudflared else None,
            # A quick tunnel's name changes: the ProxyCommand re-reads this file each time.
            follow=str(desc_path) if desc.mode == "quick" and desc_path else None,
            frp_profile=str(profile) if profile else None,
        )
        block = f"{DESCRIPTOR_COMMENT}{saved}\n{block}"
        bak = write_if_changed(
            managed, replace_block(read_text_or_empty(managed), desc.name, block), 0o600
        )
        backups += [bak] if bak else []
        bak = write_if_changed(known, merge_known_hosts(read_text_or_empty(known), pins), 0o600)
        backups += [bak] if bak else []
        if include_in is not None:
            bak = ensure_include(include_in, managed)
            backups += [bak] if bak else []
    except OSError as exc:
        raise ClientConfigError(
            f"{exc.filename}: cannot write ({exc.strerror}). Fix: check "
            f"permissions, or pass --ssh-config/--known-hosts elsewhere"
        ) from None
    os.chmod(managed, stat.S_IMODE(managed.stat().st_mode) & ~0o022)
    follows = desc_path if desc.mode == "quick" else None
    return ConnectResult(
        desc.name, managed, known, ident, include_in, backups, follows, desc.mode == "quick"
    )
