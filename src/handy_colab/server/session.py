"""Notebook parity: every SSH session gets the environment and directory of the notebook.

``up`` captures the environment of the process that called it (a Jupyter kernel, or a shell
cell) into ``DIR/session.env`` (0600: it may hold tokens). Both servers start every session
through one launcher script, ``DIR/session.sh``: OpenSSH as its ``ForceCommand``, the embedded
server directly. The launcher reads the file at each session start, so a later ``up``
refreshes what new sessions see without restarting anything. It then runs what the client
asked for (a command, a subsystem such as sftp-server, or a login shell) in the notebook's
working directory.

Precedence, per variable: what the client sent (SetEnv/SendEnv) wins, then the notebook's
value, then what the server itself sets. PATH is the notebook's (sshd's default PATH is
never the user's choice), with entries a login shell's profile files add kept after it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..fsutil import atomic_write
from ..state import RuntimeDir

log = logging.getLogger(__name__)

ENV_FILE = "session.env"
INFO_FILE = "session.json"
LAUNCHER = "session.sh"
RC_FILE = "session.rc"
SHIM_DIR = "bin"
LOGIN_DIR = "login"

# Set per session by the server (or by the client's terminal): never the notebook's.
SESSION_OWNED = frozenset(
    {
        "USER",
        "LOGNAME",
        "HOME",
        "SHELL",
        "MAIL",
        "TERM",
        "DISPLAY",
        "KRB5CCNAME",
        "PWD",
        "OLDPWD",
        "SHLVL",
        "_",
        "COLUMNS",
        "LINES",
        "ENV",
        "BASH_ENV",
        "PS1",
        "PS2",
        "PROMPT_COMMAND",
    }
)
SESSION_OWNED_PREFIXES = ("SSH_", "BASH_FUNC_", "JPY_", "HC_LAUNCH_")
# Jupyter/ipykernel set these for its own output pane; in a terminal they are wrong
# (no pager, an inline-only plotting backend), so they are dropped when they hold
# exactly the kernel's values.
KERNEL_DISPLAY_VALUES = {
    "PAGER": ("cat",),
    "GIT_PAGER": ("cat",),
    "CLICOLOR": ("1",),
    "FORCE_COLOR": ("1",),
}
_INLINE_MPL = re.compile(r"^module://(matplotlib_inline|ipykernel)\b")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# sshd's PATH for a session (Debian's defaults), used by the embedded server's base env.
DEFAULT_PATH_ROOT = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_PATH_USER = "/usr/local/bin:/usr/bin:/bin:/usr/games"


@dataclass
class SessionEnv:
    """What sessions inherit: the variables, the directory, the notebook's Python."""

    env: dict[str, str]
    cwd: str
    python: str = ""
    shims: dict[str, str] = field(default_factory=dict)  # name -> interpreter


def keep_variable(name: str, value: str) -> bool:
    if not _NAME.match(name) or name in SESSION_OWNED:
        return False
    if name.startswith(SESSION_OWNED_PREFIXES):
        return False
    if name == "MPLBACKEND" and _INLINE_MPL.match(value):
        return False
    return value not in KERNEL_DISPLAY_VALUES.get(name, ())


def _python_path(path: str, python: str, shim_dir: Path) -> tuple[str, dict[str, str]]:
    """PATH with ``python``'s directory first, and shims where that is not enough.

    A kernel started from a venv often runs with a PATH that does not hold the venv at
    all, and a system Python may be ``python3`` only: then ``python``/``python3`` on the
    PATH would be another interpreter. A shim is a two-line script (not a symlink: a
    symlinked venv interpreter would not find its pyvenv.cfg).
    """
    pydir = os.path.dirname(python)
    entries = [pydir] + [p for p in path.split(os.pathsep) if p and p != pydir]
    new_path = os.pathsep.join(entries)
    shims: dict[str, str] = {}
    for name in ("python", "python3"):
        found = shutil.which(name, path=new_path)
        if found is None or os.path.dirname(found) != pydir:
            shims[name] = python
    if shims:
        new_path = os.pathsep.join([str(shim_dir), new_path])
    return new_path, shims


def capture(
    rd: RuntimeDir,
    environ: Mapping[str, str],
    cwd: str,
    python: str | None = None,
) -> SessionEnv:
    """The session environment for ``environ``/``cwd``; ``python`` goes first on PATH."""
    env = {name: value for name, value in environ.items() if keep_variable(name, value)}
    shims: dict[str, str] = {}
    if python:
        env["PATH"], shims = _python_path(
            env.get("PATH", DEFAULT_PATH_USER), python, rd.path / SHIM_DIR
        )
    else:
        # Run from a shell (the CLI): its PATH is kept as it is; record what it gives.
        python = shutil.which("python3", path=env.get("PATH", DEFAULT_PATH_USER)) or ""
    return SessionEnv(env, cwd, python, shims)


def _sh(value: str) -> str:
    return shlex.quote(value)


def render_env_file(sess: SessionEnv) -> str:
    lines = [
        "# Written by handy-colab `up`: the notebook's environment for SSH sessions.",
        "# Read by session.sh; holds whatever the notebook's environment holds, so 0600.",
        f"hc_cwd={_sh(sess.cwd)}",
    ]
    lines += [f"hc_env {name} {_sh(value)}" for name, value in sorted(sess.env.items())]
    return "\n".join(lines) + "\n"


def write_session(rd: RuntimeDir, sess: SessionEnv) -> None:
    """Write the files a session reads; safe while sessions start (atomic renames)."""
    shim_dir = rd.path / SHIM_DIR
    if sess.shims:
        shim_dir.mkdir(mode=0o700, exist_ok=True)
        for name, target in sess.shims.items():
            atomic_write(shim_dir / name, f'#!/bin/sh\nexec {_sh(target)} "$@"\n', mode=0o700)
    atomic_write(rd.path / ENV_FILE, render_env_file(sess), mode=0o600)
    info = {"cwd": sess.cwd, "python": sess.python, "names": sorted(sess.env)}
    atomic_write(rd.path / INFO_FILE, json.dumps(info, indent=2) + "\n", mode=0o600)
    log.info(
        "session environment: %d variables, cwd %s, python %s (values not logged)",
        len(sess.env),
        sess.cwd,
        sess.python or "from PATH",
    )


def read_info(rd: RuntimeDir) -> dict[str, object]:
    """``session.json`` (cwd, python, variable names), or {} before the first ``up``."""
    return read_info_file(rd.path / INFO_FILE)


def read_info_file(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def session_cwd(info_file: Path) -> str | None:
    """The notebook's directory as of the latest ``up``, if it (still) exists."""
    cwd = read_info_file(info_file).get("cwd")
    return cwd if isinstance(cwd, str) and os.path.isdir(cwd) else None


_LAUNCHER_TEMPLATE = r"""#!/bin/sh
# Written by handy-colab: starts every SSH session of this runtime (see server/session.py).
# sshd runs it as ForceCommand; the embedded server runs it directly. Either way the
# client's request is in SSH_ORIGINAL_COMMAND (unset: a login shell).
hc_dir=@DIR@
hc_sftp=@SFTP@
# sshd's shell was told it is one level down (SetEnv SHLVL=1, see server/openssh.py) so that
# it does not read ~/.bashrc; the shells started here count from 0 again, as under a plain sshd.
SHLVL=0
export SHLVL
hc_client=' '
hc_env() {
    # Set already (and not PATH/TZ, which the server sets): the client sent it; it wins.
    case $1 in
    PATH | TZ) ;;
    *) if eval "[ -n \"\${$1+x}\" ]"; then hc_client="$hc_client$1 "; return 0; fi ;;
    esac
    export "$1=$2"
}
hc_cwd=
if [ -r "$hc_dir/session.env" ]; then
    . "$hc_dir/session.env"
fi
unset -f hc_env
if [ -n "$hc_cwd" ] && ! cd "$hc_cwd" 2>/dev/null; then
    [ -n "${SSH_ORIGINAL_COMMAND+x}" ] || echo "Could not chdir to $hc_cwd" >&2
fi
hc_shell=${SHELL:-/bin/sh}
if [ -n "${SSH_ORIGINAL_COMMAND+x}" ]; then
    hc_cmd=$SSH_ORIGINAL_COMMAND
    unset SSH_ORIGINAL_COMMAND
    case $hc_cmd in
    internal-sftp*)
        if [ -z "$hc_sftp" ]; then
            echo "sftp needs OpenSSH's sftp-server. Fix: apt-get install openssh-sftp-server" >&2
            exit 127
        fi
        hc_cmd=$hc_sftp
        ;;
    esac
    case $hc_cmd in
    "$hc_sftp" | "scp "* | "rsync --server "*)
        # File-transfer protocol ends (what IDEs and scp/rsync run) need no rc files: the
        # environment above is enough, and ~/.bashrc can be slow (handy-colab help benchmarks).
        unset hc_dir hc_sftp hc_client hc_cwd
        exec /bin/sh -c "$hc_cmd"
        ;;
    esac
    case ${hc_shell##*/} in
    bash)
        # bash run for sshd reads ~/.bashrc before the command (and rc files often change
        # PATH): the notebook's environment goes on top of it, as for a login shell.
        HC_LAUNCH_CMD=$hc_cmd
        HC_LAUNCH_CLIENT=$hc_client
        HC_LAUNCH_DIR=$hc_dir
        export HC_LAUNCH_CMD HC_LAUNCH_CLIENT HC_LAUNCH_DIR
        unset hc_dir hc_sftp hc_client hc_cwd hc_cmd
        exec "$hc_shell" -c 'hc_c=$HC_LAUNCH_CMD; unset HC_LAUNCH_CMD
. "$HC_LAUNCH_DIR/session.rc"; eval "$hc_c"'
        ;;
    esac
    unset hc_dir hc_sftp hc_client hc_cwd
    exec "$hc_shell" -c "$hc_cmd"
fi
# A login shell. Its profile files may reset PATH (Debian's /etc/profile does), so the
# notebook's environment is applied again after them, by session.rc.
HC_LAUNCH_CLIENT=$hc_client
HC_LAUNCH_DIR=$hc_dir
export HC_LAUNCH_CLIENT HC_LAUNCH_DIR
unset hc_dir hc_sftp hc_client hc_cwd
case ${hc_shell##*/} in
bash)
    # A real login bash ("-bash"): it starts with HOME at a directory of ours whose
    # .bash_profile puts HOME back, reads the user's own profile file, then session.rc.
    HC_LAUNCH_HOME=$HOME
    HOME=$HC_LAUNCH_DIR/login
    export HOME HC_LAUNCH_HOME
    exec "$hc_shell" -c 'exec -a -bash "$0"' "$hc_shell"
    ;;
sh | dash | ash | ksh | mksh)
    # A POSIX login shell reads $ENV after its profile files.
    HC_LAUNCH_ENV=${ENV-}
    ENV=$HC_LAUNCH_DIR/session.rc
    export ENV HC_LAUNCH_ENV
    exec "$hc_shell" -l
    ;;
*)
    unset HC_LAUNCH_CLIENT HC_LAUNCH_DIR
    exec "$hc_shell" -l
    ;;
esac
"""

_BASH_PROFILE = r"""# Written by handy-colab: a login bash reads this first (see session.sh), then
# the user's own profile file as bash would, then the notebook's environment on top.
HOME=$HC_LAUNCH_HOME
export HOME
unset HC_LAUNCH_HOME
case ${HISTFILE-} in "$HC_LAUNCH_DIR"/*) HISTFILE=$HOME/.bash_history ;; esac
if [ -r ~/.bash_profile ]; then . ~/.bash_profile
elif [ -r ~/.bash_login ]; then . ~/.bash_login
elif [ -r ~/.profile ]; then . ~/.profile
fi
. "$HC_LAUNCH_DIR/session.rc"
"""

_RC = r"""# Written by handy-colab: after a login shell's own files, the notebook's environment.
if [ -z "${BASH_VERSION-}" ]; then
    unset ENV
    [ -n "${HC_LAUNCH_ENV-}" ] && ENV=$HC_LAUNCH_ENV && export ENV
fi
hc_login_path=$PATH
hc_env() {
    case "${HC_LAUNCH_CLIENT-}" in
    *" $1 "*) return 0 ;;
    esac
    export "$1=$2"
}
hc_cwd=
[ -r "$HC_LAUNCH_DIR/session.env" ] && . "$HC_LAUNCH_DIR/session.env"
unset -f hc_env
# Entries the profile files added stay, after the notebook's own.
hc_ifs=$IFS
IFS=:
set -f
for hc_p in $hc_login_path; do
    case ":$PATH:" in
    *":$hc_p:"*) ;;
    *) PATH=$PATH:$hc_p ;;
    esac
done
set +f
IFS=$hc_ifs
export PATH
[ -n "$hc_cwd" ] && cd "$hc_cwd" 2>/dev/null
[ -n "${HC_LAUNCH_ENV-}" ] && [ -r "$HC_LAUNCH_ENV" ] && . "$HC_LAUNCH_ENV"
unset hc_login_path hc_cwd hc_ifs hc_p HC_LAUNCH_CLIENT HC_LAUNCH_DIR HC_LAUNCH_ENV
"""


def ensure_launcher(rd: RuntimeDir, sftp_server: str | None) -> Path:
    """Write the launcher and its rc file; return the launcher's path."""
    text = _LAUNCHER_TEMPLATE.replace("@DIR@", _sh(str(rd.path))).replace(
        "@SFTP@", _sh(sftp_server or "")
    )
    path = rd.path / LAUNCHER
    atomic_write(path, text, mode=0o700)
    atomic_write(rd.path / RC_FILE, _RC, mode=0o600)
    login = rd.path / LOGIN_DIR
    login.mkdir(mode=0o700, exist_ok=True)
    atomic_write(login / ".bash_profile", _BASH_PROFILE, mode=0o600)
    return path


def force_command(launcher: Path) -> str:
    """The launcher as sshd's ForceCommand (sshd hands it to the user's shell with -c)."""
    return f"/bin/sh {_sh(str(launcher))}"
