#!/usr/bin/env python3
"""Benchmark of recovery: from a fault's end until `ssh NAME true` works again, ours vs autossh.

Run from the repository root, as root (it builds the NAT rig of tests/rig.py):

    python3 bench/bench_recovery.py [--runs 5] [--faults kill9,exit0,...] [--modes public,private]
                                    [--deadline 180] [--out bench/results/recovery.json]

For each mode it builds one rig and runs, in that rig and at the same time, two tunnels:

* ours: ``handy-colab up DIR`` (supervisor, dedicated sshd, ``ssh -N -R``), reached from the
  laptop namespace with the Host block ``handy-colab connect`` writes;
* the baseline: a plain sshd started by hand in the runtime namespace and
  ``autossh -M 0 -N -o ServerAliveInterval=5 -o ServerAliveCountMax=2
  -o ExitOnForwardFailure=yes -o BatchMode=yes ... -R <other port or socket>:127.0.0.1:<sshd>``
  with ``AUTOSSH_GATETIME=0``, reached the same way as ours (public: the relay's port 2323;
  private: the same ``handy-colab proxy`` ProxyCommand, pointed at the baseline's socket).

Each fault hits both sides at once; modes run in parallel rigs (one thread per mode). From the
moment the fault ends, the laptop namespace polls each side with ``ssh ... true``
(ConnectTimeout 3; a new attempt every --poll-interval seconds, at most 2 in flight, so one
attempt hanging on a dead listener does not blunt the resolution) until one succeeds or the
deadline passes. The recovery time is the end of the first successful attempt minus the end
of the fault. Nothing probes the relay's forwarded port while a fault is in progress: probing
a stale listener keeps it alive (sandbox-facts.md), so for the stale-listener fault in public
mode polling starts only once the relay's session that held the old listener has exited
(observed with ``ss -p`` in the relay namespace, which sends no packet); the time still counts
from the kill.

Faults ("end" is when the clock starts):

* kill9: each side's tunnel ``ssh`` gets SIGKILL (end: the kill).
* exit0: each side's tunnel ``ssh`` gets SIGTERM, which makes ``ssh -N`` exit with status 0
  (measured at start-up, see ``exit_status_probe`` in the JSON; end: the signal).
* sshd_kill: each side's SSH server gets SIGKILL (end: the kill). autossh has nothing that
  restarts it.
* relay_restart: the relay's sshd is killed hard and started again after --relay-down seconds
  (rig.restart_relay; end: the relay listens again).
* block20 / block90: every packet between runtime and relay is dropped silently for 20 / 90 s
  (rig.block_runtime/unblock_runtime; end: the unblock).
* stale: in the runtime namespace, iptables drops the tunnel connection's own TCP 4-tuple both
  ways, then its ``ssh`` gets SIGKILL: no FIN/RST reaches the relay, which keeps the old
  listener until its ClientAlive (10 s x 3) ends the session (end: the kill).

Repetitions are independent: before each one, autossh is started afresh (its back-off
counter starts at zero, as for a long-lived autossh hit by its first fault), the baseline's
sshd is started again if it is gone, and ours is taken ``down`` and ``up`` if it did not
recover; then both must answer ``ssh true`` before the next fault. A side that provably
cannot recover (autossh exited, or the baseline's sshd is gone and nothing restarts it) is
polled for --dead-poll seconds and reported as "no recovery". Everything is torn down in
``finally``: rigs (namespaces, their iptables rules), autossh, the hand-started sshd, sockets.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_core import BASE_REMOTE_PORT, BASE_SSHD_PORT, MODES
from common import (
    REPO,
    close_runtime,
    fmt,
    hand_sshd_config,
    log,
    machine_info,
    run_main,
    stale_namespaces,
)

from handy_colab.proc import pid_alive as proc_pid_alive
from tests.e2e.conftest import REMOTE_PORT, Runtime, finish, make_runtime
from tests.rig import RELAY_IP, RELAY_USER, keygen, prerequisites, sh

FAULTS: dict[str, str] = {
    "kill9": "tunnel ssh SIGKILLed",
    "exit0": "tunnel ssh exits 0 (SIGTERM)",
    "sshd_kill": "runtime sshd SIGKILLed",
    "relay_restart": "relay sshd restarts",
    "block20": "silent drop 20 s",
    "block90": "silent drop 90 s",
    "stale": "stale relay listener",
}
SIDES = ("ours", "autossh")
AUTOSSH_OPTIONS = [
    "-M",
    "0",
    "-N",
    "-o",
    "ServerAliveInterval=5",
    "-o",
    "ServerAliveCountMax=2",
    "-o",
    "ExitOnForwardFailure=yes",
    "-o",
    "BatchMode=yes",
]
AUTOSSH_ENV = {"AUTOSSH_GATETIME": "0", "AUTOSSH_LOGLEVEL": "7"}
POLL_OPTIONS = [
    "-o",
    "BatchMode=yes",
    "-o",
    "ConnectTimeout=3",
    "-o",
    "ClearAllForwardings=yes",
    "-o",
    "ControlMaster=no",
    "-o",
    "ControlPath=none",
    "-o",
    "LogLevel=ERROR",
]
ATTEMPT_TIMEOUT = 10.0  # hard cap on one polling attempt (ConnectTimeout covers most)
MAX_INFLIGHT = 2
SETTLE = 2.0  # quiet seconds between "both healthy" and the next fault
_USERS_PID = re.compile(r"pid=(\d+)")
_TUPLE = re.compile(r"(\S+):(\d+)\s+(\S+):(\d+)\s+users:\(\(.*?pid=(\d+)")


def pid_alive(pid: int | None) -> bool:
    return bool(pid) and proc_pid_alive(int(pid or 0))


def children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                out += [int(c) for c in (task / "children").read_text().split()]
    return out


def descendants(pid: int) -> list[int]:
    todo, seen = [pid], []
    while todo:
        for c in children(todo.pop()):
            seen.append(c)
            todo.append(c)
    return seen


def kill_tree(
    proc: subprocess.Popen[Any] | None, sig: int = signal.SIGTERM, grace: float = 5.0
) -> None:
    """Stop a process we started and whatever it forked; SIGKILL what outlives ``grace``."""
    if proc is None:
        return
    tree = [proc.pid, *descendants(proc.pid)]
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(grace)
    deadline = time.monotonic() + grace
    while any(pid_alive(p) for p in tree) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in tree:
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def tail_from(
    path: Path, offset: int, keep: Callable[[str], bool] = lambda _: True, limit: int = 40
) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            text = fh.read().decode(errors="replace")
    except OSError:
        return []
    lines = [ln for ln in text.splitlines() if keep(ln)]
    return lines if len(lines) <= limit else [*lines[: limit // 2], "...", *lines[-limit // 2 :]]


def size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


@dataclass
class Fault:
    """What one side saw of a fault: when it ended, and how to gate / give up polling."""

    t_end: float
    info: dict[str, Any] = field(default_factory=dict)
    gate: Callable[[], bool] | None = None  # poll only once this is true
    dead: Callable[[], str | None] | None = None  # a reason when recovery is impossible


class ModeBench:
    """One rig: ours and the autossh baseline side by side, and the faults that hit both."""

    def __init__(self, mode: str, tmp: Path, args: argparse.Namespace) -> None:
        self.mode = mode
        self.args = args
        self.tmp = tmp
        self.rt: Runtime = make_runtime(tmp, mode, start=True)
        self.rig = self.rt.rig
        self.base_dir = tmp / "baseline"
        self.base_dir.mkdir()
        self.base_sshd: subprocess.Popen[Any] | None = None
        self.autossh: subprocess.Popen[Any] | None = None
        self.autossh_starts = 0
        self.base_socket = f"/tmp/{self.rig.prefix}-autossh.sock"
        self.supervisor_log = self.rig.state_dir / "colab" / "supervisor.log"
        self.autossh_log = self.base_dir / "autossh.log"
        self.autossh_err = self.base_dir / "autossh.stderr"
        self.fault_rules: list[list[str]] = []
        self.ours_poll = ["ssh", "-F", str(self.rt.ssh_config), *POLL_OPTIONS, "colab", "true"]
        self.base_poll = [
            "ssh",
            "-F",
            str(self.base_dir / "laptop_config"),
            *POLL_OPTIONS,
            "base",
            "true",
        ]
        self._setup_baseline()

    # -- baseline ---------------------------------------------------------------------------
    def _setup_baseline(self) -> None:
        d = self.base_dir
        self.base_hostkey = keygen(d / "ssh_host_ed25519_key")
        ak = d / "authorized_keys"
        shutil.copy(f"{self.rt.laptop_key}.pub", ak)
        hand_sshd_config(d, BASE_SSHD_PORT, self.base_hostkey, ak, "MaxStartups 100:30:200")
        # The relay's host key, pinned for autossh as ours pins it.
        (d / "relay_known_hosts").write_text(f"{RELAY_IP} {self.rt.relay_host_key}\n")
        host_pub = " ".join(Path(f"{self.base_hostkey}.pub").read_text().split()[:2])
        (d / "laptop_known_hosts").write_text(f"base {host_pub}\n")
        if self.mode == "public":
            where = [f"    HostName {RELAY_IP}", f"    Port {BASE_REMOTE_PORT}"]
            self.base_spec = f"{BASE_REMOTE_PORT}:127.0.0.1:{BASE_SSHD_PORT}"
        else:
            # The same ProxyCommand as ours (`handy-colab connect` wrote it), on the other
            # socket, so both sides pay the same laptop-side cost.
            proxy = next(
                ln.strip()
                for ln in self.rt.ssh_config.read_text().splitlines()
                if ln.strip().startswith("ProxyCommand ")
            )
            if self.rig.relay_socket not in proxy:
                raise RuntimeError(f"unexpected ProxyCommand in {self.rt.ssh_config}: {proxy}")
            where = ["    " + proxy.replace(self.rig.relay_socket, self.base_socket)]
            self.base_spec = f"{self.base_socket}:127.0.0.1:{BASE_SSHD_PORT}"
        (d / "laptop_config").write_text(
            "\n".join(
                [
                    "Host base",
                    *where,
                    "    User root",
                    "    HostKeyAlias base",
                    f"    UserKnownHostsFile {d / 'laptop_known_hosts'}",
                    "    StrictHostKeyChecking yes",
                    f"    IdentityFile {self.rt.laptop_key}",
                    "    IdentitiesOnly yes",
                    "",
                ]
            )
        )
        self.autossh_argv = [
            "autossh",
            *AUTOSSH_OPTIONS,
            "-o",
            "IdentitiesOnly=yes",
            "-i",
            str(self.rt.relay_key),
            "-o",
            f"UserKnownHostsFile={d / 'relay_known_hosts'}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-R",
            self.base_spec,
            f"{RELAY_USER}@{RELAY_IP}",
        ]
        self.autossh_env = {**AUTOSSH_ENV, "AUTOSSH_LOGFILE": str(self.autossh_log)}
        self.start_base_sshd()
        self.start_autossh()
        if not (self.wait_ok(self.ours_poll, 60) and self.wait_ok(self.base_poll, 60)):
            raise RuntimeError(f"{self.mode}: ours or the autossh baseline never answered")

    def start_base_sshd(self) -> None:
        kill_tree(self.base_sshd)
        with open(self.base_dir / "sshd.log", "ab") as fh:
            self.base_sshd = self.rig.popen(
                "rt",
                ["/usr/sbin/sshd", "-D", "-e", "-f", str(self.base_dir / "sshd_config")],
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.rig.wait_tcp("rt", "127.0.0.1", BASE_SSHD_PORT)

    def start_autossh(self) -> None:
        self.stop_autossh()
        env = {**self.rig.env(), **self.autossh_env}
        with open(self.autossh_err, "ab") as fh:
            self.autossh = self.rig.popen(
                "rt",
                self.autossh_argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.autossh_starts += 1

    def stop_autossh(self) -> None:
        # SIGTERM: autossh ends its ssh child and exits; kill_tree catches any straggler.
        kill_tree(self.autossh)
        self.autossh = None

    def autossh_child(self, timeout: float = 0.0) -> int | None:
        deadline = time.monotonic() + timeout
        while True:
            if self.autossh is not None and self.autossh.poll() is None:
                kids = [c for c in children(self.autossh.pid) if pid_alive(c)]
                if kids:
                    return kids[0]
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    # -- ours -------------------------------------------------------------------------------
    def ours_status(self) -> dict[str, Any]:
        res = self.rig.handy("rt", "status", "--json", timeout=30)
        try:
            st: dict[str, Any] = json.loads(res.stdout)
        except ValueError:
            return {}
        return st

    def ours_restart(self) -> None:
        log(f"{self.mode}: ours: down + up")
        self.rig.handy("rt", "down", timeout=60)
        res = self.rt.up()
        if res.returncode != 0:
            raise RuntimeError(f"{self.mode}: up failed: {res.stderr or res.stdout}")

    # -- probing ----------------------------------------------------------------------------
    def ssh_ok(self, argv: list[str]) -> bool:
        try:
            res = self.rig.run("laptop", argv, timeout=ATTEMPT_TIMEOUT)
        except subprocess.TimeoutExpired:
            return False
        return res.returncode == 0

    def wait_ok(self, argv: list[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ssh_ok(argv):
                return True
            time.sleep(0.5)
        return False

    def probe_cost(self, n: int = 5) -> dict[str, Any]:
        """Seconds one `ssh NAME true` takes on a healthy, otherwise idle rig: the floor under
        every recovery time of this mode."""
        out: dict[str, Any] = {}
        for side, argv in (("ours", self.ours_poll), ("autossh", self.base_poll)):
            times = []
            for _ in range(n):
                t = time.monotonic()
                ok = self.ssh_ok(argv)
                times.append(time.monotonic() - t if ok else None)
            good = [x for x in times if x is not None]
            out[side] = {"samples": times, "median": statistics.median(good) if good else None}
        return out

    def relay_listener_pids(self, side: str) -> set[int]:
        """Pids of the relay's sessions that hold a side's forward (read with ss, no packet)."""
        if self.mode == "public":
            port = REMOTE_PORT if side == "ours" else BASE_REMOTE_PORT
            out = self.rig.run("relay", ["ss", "-ltnpH", f"( sport = :{port} )"]).stdout
            lines = out.splitlines()
        else:
            path = self.rig.relay_socket if side == "ours" else self.base_socket
            out = self.rig.run("relay", ["ss", "-lxpH"]).stdout
            lines = [ln for ln in out.splitlines() if f" {path} " in f" {ln} "]
        return {int(m) for ln in lines for m in _USERS_PID.findall(ln)}

    def rt_tuple(self, pid: int) -> tuple[str, int, str, int] | None:
        """The (local ip, local port, relay ip, relay port) of a tunnel ssh's TCP connection."""
        out = self.rig.run("rt", ["ss", "-tnpH", "state", "established", "( dport = :22 )"]).stdout
        for ln in out.splitlines():
            m = _TUPLE.search(ln)
            if m and int(m.group(5)) == pid and f"pid={pid}," in ln:
                return m.group(1), int(m.group(2)), m.group(3), int(m.group(4))
        return None

    # -- one repetition ---------------------------------------------------------------------
    def prepare(self) -> dict[str, Any]:
        """Both sides healthy and quiet, autossh fresh: the start of an independent rep."""
        t0 = time.monotonic()
        notes: list[str] = []
        if self.base_sshd is None or self.base_sshd.poll() is not None:
            self.start_base_sshd()
            notes.append("baseline sshd restarted")
        self.start_autossh()
        st = self.ours_status()
        if not pid_alive(st.get("pid")) or st.get("phase") not in ("ready", "reconnecting"):
            self.ours_restart()
            notes.append("ours down+up (supervisor not running)")
        if not self.wait_ok(self.ours_poll, 60):
            self.ours_restart()
            notes.append("ours down+up (not reachable within 60 s)")
            if not self.wait_ok(self.ours_poll, 60):
                raise RuntimeError(f"{self.mode}: ours not reachable after down+up")
        if not self.wait_ok(self.base_poll, 60):
            self.start_base_sshd()
            self.start_autossh()
            notes.append("autossh + sshd restarted (not reachable within 60 s)")
            if not self.wait_ok(self.base_poll, 60):
                raise RuntimeError(f"{self.mode}: autossh baseline not reachable")
        time.sleep(SETTLE)
        return {"prepare_s": time.monotonic() - t0, "notes": notes}

    def inject(self, fault: str, st: dict[str, Any]) -> dict[str, Fault]:
        """Apply ``fault`` to both sides; return per side when it ended and how to poll."""
        ours_pid = (st.get("tunnel") or {}).get("pid")
        ours_sup = st.get("pid")
        auto = self.autossh
        assert auto is not None
        auto_child = self.autossh_child(timeout=5)
        if not ours_pid or not auto_child:
            raise RuntimeError(
                f"{self.mode}: no tunnel pid (ours {ours_pid}, autossh {auto_child})"
            )

        def ours_dead() -> str | None:
            return None if pid_alive(ours_sup) else "supervisor exited"

        def auto_dead() -> str | None:
            if auto.poll() is not None:
                return f"autossh exited with status {auto.returncode}"
            if self.base_sshd is None or self.base_sshd.poll() is not None:
                return "the baseline's sshd is gone and nothing restarts it"
            return None

        def at(t: float, **info: Any) -> dict[str, Fault]:
            return {
                "ours": Fault(t, dict(info), dead=ours_dead),
                "autossh": Fault(t, dict(info), dead=auto_dead),
            }

        if fault in ("kill9", "exit0"):
            sig = signal.SIGKILL if fault == "kill9" else signal.SIGTERM
            os.kill(ours_pid, sig)
            t_ours = time.monotonic()
            os.kill(auto_child, sig)
            t_auto = time.monotonic()
            return {
                "ours": Fault(t_ours, {"pid": ours_pid, "signal": sig.name}, dead=ours_dead),
                "autossh": Fault(t_auto, {"pid": auto_child, "signal": sig.name}, dead=auto_dead),
            }
        if fault == "sshd_kill":
            srv = (st.get("server") or {}).get("pid")
            assert self.base_sshd is not None
            if not srv:
                raise RuntimeError(f"{self.mode}: no server pid in status")
            os.kill(srv, signal.SIGKILL)
            t_ours = time.monotonic()
            os.kill(self.base_sshd.pid, signal.SIGKILL)
            t_auto = time.monotonic()
            return {
                "ours": Fault(t_ours, {"pid": srv}, dead=ours_dead),
                "autossh": Fault(t_auto, {"pid": self.base_sshd.pid}, dead=auto_dead),
            }
        if fault == "relay_restart":
            t0 = time.monotonic()
            self.rig.restart_relay(self.args.relay_down)
            t = time.monotonic()
            return at(t, fault_s=t - t0, down_s=self.args.relay_down)
        if fault in ("block20", "block90"):
            secs = 20.0 if fault == "block20" else 90.0
            t0 = time.monotonic()
            self.rig.block_runtime()
            try:
                time.sleep(secs)
            finally:
                self.rig.unblock_runtime()
            t = time.monotonic()
            return at(t, fault_s=t - t0)
        if fault == "stale":
            return self.inject_stale(ours_pid, auto_child, ours_dead, auto_dead)
        raise ValueError(fault)

    def inject_stale(
        self,
        ours_pid: int,
        auto_child: int,
        ours_dead: Callable[[], str | None],
        auto_dead: Callable[[], str | None],
    ) -> dict[str, Fault]:
        out: dict[str, Fault] = {}
        plan = []
        for side, pid in (("ours", ours_pid), ("autossh", auto_child)):
            tup = self.rt_tuple(pid)
            old = self.relay_listener_pids(side)
            if tup is None or not old:
                raise RuntimeError(
                    f"{self.mode} {side}: tunnel connection of pid {pid} "
                    f"({tup}) or relay listener ({old}) not found"
                )
            lip, lport, rip, rport = tup
            for rule in (
                [
                    "OUTPUT",
                    "-p",
                    "tcp",
                    "-s",
                    lip,
                    "--sport",
                    str(lport),
                    "-d",
                    rip,
                    "--dport",
                    str(rport),
                    "-j",
                    "DROP",
                ],
                [
                    "INPUT",
                    "-p",
                    "tcp",
                    "-s",
                    rip,
                    "--sport",
                    str(rport),
                    "-d",
                    lip,
                    "--dport",
                    str(lport),
                    "-j",
                    "DROP",
                ],
            ):
                self.rig.run("rt", ["iptables", "-I", rule[0], "1", *rule[1:]], check=True)
                self.fault_rules.append(rule)
            plan.append((side, pid, tup, old))
        for side, pid, tup, old in plan:
            os.kill(pid, signal.SIGKILL)
            t = time.monotonic()
            info = {"pid": pid, "tuple": list(tup), "relay_session_pids": sorted(old)}

            def gone(old: set[int] = old) -> bool:
                return not any(pid_alive(p) for p in old)

            # Public: the old listener holds the port; polling it would keep it alive.
            # Private: a new tunnel replaces the socket at once; poll from the kill.
            out[side] = Fault(
                t,
                info,
                gate=gone if self.mode == "public" else None,
                dead=ours_dead if side == "ours" else auto_dead,
            )
            out[side].info["stale_gone"] = gone
        return out

    def clear_fault(self) -> None:
        while self.fault_rules:
            rule = self.fault_rules.pop()
            self.rig.run("rt", ["iptables", "-D", rule[0], *rule[1:]])

    def measure(self, argv: list[str], f: Fault) -> dict[str, Any]:
        """Poll ``ssh ... true`` from the laptop from f.t_end until success or give-up."""
        a = self.args
        inflight: list[tuple[float, subprocess.Popen[bytes]]] = []
        attempts = 0
        errors: dict[str, int] = {}
        gate_at: float | None = None
        stale_gone_at: float | None = None
        stale_gone = f.info.pop("stale_gone", None)
        out: dict[str, Any] = {}
        next_launch = f.t_end
        try:
            while True:
                now = time.monotonic()
                if stale_gone is not None and stale_gone_at is None and stale_gone():
                    stale_gone_at = now
                for item in list(inflight):
                    start, p = item
                    rc = p.poll()
                    if rc is None:
                        if now - start > ATTEMPT_TIMEOUT:
                            with contextlib.suppress(ProcessLookupError):
                                os.killpg(p.pid, signal.SIGKILL)
                        continue
                    inflight.remove(item)
                    err = p.stderr.read().decode(errors="replace") if p.stderr else ""
                    if p.stderr:
                        p.stderr.close()
                    if rc == 0:
                        out = {
                            "recovered": True,
                            "seconds": now - f.t_end,
                            "success_attempt_start_s": start - f.t_end,
                            "success_attempt_s": now - start,
                        }
                        break
                    key = (err.strip().splitlines() or [f"rc {rc}"])[-1][:120]
                    key = re.sub(r"\d{4,}", "N", key)
                    errors[key] = errors.get(key, 0) + 1
                if out:
                    break
                if now - f.t_end >= a.deadline:
                    out = {"recovered": False, "reason": f"no success within {a.deadline:.0f} s"}
                    break
                if f.dead is not None and now - f.t_end >= a.dead_poll:
                    why = f.dead()
                    if why:
                        out = {
                            "recovered": False,
                            "reason": f"{why} (polled {now - f.t_end:.0f} s)",
                        }
                        break
                if gate_at is None:
                    if f.gate is None or f.gate():
                        gate_at = now
                    else:
                        time.sleep(0.2)
                        continue
                if now >= next_launch and len(inflight) < MAX_INFLIGHT:
                    p = subprocess.Popen(
                        ["ip", "netns", "exec", self.rig.ns["laptop"], *argv],
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE,
                        start_new_session=True,
                        env=self.rig.env(),
                    )
                    inflight.append((now, p))
                    attempts += 1
                    next_launch = now + a.poll_interval
                time.sleep(0.02)
        finally:
            for _start, p in inflight:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                if p.stderr:
                    p.stderr.close()
        out.update(
            attempts=attempts,
            errors=errors,
            fault_end_wall=time.time() - (time.monotonic() - f.t_end),
            polling_started_s=None if gate_at is None else gate_at - f.t_end,
        )
        if stale_gone is not None:
            out["relay_dropped_stale_s"] = (
                None if stale_gone_at is None else stale_gone_at - f.t_end
            )
            out["_stale_gone"] = stale_gone
        return out

    def run_rep(self, fault: str, rep: int) -> dict[str, Any]:
        prep = self.prepare()
        st = self.ours_status()
        offsets = {
            "sup": size(self.supervisor_log),
            "auto": size(self.autossh_log),
            "auto_err": size(self.autossh_err),
        }
        auto_pid = self.autossh.pid if self.autossh else None
        try:
            faults = self.inject(fault, st)
            with concurrent.futures.ThreadPoolExecutor(2) as ex:
                futs = {
                    "ours": ex.submit(self.measure, self.ours_poll, faults["ours"]),
                    "autossh": ex.submit(self.measure, self.base_poll, faults["autossh"]),
                }
                samples = {side: fut.result() for side, fut in futs.items()}
            for side in SIDES:
                samples[side]["fault"] = {
                    k: v for k, v in faults[side].info.items() if not callable(v)
                }
            if fault == "stale":
                self.after_stale(samples, faults)
        finally:
            self.clear_fault()
        st2 = self.ours_status()
        for side in SIDES:
            samples[side].pop("_stale_gone", None)
        samples["ours"]["reconnects"] = (st2.get("tunnel") or {}).get("reconnects", 0) - (
            st.get("tunnel") or {}
        ).get("reconnects", 0)
        samples["ours"]["server_restarts"] = (st2.get("server") or {}).get("restarts", 0) - (
            st.get("server") or {}
        ).get("restarts", 0)
        samples["ours"]["log"] = tail_from(
            self.supervisor_log,
            offsets["sup"],
            lambda ln: any(
                k in ln
                for k in (
                    " __main__: ",
                    " handy_colab.supervisor: ",
                    " WARNING ",
                    " ERROR ",
                    "relay accepted",
                )
            ),
        )
        samples["ours"]["tunnel_back_s"] = tunnel_back(
            samples["ours"]["log"], samples["ours"].get("fault_end_wall")
        )
        auto_log = tail_from(self.autossh_log, offsets["auto"], limit=400)
        samples["autossh"]["ssh_starts"] = sum(1 for ln in auto_log if "starting ssh" in ln)
        samples["autossh"]["log"] = tail_from(self.autossh_log, offsets["auto"])
        samples["autossh"]["ssh_stderr"] = tail_from(
            self.autossh_err, offsets["auto_err"], limit=12
        )
        samples["autossh"]["autossh_pid"] = auto_pid
        samples["autossh"]["autossh_exit"] = (
            self.autossh.poll() if self.autossh is not None else None
        )
        for side in SIDES:
            s = samples[side]
            r = f"{s['seconds']:.2f}s" if s["recovered"] else f"NO ({s['reason']})"
            extra = (
                f", relay dropped stale at {s['relay_dropped_stale_s']:.1f}s"
                if s.get("relay_dropped_stale_s") is not None
                else ""
            )
            log(
                f"  {self.mode} {fault} rep {rep + 1} {side:7s}: {r} "
                f"[{s['attempts']} attempts{extra}]"
            )
        return {"prepare": prep, **samples}

    def after_stale(self, samples: dict[str, dict[str, Any]], faults: dict[str, Fault]) -> None:
        """Wait (without probing) until the relay drops both old sessions, then check again:
        the old session's end must not take the new forward with it."""
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            pending = 0
            for side in SIDES:
                s = samples[side]
                if s.get("relay_dropped_stale_s") is None:
                    if s["_stale_gone"]():
                        s["relay_dropped_stale_s"] = time.monotonic() - faults[side].t_end
                    else:
                        pending += 1
            if not pending:
                break
            time.sleep(0.2)
        for side, argv in (("ours", self.ours_poll), ("autossh", self.base_poll)):
            if samples[side]["recovered"]:
                samples[side]["ok_after_stale_dropped"] = self.ssh_ok(argv)

    # -- teardown ---------------------------------------------------------------------------
    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.clear_fault()
        self.stop_autossh()
        kill_tree(self.base_sshd)
        self.base_sshd = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.base_socket)


def exit_status_probe(mb: ModeBench) -> dict[str, Any]:
    """Which signal makes a plain `ssh -N -R` exit 0 (what autossh takes as "deliberate").

    SIGINT is left out: started from a background shell job, children inherit it ignored."""
    out: dict[str, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        p = mb.rig.popen(
            "rt",
            [
                "ssh",
                "-N",
                "-i",
                str(mb.rt.relay_key),
                "-o",
                "BatchMode=yes",
                "-o",
                f"UserKnownHostsFile={mb.base_dir / 'relay_known_hosts'}",
                "-o",
                "ExitOnForwardFailure=yes",
                "-R",
                "2999:127.0.0.1:9",
                f"{RELAY_USER}@{RELAY_IP}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        # Wait until the forward is up (the relay holds a session for it), then signal.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and p.poll() is None:
            ss = mb.rig.run("relay", ["ss", "-ltnH", "( sport = :2999 )"]).stdout
            if ss.strip():
                break
            time.sleep(0.1)
        os.kill(p.pid, sig)
        try:
            out[sig.name] = p.wait(10)
        except subprocess.TimeoutExpired:
            kill_tree(p, signal.SIGKILL)
            out[sig.name] = "did not exit"
        time.sleep(0.3)
    return out


def tunnel_back(log_lines: list[str], fault_end: float | None) -> float | None:
    """Seconds from the fault's end to the supervisor's "tunnel re-opened" line (None: the
    tunnel was not re-opened, e.g. only sshd was restarted): how long the heal itself took,
    without the laptop's own login that the main figure includes."""
    if fault_end is None:
        return None
    back = None
    for ln in log_lines:
        if "tunnel re-opened" in ln:
            with contextlib.suppress(ValueError):
                stamp = datetime.datetime.strptime(ln[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
                back = stamp - fault_end
    return back


def recovery_summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    vals = [s["seconds"] for s in samples if s["recovered"]]
    failed = len(samples) - len(vals)
    # A run that never recovered counts as +inf: the median is honest about it.
    med = statistics.median([*vals, *[math.inf] * failed]) if samples else None
    return {
        "median": None if med is None or math.isinf(med) else med,
        "median_is_no_recovery": bool(med is not None and math.isinf(med)),
        "min": min(vals) if vals else None,
        "max": max(vals) if vals else None,
        "recovered": len(vals),
        "runs": len(samples),
    }


def cells(s: dict[str, Any]) -> list[str]:
    """median, min, max for the table; runs without recovery are named, never hidden."""
    if s["runs"] == 0:
        return ["-", "-", "-"]
    if s["recovered"] == 0:
        return ["no recovery", "-", "-"]
    med = "no recovery" if s["median_is_no_recovery"] else f"{s['median']:.2f}"
    missed = s["runs"] - s["recovered"]
    if missed:
        med += f" ({missed}/{s['runs']} no recovery)"
    return [med, f"{s['min']:.2f}", f"{s['max']:.2f}"]


def markdown(result: dict[str, Any]) -> str:
    m, p = result["machine"], result["params"]
    lines = [
        f"## handy-colab recovery benchmark ({m['date']}, nproc {m['nproc_cmd']}, "
        f"{m['ssh_version'].split(',')[0]}, {m.get('autossh_version', 'autossh ?')})",
        "",
        "Seconds from the end of the fault until `ssh NAME true` from the laptop "
        f"succeeds again; {p['runs']} runs per fault and side, both sides hit at once "
        f"in the same rig. Deadline {p['deadline_s']:.0f} s; a side that provably cannot "
        f"recover is polled {p['dead_poll_s']:.0f} s. Ratio = autossh median / ours "
        "median.",
        "",
        "| fault | mode | ours median | ours min | ours max | autossh median | "
        "autossh min | autossh max | ratio | ours: tunnel back (log) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes: list[str] = []
    for fault, modes in result["results"].items():
        for mode, r in modes.items():
            o, b = r["ours"]["summary"], r["autossh"]["summary"]
            ratio = r.get("ratio_autossh_over_ours")
            rs = (
                "-"
                if b["median_is_no_recovery"] or o["median_is_no_recovery"] or ratio is None
                else f"{ratio:.1f}x"
            )
            label = FAULTS[fault]
            if fault == "relay_restart":
                label += f" (down {p['relay_down_s']:g} s)"
            row = [label, mode]
            for s in (o, b):
                row += cells(s)
            backs = [
                x["tunnel_back_s"]
                for x in r["ours"]["samples"]
                if x.get("tunnel_back_s") is not None
            ]
            back = f"{statistics.median(backs):.2f}" if backs else "-"
            lines.append("| " + " | ".join([*row, rs, back]) + " |")
            for side in SIDES:
                reasons = sorted({x["reason"] for x in r[side]["samples"] if not x["recovered"]})
                if reasons:
                    notes.append(f"{fault}/{mode}/{side}: no recovery: {'; '.join(reasons)}")
    for mode, r in (result["results"].get("stale") or {}).items():
        for side in SIDES:
            known = [
                x["relay_dropped_stale_s"]
                for x in r[side]["samples"]
                if x.get("relay_dropped_stale_s") is not None
            ]
            oks = [
                x["ok_after_stale_dropped"]
                for x in r[side]["samples"]
                if "ok_after_stale_dropped" in x
            ]
            if known:
                notes.append(
                    f"stale/{mode}/{side}: the relay dropped the old session "
                    f"{statistics.median(known):.1f} s after the kill (median; "
                    f"{min(known):.1f}-{max(known):.1f}); still reachable after "
                    f"that: {sum(1 for o in oks if o)}/{len(oks)}"
                )
    for fault, modes in result["results"].items():
        for mode, r in modes.items():
            if r.get("errors"):
                notes.append(
                    f"{fault}/{mode}: {len(r['errors'])} repetition(s) failed and "
                    f"are not counted: {r['errors']}"
                )
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    if result.get("probe_cost"):
        lines += [
            "",
            "One `ssh NAME true` on the healthy, idle rig (the floor under every "
            "number above), median s: "
            + ", ".join(
                f"{mode} ours {fmt(c['ours']['median'], '.2f')} / autossh "
                f"{fmt(c['autossh']['median'], '.2f')}"
                for mode, c in result["probe_cost"].items()
            ),
        ]
    if result.get("exit_status_probe"):
        lines += [
            "",
            "Exit status of `ssh -N -R` by signal (OpenSSH here): "
            + ", ".join(f"{k} -> {v}" for k, v in result["exit_status_probe"].items()),
        ]
    if result.get("error"):
        lines += ["", f"ERROR: {result['error']}"]
    if result.get("leftovers"):
        lines += ["", f"LEFTOVERS: {result['leftovers']}"]
    return "\n".join(lines) + "\n"


class Bench:
    def __init__(self, args: argparse.Namespace, faults: list[str], modes: list[str]) -> None:
        self.args = args
        self.faults = faults
        self.modes = modes
        self.work = Path(tempfile.mkdtemp(prefix="hc-bench-rec-"))
        self.benches: list[ModeBench] = []
        self.prefixes: list[str] = []
        self.leftovers: list[str] = []
        mi = machine_info()
        mi["autossh_version"] = (
            sh("autossh", "-V", check=False).stdout.strip()
            if shutil.which("autossh")
            else "missing"
        )
        self.result: dict[str, Any] = {
            "machine": mi,
            "params": {
                "runs": args.runs,
                "faults": faults,
                "modes": modes,
                "deadline_s": args.deadline,
                "dead_poll_s": args.dead_poll,
                "poll_interval_s": args.poll_interval,
                "relay_down_s": args.relay_down,
                "poll_ssh_options": POLL_OPTIONS,
                "attempt_timeout_s": ATTEMPT_TIMEOUT,
                "max_inflight_attempts": MAX_INFLIGHT,
                "settle_s": SETTLE,
                "autossh": {
                    "options": AUTOSSH_OPTIONS,
                    "env": AUTOSSH_ENV,
                    "fresh_per_repetition": True,
                },
                "recovery_definition": "end of the first successful `ssh NAME true` from the "
                "laptop namespace minus the end of the fault",
                "fault_end": {
                    "kill9": "the SIGKILL",
                    "exit0": "the SIGTERM",
                    "sshd_kill": "the SIGKILL",
                    "relay_restart": "relay listens again",
                    "block20": "the unblock",
                    "block90": "the unblock",
                    "stale": "the SIGKILL (public: polling waits until the relay's "
                    "old session exits)",
                },
                "modes_in_parallel": True,
            },
            "results": {},
            "raw": {},
        }

    def setup(self) -> None:
        with concurrent.futures.ThreadPoolExecutor(len(self.modes)) as ex:
            futs = {m: ex.submit(self._make, m) for m in self.modes}
            errors = []
            for m, fut in futs.items():
                try:
                    fut.result()
                except Exception as exc:
                    errors.append(f"{m}: {exc!r}")
            if errors:
                raise RuntimeError("; ".join(errors))
        self.benches.sort(key=lambda b: self.modes.index(b.mode))
        per_mode: dict[str, Any] = {}
        for mb in self.benches:
            per_mode[mb.mode] = {
                "autossh_argv": mb.autossh_argv,
                "autossh_env": mb.autossh_env,
                "baseline_laptop_config": (mb.base_dir / "laptop_config").read_text(),
                "ours_tunnel_config": (mb.rig.state_dir / "colab" / "tunnel_ssh_config").read_text()
                if (mb.rig.state_dir / "colab" / "tunnel_ssh_config").exists()
                else None,
                "ours_laptop_config": mb.rt.ssh_config.read_text(),
            }
        self.result["params"]["per_mode"] = per_mode
        self.result["probe_cost"] = {mb.mode: mb.probe_cost() for mb in self.benches}
        log(f"idle `ssh true` cost: {self.result['probe_cost']}")
        self.result["exit_status_probe"] = exit_status_probe(self.benches[0])
        log(f"exit status of ssh -N by signal: {self.result['exit_status_probe']}")

    def _make(self, mode: str) -> None:
        mb = ModeBench(mode, self.work / mode, self.args)
        with self._lock:
            self.benches.append(mb)
            self.prefixes.append(mb.rig.prefix)
        log(f"{mode}: rig {mb.rig.prefix} built; ours and autossh up")

    _lock = threading.Lock()

    def run(self) -> None:
        with concurrent.futures.ThreadPoolExecutor(len(self.benches)) as ex:
            for fault in self.faults:
                raw: dict[str, list[Any]] = {mb.mode: [] for mb in self.benches}
                self.result["raw"][fault] = raw
                t0 = time.monotonic()
                for rep in range(self.args.runs):
                    futs = {mb.mode: ex.submit(mb.run_rep, fault, rep) for mb in self.benches}
                    for mode, fut in futs.items():
                        try:
                            raw[mode].append(fut.result())
                        except Exception as exc:
                            # One broken repetition must not cost the whole run: the next
                            # prepare() brings both sides back (or fails loudly).
                            log(f"  {mode} {fault} rep {rep + 1} FAILED: {exc!r}")
                            raw[mode].append({"error": repr(exc)})
                self.summarise(fault)
                log(f"{fault}: done in {time.monotonic() - t0:.0f}s")

    def summarise(self, fault: str) -> None:
        out: dict[str, Any] = {}
        for mode, reps in self.result["raw"][fault].items():
            r: dict[str, Any] = {"errors": [rep["error"] for rep in reps if "error" in rep]}
            for side in SIDES:
                samples = [rep[side] for rep in reps if "error" not in rep]
                r[side] = {
                    "samples_s": [s["seconds"] if s["recovered"] else None for s in samples],
                    "samples": samples,
                    "summary": recovery_summary(samples),
                }
            o, b = r["ours"]["summary"]["median"], r["autossh"]["summary"]["median"]
            r["ratio_autossh_over_ours"] = b / o if o and b else None
            out[mode] = {
                k: (
                    v
                    if k.startswith(("ratio", "errors"))
                    else {
                        "samples_s": v["samples_s"],
                        "summary": v["summary"],
                        "samples": [
                            {k2: v2 for k2, v2 in s.items() if k2 != "log"} for s in v["samples"]
                        ],
                    }
                )
                for k, v in r.items()
            }
        self.result["results"][fault] = out

    def close(self) -> None:
        for mb in self.benches:
            try:
                mb.close()
            except Exception as exc:
                self.leftovers.append(f"{mb.mode}: baseline close failed: {exc!r}")
            close_runtime(mb.rt, self.leftovers, finish)
        self.benches.clear()
        shutil.rmtree(self.work, ignore_errors=True)
        self.result["leftovers"] = self.leftovers + stale_namespaces(self.prefixes)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="repetitions per fault (and mode)")
    ap.add_argument(
        "--faults", default=",".join(FAULTS), help=f"comma-separated subset of {','.join(FAULTS)}"
    )
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated subset")
    ap.add_argument(
        "--deadline",
        type=float,
        default=180.0,
        help="seconds after the fault's end before a side counts as not recovered",
    )
    ap.add_argument(
        "--dead-poll",
        type=float,
        default=20.0,
        help="seconds to poll a side that provably cannot recover",
    )
    ap.add_argument(
        "--poll-interval", type=float, default=0.5, help="seconds between polling attempts"
    )
    ap.add_argument(
        "--relay-down",
        type=float,
        default=3.0,
        help="seconds the relay stays down in relay_restart",
    )
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "recovery.json")
    args = ap.parse_args(argv)
    missing = prerequisites()
    if shutil.which("autossh") is None:
        missing.append("autossh (apt-get install -y autossh)")
    if missing:
        print(f"cannot run: missing {', '.join(missing)}", file=sys.stderr)
        return 2
    modes = [m for m in args.modes.split(",") if m]
    faults = [f for f in args.faults.split(",") if f]
    if not modes or any(m not in MODES for m in modes):
        ap.error(f"--modes must be a subset of {','.join(MODES)}")
    if not faults or any(f not in FAULTS for f in faults):
        ap.error(f"--faults must be a subset of {','.join(FAULTS)}")
    if args.runs < 1:
        ap.error("--runs must be at least 1")

    bench = Bench(args, faults, modes)

    def body() -> None:
        bench.setup()
        bench.run()

    return run_main(bench, body, args.out, markdown)


if __name__ == "__main__":
    sys.exit(main())
