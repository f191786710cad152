"""Runtime-side operations behind `up`, `down`, `status` and `logs` (no printing here)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import Backend, RuntimeConfig, load_config, route_of_tunnel
from .connection import Descriptor, write_descriptor
from .errors import ConfigError, NotFoundError, RuntimeConflictError, StateError
from .launch import Launch
from .proc import group_and_descendants, kill_tree, pid_alive
from .progress import ProgressArg, Reporter, as_reporter, bytes_bar
from .server.session import SessionEnv, capture, write_session
from .state import RuntimeDir, list_runtimes

if TYPE_CHECKING:
    from .forklaunch import ForkLaunch
    from .packages import PackageResult

log = logging.getLogger(__name__)

LIVE_PHASES = ("ready", "reconnecting")


@dataclass
class UpResult:
    cfg: RuntimeConfig
    descriptor: Descriptor
    descriptor_path: Path | None
    already_running: bool
    state: dict[str, Any]
    session: SessionEnv | None = None
    packages: list[PackageResult] = field(default_factory=list)

    @property
    def package_failures(self) -> list[str]:
        """One line per extra package that failed (the tunnel is up regardless)."""
        return [p.failure_line for p in self.packages if p.status == "failed"]


@contextlib.contextmanager
def _locked(path: Path, timeout: float) -> Iterator[None]:
    with open(path, "w") as fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RuntimeConflictError(
                        f"{path}: another `handy-colab up` is still starting this "
                        f"runtime. Fix: wait for it, or run `handy-colab down` "
                        f"first"
                    ) from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def running_state(rd: RuntimeDir) -> dict[str, Any] | None:
    st = rd.read_state()
    if st and pid_alive(int(st.get("pid") or 0)):
        return st
    return None


def _descriptor_from_state(
    cfg: RuntimeConfig, st: dict[str, Any]
) -> tuple[Descriptor, Path | None]:
    path = st.get("descriptor")
    if path:
        return Descriptor.load(Path(path)), Path(path)
    return Descriptor.from_dict(json.loads(st["descriptor_json"]), "state"), None


def session_workdir(cfg: RuntimeConfig, cwd: str) -> str:
    """Where sessions start: the config's ``server.workdir``, else the caller's directory
    (or the platform's notebook directory when the caller sits at "/")."""
    if cfg.workdir:
        return os.path.expanduser(cfg.workdir)
    from .platforms import detect

    return str(detect().default_workdir(Path(cwd)))


def up(
    folder: str | Path,
    name: str | None = None,
    timeout: float = 60.0,
    install: bool = True,
    server: Backend | None = None,
    tunnel: str | None = None,
    *,
    python: str | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: str | None = None,
    progress: ProgressArg = None,
    launch: Launch | ForkLaunch | None = None,
) -> UpResult:
    """Start (or find) the runtime's supervisor; return once reachable through the relay.

    ``server``/``tunnel`` override the config's ``server.kind``/``relay.client``.
    Sessions get ``environ`` (default: this process's) and start in ``cwd`` (default: this
    process's); ``python`` (the notebook's interpreter) goes first on their PATH. Calling
    it again while the runtime runs refreshes all three for new sessions. With
    ``install``, the config's extra packages are installed once the runtime is reachable
    (into ``python``, else the first python3 on the sessions' PATH). ``progress``: a
    ``Reporter`` (progress.py: a download's bar, the packages' bar and lines), or a callable
    that gets each as whole lines, or None.
    """
    reporter = as_reporter(progress)
    if launch is None:
        # Launched first so that its start-up overlaps ours; it waits for `go` (launch.py).
        launch = Launch.early(folder, name, timeout, server, tunnel)
    try:
        cfg = load_config(folder, name, route_of_tunnel(tunnel))
        _warn_folder_version(cfg.folder)
        rd = RuntimeDir.for_name(cfg.name).ensure()
        with _locked(rd.up_lock, timeout):
            sess = capture(
                rd,
                os.environ if environ is None else environ,
                session_workdir(cfg, cwd or os.getcwd()),
                python,
            )
            try:
                write_session(rd, sess)
            except OSError as exc:
                raise StateError(
                    f"{rd.path}: cannot write the session environment ({exc.strerror}). "
                    f"Fix: free space there, or set HANDY_COLAB_STATE_DIR to a writable "
                    f"local folder"
                ) from None
            st = running_state(rd)
            if st is not None and st.get("phase") in LIVE_PHASES:
                _check_same_folder(cfg, st)
                desc, path = _descriptor_from_state(cfg, st)
                _refresh_descriptor(cfg, desc, path, sess)
                res = UpResult(cfg, desc, path, True, st, sess)
            else:
                _fetch_binaries(cfg, tunnel, reporter)
                if launch is None or not launch.matches(cfg.folder):
                    if launch is not None:
                        launch.cancel()
                    launch = Launch(cfg.folder, cfg.name, timeout, server, tunnel)
                res = _start(cfg, rd, st, timeout, sess, launch, reporter)
    finally:
        if launch is not None:
            launch.cancel()  # no-op once it was told to go
    if install and (cfg.python_packages or cfg.os_packages):
        from .packages import install_packages

        res.packages = install_packages(
            cfg.python_packages,
            cfg.os_packages,
            python=sess.python or sys.executable,
            progress=reporter,
        )
    return res


def _check_same_folder(cfg: RuntimeConfig, st: dict[str, Any]) -> None:
    """A live runtime of this name from another folder is not this one: handing back its
    block would connect the laptop to a runtime with other keys and another route."""
    running = st.get("folder")
    if not running or Path(running) == cfg.folder:
        return  # the same folder again (or a record too old to say): today's refresh
    raise RuntimeConflictError(
        f"runtime '{cfg.name}' already runs here from {running} (supervisor pid "
        f"{st.get('pid')}), not from {cfg.folder}. Fix: `handy-colab down {cfg.name}` first, "
        f"or start this folder under another name with --name OTHER"
    )


def _warn_folder_version(folder: Path) -> None:
    """The laptop's init put its own wheel into the folder: a kernel still running another
    version would speak another descriptor or config than the laptop expects."""
    from .selfwheel import folder_mismatch

    msg = folder_mismatch(folder)
    if msg is not None:
        log.warning("%s", msg)


def _refresh_descriptor(
    cfg: RuntimeConfig, desc: Descriptor, path: Path | None, sess: SessionEnv
) -> None:
    """A re-run `up` may come from another interpreter or directory: say so to the laptop."""
    if (desc.python, desc.workdir) == (sess.python or desc.python, sess.cwd):
        return
    desc.python = sess.python or desc.python
    desc.workdir = sess.cwd
    if path is not None:
        try:
            write_descriptor(cfg, desc)
        except OSError as exc:
            log.warning("cannot rewrite the connection descriptor: %s", exc.strerror)


def _fetch_binaries(cfg: RuntimeConfig, tunnel: str | None, reporter: Reporter) -> None:
    """Check the route now (a one-line error before anything starts) and fetch the program
    it runs here, where the caller sees the download's progress; the supervisor then finds it
    in the cache (and verifies it again before it runs)."""
    from .backends import choose_tunnel

    kind = choose_tunnel(tunnel, cfg).kind
    if kind not in ("cloudflared", "frp"):
        return  # nothing to fetch; and binaries (urllib, ssl) stays unimported on this path
    from .binaries import Installer

    inst: Installer
    if kind == "cloudflared":
        from .tunnels.cloudflared import installer

        inst = installer(cfg)
    elif kind == "frp":
        from .tunnels.frp import installer as frp_installer

        inst = frp_installer(cfg.frp_settings)
    name = inst.spec.name
    with bytes_bar(reporter, f"downloading {name}") as report:
        found = inst.resolve(report)
    log.info("%s %s from %s (%s)", name, found.version, found.path, found.source)


def _start(
    cfg: RuntimeConfig,
    rd: RuntimeDir,
    st: dict[str, Any] | None,
    timeout: float,
    sess: SessionEnv,
    launch: Launch | ForkLaunch,
    reporter: Reporter,
) -> UpResult:
    if st is not None:
        # A supervisor that is alive but not ready (stuck, or started from another
        # folder): replace it rather than run two.
        kill_tree(int(st["pgid"]))
    _reap_orphans(rd)
    # Fail here, with a clear line, if the state dir cannot take a write (disk full).
    rd.write_state({"name": cfg.name, "phase": "starting", "pid": 0, "pgid": 0})
    launch.go(rd, cfg)
    st = launch.wait_ready(rd, timeout, reporter.say)
    desc, path = _descriptor_from_state(cfg, st)
    return UpResult(cfg, desc, path, False, st, sess)


def _reap_orphans(rd: RuntimeDir) -> None:
    """Kill what a supervisor that was itself killed (-9) left behind."""
    st = rd.read_state()
    if st and st.get("pgid") and group_and_descendants(int(st["pgid"])):
        log.info("stopping processes left by a dead supervisor (pgid %s)", st["pgid"])
        kill_tree(int(st["pgid"]))


def down(name: str) -> bool:
    """Stop the runtime's supervisor and everything under it. True if something ran."""
    rd = RuntimeDir.for_name(name)
    st = rd.read_state()
    if not st or not st.get("pgid"):
        return False
    pgid = int(st["pgid"])
    had = bool(group_and_descendants(pgid))
    kill_tree(pgid)
    if group_and_descendants(pgid):
        raise StateError(
            f"processes of runtime '{name}' (group {pgid}) survived SIGKILL. Fix: "
            f"check `ps -g {pgid}`"
        )
    st = rd.read_state() or st
    if st.get("phase") not in ("stopped", "failed"):
        st["phase"] = "stopped"
    for part in ("server", "tunnel"):
        if isinstance(st.get(part), dict):
            st[part].update(state="stopped", pid=None)
    rd.write_state(st)
    return had


def status(name: str) -> tuple[bool, dict[str, Any]]:
    """(healthy, state) for one runtime; state is {} when it never ran."""
    rd = RuntimeDir.for_name(name)
    st = rd.read_state() or {}
    alive = bool(st) and pid_alive(int(st.get("pid") or 0))
    if st and not alive and st.get("phase") not in ("stopped", "failed"):
        st["phase"] = "dead"
        st["error"] = st.get("error") or "the supervisor is not running"
    healthy = alive and st.get("phase") == "ready" and st.get("tunnel", {}).get("state") == "up"
    return healthy, st


def names() -> list[str]:
    return [rd.name for rd in list_runtimes()]


def resolve_name(name: str | None) -> str:
    if name:
        return name
    found = names()
    if len(found) == 1:
        return found[0]
    if not found:
        raise NotFoundError("no runtime has been started here. Fix: run `handy-colab up DIR`")
    raise ConfigError(f"several runtimes ({', '.join(found)}). Fix: name one")


def log_path(name: str) -> Path:
    return RuntimeDir.for_name(name).log_file
