"""A real NAT rig in network namespaces, shared by the e2e tests and the benchmark.

    laptop 10.99.0.3 --+
    relay  10.99.0.1 --+-- bridge --- 10.99.0.2 router (MASQUERADE) 192.168.77.1 --- runtime
                                                                           192.168.77.2

The runtime can only connect out (through the NAT); the laptop cannot reach it directly.
The relay runs a stock OpenSSH sshd with its own config, as a VPS or portmap.io would.
Needs root, iproute2, iptables and OpenSSH. Everything it makes it removes in `close()`.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RELAY_IP = "10.99.0.1"
ROUTER_OUT_IP = "10.99.0.2"
LAPTOP_IP = "10.99.0.3"
ROUTER_IN_IP = "192.168.77.1"
RUNTIME_IP = "192.168.77.2"
RELAY_USER = "hcrelay"
REPO = Path(__file__).resolve().parent.parent
_counter = itertools.count()


def sh(*argv: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, text=True, capture_output=True, **kw)


def veth(ns_a: str, name_a: str, ns_b: str, name_b: str) -> None:
    """A veth pair: ``name_a`` in namespace ``ns_a``, its peer ``name_b`` in ``ns_b``."""
    sh("ip", "link", "add", name_a, "netns", ns_a, "type", "veth", "peer", "name", name_b,
       "netns", ns_b)  # fmt: skip


def addr_up(ns: str, dev: str, ip: str) -> None:
    sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
    sh("ip", "-n", ns, "link", "set", dev, "up")


def bridge_port(br: str, port: str, ns: str, ip: str) -> None:
    """Plug namespace ``ns`` (its eth0 at ``ip``) into br0 of ``br`` through ``port``."""
    veth(ns, "eth0", br, port)
    sh("ip", "-n", br, "link", "set", port, "master", "br0", "up")
    addr_up(ns, "eth0", ip)


def behind_nat(router: str, router_ip: str, host: str, host_ip: str) -> None:
    """``host`` (eth0) behind ``router`` (eth1), which masquerades what it forwards out eth0."""
    veth(router, "eth1", host, "eth0")
    addr_up(router, "eth1", router_ip)
    addr_up(host, "eth0", host_ip)
    sh("ip", "-n", host, "route", "add", "default", "via", router_ip)
    sh("ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    sh("ip", "netns", "exec", router, "iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "eth0",
       "-j", "MASQUERADE")  # fmt: skip


def prerequisites() -> list[str]:
    """What is missing for the rig on this machine ([] when it can run)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root")
    for tool in ("ip", "iptables", "ssh", "ssh-keygen", "scp", "sftp", "rsync", "useradd"):
        if shutil.which(tool) is None:
            missing.append(tool)
    if not Path("/usr/sbin/sshd").exists():
        missing.append("/usr/sbin/sshd")
    return missing


def ensure_relay_user(name: str = RELAY_USER) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        sh("useradd", "--create-home", "--shell", "/bin/sh", name)
    # A locked account ("!") is refused by sshd without PAM; "*" is "no password", not locked.
    sh("usermod", "-p", "*", name)


def keygen(path: Path, kind: str = "ed25519", pem: bool = False) -> Path:
    argv = ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", path.name, "-f", str(path)]
    if kind == "rsa":
        argv[4:4] = ["-b", "2048"]
    if pem:
        argv += ["-m", "PEM"]
    sh(*argv)
    return path


class Rig:
    def __init__(self, workdir: Path, gateway_ports: str = "yes") -> None:
        self.work = workdir
        self.work.mkdir(parents=True, exist_ok=True)
        self.prefix = f"hc{os.getpid() % 100000}x{next(_counter)}"
        self.ns = {r: f"{self.prefix}-{r}" for r in ("br", "relay", "router", "laptop", "rt")}
        self.gateway_ports = gateway_ports
        self.relay_proc: subprocess.Popen[bytes] | None = None
        self._last_relay: tuple[list[Path], int, list[str]] = ([], 22, [])
        self.background: list[subprocess.Popen[Any]] = []
        # Teardown steps of what tests add to the rig (run first in close()).
        self.cleanups: list[Any] = []
        self.state_dir = self.work / "state"
        self.relay_public_dir: Path | None = None
        # Private mode's socket on the relay: unique per rig, so rigs never share it.
        self.relay_socket = f"/tmp/{self.prefix}-colab.sock"
        self._build()

    # -- network --------------------------------------------------------------------------
    def _build(self) -> None:
        for ns in self.ns.values():
            sh("ip", "netns", "add", ns)
        br, relay, router, laptop, rt = (
            self.ns[k] for k in ("br", "relay", "router", "laptop", "rt")
        )
        for ns in self.ns.values():
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", br, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", br, "link", "set", "br0", "up")
        for i, (ns, ip) in enumerate(
            ((relay, RELAY_IP), (router, ROUTER_OUT_IP), (laptop, LAPTOP_IP))
        ):
            bridge_port(br, f"p{i}", ns, ip)
        behind_nat(router, ROUTER_IN_IP, rt, RUNTIME_IP)
        ipt = ("ip", "netns", "exec", router, "iptables")
        sh(*ipt, "-P", "FORWARD", "DROP")
        sh(*ipt, "-A", "FORWARD", "-i", "eth1", "-o", "eth0", "-j", "ACCEPT")
        sh(
            *ipt,
            "-A",
            "FORWARD",
            "-m",
            "conntrack",
            "--ctstate",
            "ESTABLISHED,RELATED",
            "-j",
            "ACCEPT",
        )

    def run(
        self,
        role: str,
        argv: Sequence[str],
        *,
        check: bool = False,
        timeout: float = 120,
        input: str | bytes | None = None,
        env: dict[str, str] | None = None,
        text: bool = True,
    ) -> subprocess.CompletedProcess[Any]:
        return subprocess.run(
            ["ip", "netns", "exec", self.ns[role], *argv],
            check=check,
            capture_output=True,
            timeout=timeout,
            input=input,
            text=text,
            env=env or self.env(),
        )

    def popen(self, role: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        kw.setdefault("env", self.env())
        p = subprocess.Popen(["ip", "netns", "exec", self.ns[role], *argv], **kw)
        self.background.append(p)
        return p

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["HANDY_COLAB_STATE_DIR"] = str(self.state_dir)
        return env

    # -- relay ----------------------------------------------------------------------------
    def start_relay(
        self,
        authorized: Sequence[Path],
        port: int = 22,
        extra: Sequence[str] = (),
        *,
        include_dir: Path | None = None,
        stock: bool = False,
    ) -> str:
        """Start a stock sshd in the relay namespace; returns its host public key line.

        ``include_dir``: the config starts with ``Include DIR/*.conf``, as Debian 12's does.
        ``stock``: leave out the rig's relay settings (shared authorized_keys, forwarding,
        keepalive) and keep Debian's X11/sftp lines: each account uses its own
        ~/.ssh/authorized_keys and ``authorized`` is not used.
        """
        self._last_relay = (list(authorized), port, list(extra))
        ensure_relay_user()
        d = self.work / "relay"
        d.mkdir(exist_ok=True)
        hostkey = d / "ssh_host_ed25519_key"
        if not hostkey.exists():
            keygen(hostkey)
        # The relay account must be able to read its authorized_keys: keep it out of pytest's
        # 0700 temp tree, in a folder of its own that is removed in close().
        if self.relay_public_dir is None and not stock:
            self.relay_public_dir = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-relay-"))
            self.relay_public_dir.chmod(0o755)
        shared: list[str] = []
        relay: list[str] = []
        if not stock:
            assert self.relay_public_dir is not None
            ak = self.relay_public_dir / "authorized_keys"
            ak.write_text(
                "".join(
                    Path(f"{p}.pub" if not str(p).endswith(".pub") else p).read_text()
                    for p in authorized
                )
            )
            ak.chmod(0o644)
            shared = [f"AuthorizedKeysFile {ak}", "StrictModes no"]
            relay = [
                f"GatewayPorts {self.gateway_ports}",
                "AllowTcpForwarding yes",
                "AllowStreamLocalForwarding yes",
                "StreamLocalBindUnlink yes",
                "ClientAliveInterval 10",
                "ClientAliveCountMax 3",
            ]
        else:
            relay = [
                "X11Forwarding yes",
                "AcceptEnv LANG LC_*",
                "Subsystem sftp /usr/lib/openssh/sftp-server",
            ]
        cfg = d / "sshd_config"
        cfg.write_text(
            "\n".join(
                [
                    *([f"Include {include_dir}/*.conf"] if include_dir is not None else []),
                    f"Port {port}",
                    f"ListenAddress {RELAY_IP}",
                    f"HostKey {hostkey}",
                    *shared,
                    "UsePAM no",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    f"PidFile {d / 'sshd.pid'}",
                    *relay,
                    "MaxStartups 100:30:200",
                    "MaxSessions 100",
                    "LogLevel VERBOSE",
                    *extra,
                    "",
                ]
            )
        )
        Path("/run/sshd").mkdir(exist_ok=True)
        self.stop_relay()
        log = open(d / "sshd.log", "ab")  # noqa: SIM115
        self.relay_proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns["relay"], "/usr/sbin/sshd", "-D", "-e", "-f", str(cfg)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.wait_tcp("relay", RELAY_IP, port)
        return " ".join((hostkey.with_suffix(".pub").read_text().split())[:2])

    def stop_relay(self) -> None:
        if self.relay_proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.relay_proc.pid, signal.SIGTERM)
            self.relay_proc.wait(10)
            self.relay_proc = None

    def wait_tcp(self, role: str, host: str, port: int, timeout: float = 10) -> None:
        code = (
            f"import socket,time\nd=time.time()+{timeout}\n"
            f"while True:\n try:\n  socket.create_connection(('{host}',{port}),1).close()"
            f";break\n except OSError:\n  assert time.time()<d,'port closed'\n"
            f"  time.sleep(0.05)\n"
        )
        self.run(role, ["python3", "-c", code], check=True)

    # -- faults ---------------------------------------------------------------------------
    def block_runtime(self) -> None:
        """Silently drop every packet between the runtime and the outside (no RST, no ICMP)."""
        for rule in (["-s", RUNTIME_IP], ["-d", RUNTIME_IP]):
            self.run("router", ["iptables", "-I", "FORWARD", "1", *rule, "-j", "DROP"], check=True)

    def unblock_runtime(self) -> None:
        for rule in (["-s", RUNTIME_IP], ["-d", RUNTIME_IP]):
            self.run("router", ["iptables", "-D", "FORWARD", *rule, "-j", "DROP"], check=True)

    def kill_relay_sshd(self) -> None:
        """The relay goes down hard: its listener and every session it serves."""
        self.stop_relay()
        for pid in self.ns_pids("relay"):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"sshd" in cmd:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def restart_relay(self, down_seconds: float) -> None:
        """Kill the relay hard, keep it down ``down_seconds``, start it as it was."""
        authorized, port, extra = self._last_relay
        self.kill_relay_sshd()
        time.sleep(down_seconds)
        self.start_relay(authorized, port=port, extra=extra)

    # -- handy-colab ----------------------------------------------------------------------
    def handy(
        self, role: str, *args: str, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        exe = shutil.which("handy-colab") or "handy-colab"
        return self.run(role, [exe, *args], timeout=timeout)

    def ns_pids(self, role: str) -> list[int]:
        out = sh("ip", "netns", "pids", self.ns[role], check=False).stdout.split()
        return [int(p) for p in out]

    def supervisors(self, role: str = "rt") -> list[int]:
        """The supervisors running in ``role``: forked from the CLI's `up` (named
        hc-supervisor) or exec'd as ``python -m handy_colab.supervisor`` (the notebook's)."""
        found = []
        for pid in self.ns_pids(role):
            try:
                comm = Path(f"/proc/{pid}/comm").read_bytes().strip()
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue  # a short-lived process that just ended
            if comm == b"hc-supervisor" or b"handy_colab.supervisor" in cmd:
                found.append(pid)
        return found

    def relay_holds(self) -> list[int]:
        """The laptop's held relay connections (private mode's OpenSSH masters, relayhop.py,
        and connect's background start of one): they outlive a session by design, so they
        are ended here, not counted as leftovers."""
        found = []
        for pid in self.ns_pids("laptop") if "laptop" in self.ns else []:
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            master = argv[0].endswith(b"ssh") and any(b"/handy-colab-hop/" in a for a in argv)
            # connect's background log-in, if the relay is slow to answer it
            prestart = b"--prestart" in argv and any(a.endswith(b"relayhop.py") for a in argv)
            if master or prestart:
                found.append(pid)
        return found

    def end_relay_holds(self) -> None:
        pids = self.relay_holds()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not any(Path(f"/proc/{p}").exists() for p in pids), 5, 0.05)

    def close(self) -> list[str]:
        """Tear everything down; return what had to be killed by force (should be [])."""
        leftovers = []
        with contextlib.suppress(Exception):
            self.handy("rt", "down", timeout=30)
        self.end_relay_holds()
        for step in reversed(self.cleanups):
            with contextlib.suppress(Exception):
                step()
        self.stop_relay()
        for p in self.background:
            if p.poll() is None:
                p.kill()
            with contextlib.suppress(Exception):
                p.wait(5)
        for role, ns in self.ns.items():
            for pid in self.ns_pids(role):
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                leftovers.append(f"{role}:{pid}:{cmd.strip()}")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            sh("ip", "netns", "del", ns, check=False)
        if self.relay_public_dir is not None:
            shutil.rmtree(self.relay_public_dir, ignore_errors=True)
        # The relay's socket, and those named after it (bench_embedded's extra runtimes).
        for path in glob.glob(f"{glob.escape(self.relay_socket)}*"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        return leftovers


def stop_process(proc: subprocess.Popen[Any] | None) -> None:
    """SIGTERM a helper process if it still runs, SIGKILL it if it lingers past 5 s."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def wait_until(pred: Any, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return bool(pred())
