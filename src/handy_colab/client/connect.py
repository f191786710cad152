"""`connect`: the laptop's ssh config for one runtime, from its descriptor.

Writes the runtime's Host block into the managed file, pins its host keys, keeps a copy of
the descriptor, and puts one ``Include`` line at the top of the user's ``~/.ssh/config``;
for Windows' OpenSSH (``client_os="windows"``) every path and ProxyCommand as it accepts
them (client/windows.py).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..choices import (
    CONFIG_FILE,
    RUNTIME_NAME_RULE,
    SEED_README_CONFIG_FILE,
    runtime_name_problem,
)
from ..descriptor import Descriptor, is_paste
from ..errors import AliasConflictError, ClientConfigError, ConfigError, HandyColabError
from ..fsutil import atomic_write, read_text_or_empty
from ..keys import load_private_key
from ..sshquote import check_printable
from . import pins as pinning
from . import relayhop
from . import windows as win
from .laptop import (
    DESCRIPTOR_COMMENT,
    alias_of,
    descriptor_copy,
    save_descriptor,
    saved_descriptor,
)
from .sshconfig import (
    default_paths,
    ensure_include,
    hop_argv,
    render_host_blocks,
    replace_block,
    write_if_changed,
    ws_launcher,
)

CLIENT_OSES = ("linux", "macos", "windows")
log = logging.getLogger(__name__)


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
    notes: list[str] = field(default_factory=list)  # things the user should do or know


def _resolve_source(source: Path, name: str | None) -> tuple[Descriptor, Path | None, Path | None]:
    """Find the descriptor; also return the config folder (if given one) and the file
    (None for a pasted hc1: line)."""
    if is_paste(str(source)):
        return Descriptor.from_paste(str(source)), None, None
    if source.is_dir():
        conn = source / "connections"
        if name:
            path = conn / f"{name}.json"
            return Descriptor.load(path), source, path
        found = [p for p in sorted(conn.glob("*.json")) if _plain_file(p)] if conn.is_dir() else []
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


def _plain_file(path: Path) -> bool:
    """Whether a file in connections/ has a plain runtime name: anything else (a name
    with spaces, quotes, `$(...)`, `%`) was not written by `up`, and is never used."""
    if runtime_name_problem(path.stem) is None and path.is_file() and not path.is_symlink():
        return True
    log.warning("%s: skipped: not a descriptor `up` writes (its name is not a runtime name)", path)
    return False


# What connect will write once every check has passed: (path, content, mode).
Write = tuple[Path, "str | bytes", int]


def _prepare_identity(
    identity: Path | None, desc: Descriptor, folder: Path | None, key_dir: Path
) -> tuple[str | None, Write | None]:
    """The IdentityFile to name, and the private copy to make of it (if one is needed)."""
    if identity is None and folder is not None and desc.identity_hint:
        cand = folder / desc.identity_hint
        if cand.is_file():
            identity = cand
    if identity is None:
        return None, None
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
        return str(dest), (dest, key.data, 0o600)
    return str(identity.resolve()), None


def _frp_profile(
    desc: Descriptor, runtime_name: str, folder: Path | None, desc_path: Path | None, key_dir: Path
) -> tuple[Path | None, Write | None]:
    """frp's private and p2p modes: the visitor needs frps's token and the proxy's secret,
    which only the config folder holds. Copied (0600) beside the pinned known_hosts."""
    if desc.route != "frp" or desc.mode == "public":
        return None, None
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
    from ..tunnels.frp_visitor import profile_text

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
    return path, (path, profile_text(desc.frp, desc.mode, token, secret, ca), 0o600)


def _may_pin_addresses(known: Path, chosen: bool, desc: Descriptor) -> bool:
    """Whether the runtime's ``[host]:port`` may be pinned in ``known`` (for sshj and
    paramiko): not in a file the user's ssh reads for every host, where the descriptor's
    ``public_host`` would vouch for that host to every ``ssh`` (pins.py)."""
    if not chosen or desc.mode != "public" or not (desc.host and desc.port):
        return True
    from .userconfig import reads_for_every_host

    if not reads_for_every_host(known):
        return True
    log.warning(
        "%s is read by ssh for every host: the runtime's key is pinned there under '%s' "
        "only, not under %s (PyCharm/sshj need that line: leave out --known-hosts to get it "
        "in handy-colab's own file)",
        known,
        desc.name,
        pinning.address_pattern(desc.host, desc.port),
    )
    return False


def connect(
    source: Path,
    *,
    identity: Path | None = None,
    ssh_config: Path | None = None,
    known_hosts: Path | None = None,
    name: str | None = None,
    cloudflared_access: bool = False,
    client_os: str | None = None,
    vscode: bool = True,
    alias: str | None = None,
    replace: bool = False,
) -> ConnectResult:
    """``client_os``: the laptop's OS the config is for (default: this one); "windows"
    writes what Windows' OpenSSH accepts, and can be asked for anywhere (to test it).
    ``vscode``: with the default ssh config, tell VS Code the alias is a Linux host.
    ``alias``: the ssh Host alias to write (default: the runtime's name, lowercase).
    ``replace``: take over an alias or address pinned to other host keys (else refused
    with AliasConflictError, before anything is written)."""
    if client_os is not None and client_os not in CLIENT_OSES:
        raise ConfigError(
            f"--os {client_os!r} is not known. Fix: use one of {', '.join(CLIENT_OSES)}"
        )
    windows = client_os == "windows" or (client_os is None and win.is_windows())
    for flag, value in (("--name", name), ("--alias", alias)):
        problem = None if value is None else runtime_name_problem(value)
        if problem is not None:
            raise ConfigError(
                f"{flag} '{value}' is not a valid runtime name: it {problem}. Fix: use "
                f"{RUNTIME_NAME_RULE}"
            )
    pasted = is_paste(str(source))
    try:
        desc, folder, desc_path = _resolve_source(
            source if pasted else source.expanduser().resolve(), name
        )
    except (OSError, ValueError, RuntimeError) as exc:
        # A NUL, a name too long, a symlink loop: a path no file can have.
        raise ConfigError(
            f"{str(source)!r:.80}: cannot read it ({str(exc)[:80]}). Fix: pass the hc1: line, a "
            f"connections/NAME.json or the config folder"
        ) from None
    runtime_name = desc.name
    # VS Code lowercases an alias it reopens from "Recent": every alias we write is lowercase.
    desc = dataclasses.replace(desc, name=alias_of(alias or desc.name))
    user_config, managed, default_known = default_paths()
    include_in: Path | None = None
    if ssh_config is not None:
        managed = ssh_config.expanduser().resolve()
    else:
        include_in = user_config
    known = known_hosts.expanduser().resolve() if known_hosts else default_known
    # Every check comes before the first write: a refused descriptor changes nothing.
    known_text = read_text_or_empty(known)
    before = saved_descriptor(desc.name, known)
    # Untagged address lines an older connect wrote for this alias (a new port, say).
    addresses = _may_pin_addresses(known, known_hosts is not None, desc)
    legacy = set(pinning.pin_patterns(before, addresses)) if before is not None else set()
    problems = pinning.conflicts(known_text, desc, legacy, addresses)
    if problems and not replace:
        raise AliasConflictError(
            f"{known}: {'; '.join(problems)}. Fix: if this is the runtime you meant (rebuilt "
            f"with new keys), run connect again with --replace; to keep both, add --alias "
            f"OTHER_NAME"
        )
    if include_in is not None:
        _check_user_config(desc, runtime_name if alias is None else desc.name, include_in, managed)
    ident, key_copy = _prepare_identity(identity, desc, folder, known.parent)
    profile, profile_copy = _frp_profile(desc, runtime_name, folder, desc_path, known.parent)
    saved = descriptor_copy(desc.name, known)
    hold = _hold_dir(desc, known.parent, windows)
    # Rendered (and so quoted, or refused) before anything is written.
    block = render_host_blocks(
        desc,
        ident,
        str(known),
        str(managed),
        launcher=_launcher(desc, cloudflared_access, windows),
        # A quick tunnel's name changes: the ProxyCommand re-reads this file each time.
        follow=str(desc_path) if desc.mode == "quick" and desc_path else None,
        frp_profile=str(profile) if profile else None,
        windows=windows,
        hold_dir=str(hold) if hold else None,
    )
    if runtime_name != desc.name and alias is None:
        # OpenSSH matches Host patterns case-sensitively: the name the runtime prints
        # works too, beside the lowercase alias VS Code reopens.
        block = re.sub(
            rf"^Host {re.escape(desc.name)}$",
            f"Host {desc.name} {runtime_name}",
            block,
            count=1,
            flags=re.M,
        )
    block = f"{DESCRIPTOR_COMMENT}{check_printable(str(saved), 'the known_hosts folder')}\n{block}"
    backups: list[Path] = []
    try:
        for d in {managed.parent, known.parent}:
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        for path, content, mode in (w for w in (key_copy, profile_copy) if w is not None):
            atomic_write(path, content, mode=mode)
        save_descriptor(desc, known)
        bak = write_if_changed(
            managed, replace_block(read_text_or_empty(managed), desc.name, block), 0o600
        )
        backups += [bak] if bak else []
        merged = pinning.merge(known_text, desc, legacy, replace, addresses)
        bak = write_if_changed(known, merged, 0o600)
        backups += [bak] if bak else []
        if include_in is not None:
            bak = ensure_include(include_in, managed, windows)
            backups += [bak] if bak else []
    except OSError as exc:
        raise ClientConfigError(
            f"{exc.filename}: cannot write ({exc.strerror}). Fix: check "
            f"permissions, or pass --ssh-config/--known-hosts elsewhere"
        ) from None
    os.chmod(managed, stat.S_IMODE(managed.stat().st_mode) & ~0o022)
    if hold is not None:
        _prestart_hold(hold, managed, desc)
    warn_version(desc)
    follows = desc_path if desc.mode == "quick" else None
    notes = _windows_key_notes(ident) if windows and ident else []
    if vscode and include_in is not None:
        # Only with the default ssh config: that is the one VS Code reads.
        from .vscode import remember_platform

        platform = remember_platform([desc.name])
        if platform.vscode_found:
            notes += [f"VS Code: {m}" for m in platform.messages]
            backups += [c.backup for c in platform.changes if c.backup is not None]
    return ConnectResult(
        desc.name, managed, known, ident, include_in, backups, follows, desc.mode == "quick", notes
    )


def version_mismatch(desc: Descriptor, laptop: str = __version__) -> str | None:
    """A one-line warning when the runtime's handy-colab differs from the laptop's in
    major.minor (None: they agree, or the runtime is too old to say)."""
    from ..selfwheel import differs

    if not desc.version or not differs(desc.version, laptop):
        return None
    return (
        f"runtime {desc.name} runs handy-colab {desc.version}, this laptop {laptop}. Fix: run "
        f"`handy-colab init --force` here to put this laptop's wheel into the config folder and "
        f"restart the runtime from it, or upgrade handy-colab on this laptop to {desc.version}"
    )


def warn_version(desc: Descriptor) -> None:
    msg = version_mismatch(desc)
    if msg is not None:
        log.warning("%s", msg)


def _check_user_config(desc: Descriptor, spelling: str, user_config: Path, managed: Path) -> None:
    """Stop if the user's own config already applies to an alias we would write: ours comes
    first and would silently win over theirs."""
    from .userconfig import user_definition

    aliases = [desc.name] + ([spelling] if spelling != desc.name else [])
    if desc.route == "relay" and desc.mode == "private":
        aliases.append(desc.relay_alias)
    clash = user_definition(aliases, user_config, managed)
    if clash is not None:
        raise AliasConflictError(
            f"{clash} already applies to that alias; a Host block of ours would silently win "
            f"over it. Fix: run connect again with --alias OTHER_NAME (or rename yours)"
        )


def _launcher(desc: Descriptor, cloudflared_access: bool, windows: bool) -> str | None:
    """The ProxyCommand's program: on Windows the installed handy-colab.exe, quoted, with
    forward slashes; elsewhere this very interpreter's module (None: the default)."""
    if windows:
        if desc.cloudflared:
            return win.launcher("ws-access" if cloudflared_access else "ws")
        return win.launcher("frp" if desc.route == "frp" else "relay")
    return ws_launcher(cloudflared_access) if desc.cloudflared else None


def _hold_dir(desc: Descriptor, key_dir: Path, windows: bool) -> Path | None:
    """Where private mode's held relay connections live (None: the asyncssh proxy, as on
    Windows, whose OpenSSH has no ControlMaster, or where the path is too long for a
    Unix socket)."""
    if desc.route != "relay" or desc.mode != "private" or windows:
        return None
    folder = key_dir / relayhop.HOLD_DIR
    if any(c in str(folder) for c in (":", "\\", "${")):
        # ssh's -L splits on ':' and drops '\', ControlPath has no escape for "${": such a
        # folder keeps the asyncssh proxy (relayhop.py)
        return None
    return folder if len(str(folder)) <= relayhop.max_dir_len() else None


def _prestart_hold(folder: Path, config: Path, desc: Descriptor) -> None:
    """Log in to the relay in the background now, so the first ``ssh`` finds the held
    connection ready (or nearly): not waited for, and its errors are the first ssh's."""
    subprocess.Popen(
        [*hop_argv(desc, str(config), str(folder)), "--prestart"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _windows_key_notes(identity: str) -> list[str]:
    """Windows' ssh refuses a key others may read: check it there, say the fix anywhere."""
    if win.is_windows():
        others = win.key_permission_problem(identity)
        if others is None:
            return []
        return [
            f"{identity} is readable by {others}: Windows' ssh will refuse it. Fix: "
            f"{win.icacls_fix(identity)}"
        ]
    return [
        f"On Windows, if ssh says UNPROTECTED PRIVATE KEY FILE for {identity}, make it "
        f"private: {win.icacls_fix(identity)}"
    ]
