"""Write ``Host`` blocks and pinned host keys into files the tool owns.

Each runtime's block sits between marker lines, so updating one runtime replaces only its
own block and never touches anything else in the file. The user's ``~/.ssh/config`` only
ever gains one ``Include`` line at the top (with a backup taken first).
"""

from __future__ import annotations

import contextlib
import re
import shlex
import stat
import sys
import zlib
from pathlib import Path

from ..descriptor import Descriptor
from ..errors import ClientConfigError
from ..fsutil import atomic_write, backup, read_text_or_empty
from ..sshquote import config_word, proxy_line, proxy_word
from .windows import fwd_slashes, include_line

BEGIN = "# >>> handy-colab {name} >>>"
END = "# <<< handy-colab {name} <<<"


def default_paths() -> tuple[Path, Path, Path]:
    ssh_dir = Path.home() / ".ssh"
    return (
        ssh_dir / "config",
        ssh_dir / "config.d" / "handy-colab",
        ssh_dir / "handy-colab_known_hosts",
    )


def _path_word(path: str, windows: bool = False) -> str:
    """A path for IdentityFile/UserKnownHostsFile (on Windows: forward slashes, quoted)."""
    word = config_word(fwd_slashes(path) if windows else path)
    return f'"{word}"' if windows and not word.startswith('"') else word


def _python() -> str:
    """This interpreter, as the first word of a ProxyCommand."""
    return proxy_word(sys.executable, "the Python interpreter's path")


def proxy_command(
    desc: Descriptor,
    config_file: str,
    launcher: str | None = None,
    windows: bool = False,
    hold_dir: str | None = None,
) -> str:
    """Private mode's ProxyCommand, to the runtime's Unix socket on the relay (the relay's
    Host block in ``config_file``). With ``hold_dir``: through a relay connection OpenSSH
    holds between sessions (relayhop.py), tagged with the relay's address, account and host
    keys (a relay that changes gets a new one); else over the proxy's own asyncssh
    connection, a direct-streamlocal channel piped to stdio (streamlocal.py)."""
    if hold_dir is not None and launcher is None and not windows:
        return proxy_line(hop_argv(desc, config_file, hold_dir))
    if config_file.startswith("~/") and proxy_word(config_file[2:]) == config_file[2:]:
        cfg = config_file  # the printed block's default: unquoted, for the shell's ~
    else:
        cfg = proxy_word(fwd_slashes(config_file) if windows else config_file, windows=windows)
    if launcher is None:
        launcher = f"{_python()} -m handy_colab.streamlocal"
    where = proxy_line([desc.relay_alias, desc.socket_path])
    return f"{launcher} -F {cfg} {where}"


def hop_argv(desc: Descriptor, config_file: str, hold_dir: str) -> list[str]:
    """relayhop.py's command line for this runtime (its flags may come anywhere after the
    script: `connect` adds ``--prestart``)."""
    from . import relayhop

    relay = [desc.relay_host, str(desc.relay_port), desc.relay_user]
    tag = f"{zlib.crc32(chr(0).join(relay + sorted(desc.relay_host_keys)).encode()):08x}"
    script = [sys.executable, "-I", "-S", relayhop.__file__]
    where = [desc.relay_alias, desc.socket_path]
    return [*script, "--dir", hold_dir, "--tag", tag, "-F", config_file, *where]


def frp_launcher() -> str:
    """How connect's ProxyCommand starts the frp visitor (this very interpreter)."""
    return f"{_python()} -m handy_colab.tunnels.frp_visitor"


def ws_launcher(cloudflared_access: bool = False) -> str:
    """How connect's ProxyCommand starts the WebSocket proxy (this very interpreter)."""
    extra = " --cloudflared-access" if cloudflared_access else ""
    return f"{_python()} -m handy_colab.tunnels.websocket{extra}"


def ws_proxy_command(
    hostname: str, launcher: str, descriptor: str | None = None, windows: bool = False
) -> str:
    """The cloudflared route's ProxyCommand: opens wss://HOSTNAME/ (no cloudflared on the
    laptop); with ``descriptor``, it re-reads the hostname there at each connection."""
    word = proxy_word(descriptor, "the descriptor's path", windows) if descriptor else ""
    follow = f" --descriptor {word}" if descriptor else ""
    return f"{launcher}{follow} {proxy_word(hostname)}"


def render_host_blocks(
    desc: Descriptor,
    identity: str | None,
    known_hosts: str,
    config_file: str = "~/.ssh/config.d/handy-colab",
    launcher: str | None = None,
    follow: str | None = None,
    frp_profile: str | None = None,
    windows: bool = False,
    hold_dir: str | None = None,
) -> str:
    """The Host block(s) for one runtime: the runtime itself, and its relay in private mode.

    ``launcher``: the ProxyCommand's program (default: this interpreter's module);
    ``follow``: the descriptor a cloudflared ProxyCommand re-reads at each connection;
    ``frp_profile``: the visitor profile of frp's private and p2p modes;
    ``windows``: paths as Windows' OpenSSH reads them (client/windows.py);
    ``hold_dir``: private mode's held relay connections live there (relayhop.py).
    """

    def fmt(path: str) -> str:
        return _path_word(path, windows)

    relay_private = desc.route == "relay" and desc.mode == "private"
    common = [
        f"    UserKnownHostsFile {fmt(known_hosts)}",
        "    StrictHostKeyChecking yes",
        "    CheckHostIP no",
        "    UpdateHostKeys no",
    ]
    ident = [f"    IdentityFile {fmt(identity)}", "    IdentitiesOnly yes"] if identity else []
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
        cmd = proxy_command(desc, config_file, launcher, windows, hold_dir)
        out.append(f"    ProxyCommand {cmd}")
    elif desc.cloudflared:
        follow = fwd_slashes(follow) if windows and follow else follow
        cmd = ws_proxy_command(desc.hostname, launcher or ws_launcher(), follow, windows)
        out.append(f"    ProxyCommand {cmd}")
    elif desc.route == "frp" and desc.mode != "public":
        # The printed block's default (no file yet): left unquoted for the shell's ~.
        prof = f"~/.ssh/handy-colab-{desc.name}.frp.json"
        if frp_profile:
            path = fwd_slashes(frp_profile) if windows else frp_profile
            prof = proxy_word(path, "the frp profile", windows)
        out.append(f"    ProxyCommand {launcher or frp_launcher()} {prof}")
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


def ensure_include(user_config: Path, managed: Path, windows: bool = False) -> Path | None:
    """Put ``Include <managed>`` at the top of the user's ssh config if absent (on Windows,
    relative to ~/.ssh: Windows' OpenSSH 7.7 misreads absolute ones)."""
    text = read_text_or_empty(user_config)
    target = str(managed)
    home = str(Path.home())
    variants = {target, fwd_slashes(target)}
    if target.startswith(home + "/"):
        variants.add("~" + target[len(home) :])
    with contextlib.suppress(ValueError):
        variants.add(fwd_slashes(managed.relative_to(user_config.parent)))
    if any(v in _include_targets(line) for line in text.splitlines() for v in variants):
        return None
    # It must come first: an Include after a Host line would only apply inside that Host.
    if windows:
        line = include_line(managed, user_config.parent)
    else:
        line = f"Include {config_word(target, 'the managed ssh config', expands=False)}"
    new = f"{line}\n" + ("\n" + text if text else "")
    return write_if_changed(user_config, new, 0o600)
