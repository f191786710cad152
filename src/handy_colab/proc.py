"""Child processes: one `run_subprocess` helper and a watched long-lived child.

A `WatchedProcess` reads its child's output on a thread, logs every line, keeps the last
lines for error messages and lets the caller wait for a readiness line with a deadline
(the way pyngrok waits for ngrok's "started tunnel" line).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def run_subprocess(
    argv: Sequence[str],
    *,
    timeout: float = 600,
    check: bool = False,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    log.debug("run: %s", " ".join(argv))
    return subprocess.run(
        list(argv),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
        env=env,
    )


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when its parent dies, even by SIGKILL (Linux)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def end_process(proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``grace``; reaped either way."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class WatchedProcess:
    """A long-lived child whose merged stdout/stderr is logged line by line."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        label: str,
        logger: logging.Logger | None = None,
        on_exit: Callable[[], None] | None = None,
        env: dict[str, str] | None = None,
        quiet: re.Pattern[str] | None = None,
    ) -> None:
        self.argv = list(argv)
        # Lines of routine chatter (e.g. a child logging each API request we make) are
        # neither logged nor kept: they would push the lines that explain a failure out.
        self._quiet = quiet
        self.label = label
        self._log = logger or log
        self._cond = threading.Condition()
        self._eof = False
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            bufsize=1,
            env=env,
        )
        self._seen: list[str] = []
        self._dropped = 0
        self._on_exit = on_exit
        self._reader = threading.Thread(target=self._read, name=f"{label}-reader", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.rstrip("\n")
            if self._quiet is not None and self._quiet.search(line):
                continue
            self._log.info("%s: %s", self.label, line)
            with self._cond:
                # Readiness matching reads every line since start; keep a bounded window so a
                # chatty child cannot grow memory without end (`_dropped` keeps indexes valid).
                self._seen.append(line)
                if len(self._seen) > 2000:
                    del self._seen[:1000]
                    self._dropped += 1000
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()
        # Output closes when the child exits (or hands its stderr on): let a watcher react
        # now rather than at its next poll.
        if self._on_exit is not None:
            self._on_exit()

    def last_lines(self, n: int = 10) -> list[str]:
        with self._cond:
            return self._seen[-n:]

    def wait_for(
        self, ready: re.Pattern[str], fail: re.Pattern[str] | None, timeout: float
    ) -> tuple[str, str]:
        """Wait for a line matching ``ready`` or ``fail``, or for the child to exit.

        Returns ``("ready", line)``, ``("failed", line)``, ``("exited", "")`` or
        ``("timeout", "")``.
        """
        deadline = time.monotonic() + timeout
        idx = 0
        with self._cond:
            while True:
                idx = max(idx, self._dropped)
                while idx - self._dropped < len(self._seen):
                    line = self._seen[idx - self._dropped]
                    idx += 1
                    if ready.search(line):
                        return "ready", line
                    if fail is not None and fail.search(line):
                        return "failed", line
                if self._eof:
                    return "exited", ""
                left = deadline - time.monotonic()
                if left <= 0:
                    return "timeout", ""
                self._cond.wait(min(left, 0.2))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def settle(self, timeout: float = 2.0) -> None:
        """Give a child that is ending a moment to print its last lines and exit, so that
        they all count when its failure is classified."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout)

    def stop(self, grace: float = 3.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
                # A stopped (SIGSTOP) child only acts on SIGTERM once continued.
                self.proc.send_signal(signal.SIGCONT)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                self.proc.wait(grace)
        self._reader.join(timeout=2)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class ChildHolder:
    """Holds at most one long-lived WatchedProcess: what every server and tunnel backend
    shares about its child (is it alive, its pid, its last words, stopping it)."""

    proc: WatchedProcess | None = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def last_lines(self, n: int = 5) -> list[str]:
        return self.proc.last_lines(n) if self.proc else []

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as dead.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _proc_table() -> dict[int, tuple[int, int, str, str]]:
    """pid -> (ppid, pgid, state, start time) for every process we can see."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        table[int(entry.name)] = (int(fields[1]), int(fields[2]), fields[0], fields[19])
    return table


def _add_descendants(table: dict[int, tuple[int, int, str, str]], found: set[int]) -> None:
    """Grow ``found`` by every live descendant of its members."""
    grew = True
    while grew:
        grew = False
        for pid, (ppid, _, st, _) in table.items():
            if ppid in found and pid not in found and st != "Z":
                found.add(pid)
                grew = True


def group_and_descendants(pgid: int) -> set[int]:
    """Every live process in group ``pgid`` plus all their descendants.

    sshd puts each connection in a session of its own, so a plain killpg would leave the
    users' sessions running after ``down``; the parent links still lead back to us.
    """
    table = _proc_table()
    found = {pid for pid, (_, grp, st, _) in table.items() if grp == pgid and st != "Z"}
    _add_descendants(table, found)
    return found


def descendants(root: int) -> dict[int, str]:
    """Every live descendant of ``root``: pid -> start time (to tell a reused pid apart)."""
    table = _proc_table()
    found = {root}
    _add_descendants(table, found)
    found.discard(root)
    return {pid: table[pid][3] for pid in found}


def start_time(pid: int) -> str | None:
    """The start time of a live (non-zombie) process; None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except (OSError, IndexError):
        return None
    return None if not fields or fields[0] == "Z" else fields[19]


def kill_tree(pgid: int, grace: float = 5.0) -> None:
    """Stop group ``pgid`` and every descendant: SIGTERM, then SIGKILL after ``grace``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        victims = group_and_descendants(pgid)
        if not victims:
            return
        for pid in victims:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not any(pid_alive(p) for p in victims):
                break
            time.sleep(0.05)
    # Anything still there is a zombie awaiting its parent or beyond our permission.
