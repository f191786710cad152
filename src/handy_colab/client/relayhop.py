"""Private mode's ProxyCommand on Linux and macOS: a relay connection held between sessions.

Why: with a ProxyCommand that imports asyncssh and logs in to the relay for every ``ssh
NAME``, a private-mode ``ssh true`` took 0.65 s where a public one takes 0.40 s (2-vCPU test
rig). OpenSSH 9.2's ``ssh -W`` cannot open a Unix socket, so the relay hop cannot be
ProxyJump. Instead one OpenSSH master connection to the relay (ControlPersist) holds a local
forward ``DIR/KEY.s`` -> the runtime's socket on the relay, and the ProxyCommand is this
stdlib-only script, run with ``python -I -S``: it connects to that socket (starting the
master when there is none) and copies bytes. ``connect`` starts the master ahead of the
first ``ssh`` (``--prestart``).

The master lives ``PERSIST`` seconds after its last session ends (ssh's ControlPersist),
dies with the relay connection (ServerAlive), and ``handy-colab disconnect`` (holds.py)
ends it at once. Its sockets, log, lock and pid file are 0600 in a 0700 folder beside the
pinned known_hosts. Windows' OpenSSH has no ControlMaster: there the asyncssh proxy
(streamlocal.py) stays.

This file must not import the package (it runs as a script, without site-packages), and
imports only what is cheap to start: no contextlib, typing or the socket wrapper module.
"""
# ruff: noqa: SIM105

from __future__ import annotations

import _socket as socket  # the C module: `socket` imports enum, selectors, collections
import errno
import os
import select
import sys
import time
import zlib

HOLD_DIR = "handy-colab-hop"
PERSIST = 600  # s a held relay connection outlives its last session (ssh's ControlPersist)
PERSIST_ENV = "HANDY_COLAB_HOLD_SECONDS"
FIRST_BYTE = 5.0  # s for the runtime's banner through a held connection before it is replaced
_CHUNK = 256 * 1024


def max_dir_len() -> int:
    """The longest folder whose sockets fit in sockaddr_un (104 bytes on macOS and the BSDs,
    108 on Linux, with the NUL): ssh binds its control socket at PATH + ".XXXXXXXXXXXXXXXX"
    first. Longer folders keep the asyncssh proxy."""
    room = 108 if sys.platform.startswith("linux") else 104
    return room - 1 - len("/0123456789.c") - len(".XXXXXXXXXXXXXXXX")


def persist_seconds() -> int:
    """ControlPersist: PERSIST, or HANDY_COLAB_HOLD_SECONDS if that is a positive integer."""
    value = os.environ.get(PERSIST_ENV, "")
    return int(value) if value.isdigit() and int(value) > 0 else PERSIST


class HopError(Exception):
    """A one-line reason the hop cannot carry this session."""


class Hold:
    """The files of one held relay connection: per relay and runtime socket."""

    def __init__(self, folder: str, config: str, relay: str, remote: str, tag: str = "") -> None:
        # Not a secret, only a short unique name (sockaddr_un is short): two checksums.
        text = f"{config}\0{relay}\0{remote}\0{tag}".encode()
        key = f"{zlib.crc32(text):08x}{zlib.adler32(text) & 0xFF:02x}"
        self.folder, self.config, self.relay, self.remote = folder, config, relay, remote
        base = os.path.join(folder, key)
        self.sock, self.ctl, self.lock, self.log, self.pid = (
            base + ".s",
            base + ".c",
            base + ".lock",
            base + ".log",
            base + ".pid",
        )

    def ssh(self, *args: str) -> list[str]:
        return ["ssh", "-F", self.config, "-o", f"ControlPath={_option_word(self.ctl)}", *args]


def _option_word(path: str) -> str:
    """A path as ssh reads an ``-o`` value: split like a config line, then ``%``-expanded
    (a folder named "50%done" or "a b" is one word, its own). connect keeps ``${``, ``:``
    and ``\\`` out of the folder (ControlPath has no escape for the first, -L splits on
    the second and drops the third)."""
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%") + '"'


def _connect(path: str) -> socket.socket | None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return s
    except OSError as exc:
        s.close()
        if exc.errno in (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK):
            return None
        raise HopError(f"cannot use {path}: {exc.strerror}") from None


def _last_log_line(hold: Hold) -> str:
    try:
        with open(hold.log, encoding="utf-8", errors="replace") as f:
            lines = [ln.strip() for ln in f.read().splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


# As the runtime's tunnel (tunnels/openssh.py TUNNEL_KEX, which a unit test keeps equal to
# this; this script cannot import the package): the held connection carries only the
# sessions' own end-to-end SSH, so its log-in offers ML-KEM or curve25519 first rather than
# OpenSSH 9.0-9.8's slow sntrup761 (~85 ms of each log-in on the machines measured).
HOP_KEX = (
    "mlkem768x25519-sha256",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "ecdh-sha2-nistp256",
    "ecdh-sha2-nistp384",
    "ecdh-sha2-nistp521",
    "diffie-hellman-group-exchange-sha256",
    "diffie-hellman-group16-sha512",
    "diffie-hellman-group18-sha512",
    "diffie-hellman-group14-sha256",
)


def hop_kex(ssh: str = "ssh") -> list[str]:
    """``-o KexAlgorithms=...`` with those of HOP_KEX this ssh knows; [] (its default) if it
    cannot say."""
    import subprocess

    try:
        res = subprocess.run(
            [ssh, "-Q", "kex"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    known = set(res.stdout.split())
    chosen = [k for k in HOP_KEX if k in known]
    return ["-o", "KexAlgorithms=" + ",".join(chosen)] if res.returncode == 0 and chosen else []


def _start_master(hold: Hold) -> None:
    """Log in to the relay with OpenSSH and hold the forward (under the caller's lock)."""
    import subprocess

    for stale in (hold.ctl, hold.sock):
        _unlink(stale)
    argv = hold.ssh(
        *hop_kex(),
        "-f",
        "-N",
        "-o",
        "ControlMaster=yes",
        "-o",
        f"ControlPersist={persist_seconds()}",
        "-o",
        "ExitOnForwardFailure=yes",
        "-o",
        "StreamLocalBindUnlink=yes",
        "-o",
        "StreamLocalBindMask=0177",
        "-o",
        "ServerAliveInterval=5",
        "-o",
        "ServerAliveCountMax=3",
        "-o",
        "ConnectTimeout=15",
        "-L",
        f"{hold.sock.replace('%', '%%')}:{hold.remote}",  # -L is %-expanded, not split
        hold.relay,
    )
    fd = os.open(hold.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        # A new session: the terminal's ^C and the ProxyCommand's SIGHUP are not its.
        # Its stderr is the log, never ssh's: whoever reads ssh's stderr would wait on it.
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=fd,
            start_new_session=True,
            timeout=60,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise HopError(f"no answer from the relay {hold.relay} within 60s") from None
    finally:
        os.close(fd)
    if proc.returncode != 0:
        why = _last_log_line(hold) or f"ssh exited with {proc.returncode}"
        raise HopError(f"cannot log in to the relay {hold.relay}: {why} (log: {hold.log})")
    # Its pid, for end_master: a frozen (stopped) master cannot answer `-O exit`.
    check = subprocess.run(
        hold.ssh("-O", "check", hold.relay),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    pid = check.stderr.partition("(pid=")[2].partition(")")[0]
    if pid.isdigit():
        fd = os.open(hold.pid, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, pid.encode())
        os.close(fd)


def _master_pid(hold: Hold) -> int | None:
    """The pid the master had when it started, if that process still runs ssh with our
    control socket (pids are reused)."""
    try:
        with open(hold.pid) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            mine = f"ControlPath={_option_word(hold.ctl)}".encode() in f.read()
    except OSError:
        # No /proc (macOS): ps says which command the pid runs.
        import subprocess

        out = subprocess.run(
            ["ps", "-o", "command=", "-p", str(pid)], capture_output=True, check=False
        ).stdout
        mine = f"ControlPath={_option_word(hold.ctl)}".encode() in out
    return pid if mine else None


def end_master(hold: Hold) -> None:
    """Ask a held connection to exit (its control socket answers even if the relay does
    not), then remove its files."""
    import subprocess

    if os.path.exists(hold.ctl):
        try:
            subprocess.run(
                hold.ssh("-O", "exit", hold.relay),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=2,
                check=False,
            )
        except (subprocess.TimeoutExpired, OSError):
            pass
    pid = _master_pid(hold)
    if pid is not None:
        import signal

        # Still there: a stopped process cannot answer `-O exit`, SIGKILL ends it anyway.
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for path in (hold.ctl, hold.sock, hold.pid):
        _unlink(path)


def alive(hold: Hold) -> bool:
    """Whether a master answers on the control socket (connecting opens no channel)."""
    s = _connect(hold.ctl)
    if s is None:
        return False
    s.close()
    return True


class _Locked:
    """One starter at a time per held connection: the others wait for it."""

    def __init__(self, hold: Hold) -> None:
        self.hold, self.fd = hold, -1

    def __enter__(self) -> None:
        import fcntl

        os.makedirs(self.hold.folder, mode=0o700, exist_ok=True)
        self.fd = os.open(self.hold.lock, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)  # releases the lock


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def prestart(hold: Hold) -> None:
    """Make sure a master holds the forward, without opening a way to the runtime."""
    with _Locked(hold):
        if not alive(hold):
            _start_master(hold)


def held_socket(hold: Hold) -> socket.socket:
    """A connection to the runtime's socket through the held relay connection, which is
    started first if there is none."""
    s = _connect(hold.sock)
    if s is not None:
        return s
    with _Locked(hold):
        s = _connect(hold.sock)
        if s is None:
            if alive(hold):
                end_master(hold)  # a master without its forward is of no use
            _start_master(hold)
            s = _connect(hold.sock)
    if s is None:
        raise HopError(f"the relay connection to {hold.relay} holds no {hold.sock}")
    return s


def _first_bytes(s: socket.socket, pending: bytearray, deadline: float | None) -> bytes | None:
    """What the runtime sends first; None if nothing came by ``deadline``. ssh's own bytes
    are kept in ``pending`` meanwhile, so a silent connection can be replaced and they sent
    on the new one. Raises SystemExit(0) if ssh went away."""
    stdin = sys.stdin.fileno()
    while True:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([s, stdin], [], [], left)
        if s in ready:
            return s.recv(_CHUNK)
        if stdin in ready:
            data = os.read(stdin, _CHUNK)
            if not data:
                raise SystemExit(0)
            pending += data
            continue
        if deadline is not None and time.monotonic() >= deadline:
            return None


def _pump(s: socket.socket, first: bytes, pending: bytes) -> None:
    """Copy both ways until the runtime's side ends. Neither direction may wait on the
    other: a blocking send while the peer blocks on its own send (its reader being us)
    would hang both, so every fd is non-blocking and at most one chunk a way is held."""
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    s.setblocking(False)
    os.set_blocking(stdout, False)
    to_out, to_sock = bytearray(first), bytearray(pending)
    in_open, shut = True, False
    while True:
        if not in_open and not to_sock and not shut:
            shut = True
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        readers = ([stdin] if in_open and not to_sock else []) + ([s] if not to_out else [])
        writers = ([s] if to_sock else []) + ([stdout] if to_out else [])
        readable, writable, _ = select.select(readers, writers, [])
        try:
            if stdout in writable:
                del to_out[: os.write(stdout, to_out)]
            if s in writable:
                del to_sock[: s.send(to_sock)]
            if stdin in readable:
                data = os.read(stdin, _CHUNK)
                if data:
                    to_sock += data
                else:
                    in_open = False
            if s in readable:
                data = s.recv(_CHUNK)
                if not data:
                    return
                to_out += data
        except BlockingIOError:
            continue


def run(hold: Hold) -> None:
    pending = bytearray()
    for attempt in (1, 2):
        s = held_socket(hold)
        # A held connection can be frozen (a laptop that slept, a relay that vanished
        # silently) until its keepalives give up: replace it once rather than wait.
        deadline = time.monotonic() + FIRST_BYTE if attempt == 1 else None
        first = _first_bytes(s, pending, deadline)
        if first is None:
            s.close()
            end_master(hold)
            continue
        if not first:
            why = _last_log_line(hold)
            raise HopError(
                f"the relay closed the way to {hold.remote}: is the runtime up? "
                f"(`handy-colab status` on it){f'; relay says: {why}' if why else ''}"
            )
        _pump(s, first, bytes(pending))
        return


class Args:
    """The script's command line: ``[--prestart] --dir DIR [--tag TAG] -F CONFIG RELAY SOCKET``.

    TAG names what the relay's Host block said when `connect` wrote it: a relay that changes
    (another host, key or account) gets a new held connection, not the old one."""

    def __init__(self, argv: list[str]) -> None:
        self.prestart, self.folder, self.config, self.tag = False, "", "", ""
        rest: list[str] = []
        it = iter(argv)
        for arg in it:
            if arg == "--prestart":
                self.prestart = True
            elif arg in ("--dir", "-F", "--tag"):
                value = next(it, "")
                if arg == "--dir":
                    self.folder = value
                elif arg == "-F":
                    self.config = value
                else:
                    self.tag = value
            else:
                rest.append(arg)
        if not self.folder or not self.config or len(rest) != 2:
            raise HopError(
                "usage: relayhop.py [--prestart] --dir DIR [--tag TAG] -F CONFIG RELAY SOCKET_PATH"
            )
        self.relay, self.remote = rest

    def hold(self) -> Hold:
        return Hold(self.folder, self.config, self.relay, self.remote, self.tag)


def main(argv: list[str] | None = None) -> int:
    try:
        args = Args(sys.argv[1:] if argv is None else argv)
        hold = args.hold()
        if args.prestart:
            prestart(hold)
        else:
            run(hold)
    except HopError as exc:
        print(f"handy-colab proxy: {exc}", file=sys.stderr)
        return 255
    except (BrokenPipeError, ConnectionResetError, KeyboardInterrupt):
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
