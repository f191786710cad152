#!/usr/bin/env python3
"""Benchmark: what the session launcher (notebook parity) costs per SSH session, on loopback.

Run from the repository root (as root, or as a user who can run sshd on a high port):

    .venv/bin/python bench/bench_session.py [--reps 40] [--out FILE]

Four servers run side by side on 127.0.0.1, each on its own free port and state directory,
with the same host key, the same authorized key and the same client (OpenSSH's ssh/sftp
from PATH, its own config and pinned known_hosts):

    openssh+L    sshd with ForceCommand /bin/sh session.sh   (what `up` runs now)
    openssh      the same sshd_config without the ForceCommand
    embedded+L   the embedded server with "launcher"/"session_info" in its JSON settings
    embedded     the same settings without them

The launcher variants read a realistic captured environment: ``capture()`` of this
process's environment plus ~80 variables a Colab kernel has, the notebook's directory a
temp dir, python this interpreter. Both embedded servers run with that environment (as a
server started from a kernel would), so the plain one hands it to its sessions too.

Per server, --reps sequential round trips, a new connection each:

    ssh_true    ssh -F CFG HOST true
    sftp_pwd    sftp -F CFG -b BATCH HOST   with one `pwd` (an IDE-like probe)

Samples are interleaved round-robin (all four servers per op per repetition, the starting
server rotated each repetition) so the noise of a shared machine hits all of them alike.
Locally, without SSH, it also times what the server-side process chain costs
(`bash -c true` as sshd runs it, against `bash -c '/bin/sh session.sh'` with
SSH_ORIGINAL_COMMAND=true, both in an sshd-like fresh environment; then both again with
HOME at a temp dir whose .bashrc is empty, i.e. the launcher's own cost) and how much is the
login user's ~/.bashrc (`bash --norc -c true` against `bash -c '. ~/.bashrc; true'`).
With strace available it traces one `ssh HOST true` per server once, to count how often
~/.bashrc is read and which shells run per session.

Every process it starts (the servers, strace, anything they leave) is stopped on exit,
Ctrl-C and failure alike; it makes itself a child subreaper so orphans come back to it.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))

from loopback import loopback_runtime, write_client_config  # noqa: E402

from handy_colab.fsutil import atomic_write  # noqa: E402
from handy_colab.proc import descendants, start_time  # noqa: E402
from handy_colab.server.base import Server  # noqa: E402
from handy_colab.server.embedded import EmbeddedServer, login_defaults  # noqa: E402
from handy_colab.server.openssh import (  # noqa: E402
    OpenSSHServer,
    find_sftp_server,
    render_sshd_config,
)
from handy_colab.server.session import (  # noqa: E402
    DEFAULT_PATH_ROOT,
    DEFAULT_PATH_USER,
    LAUNCHER,
    capture,
    force_command,
    write_session,
)
from handy_colab.state import RuntimeDir  # noqa: E402

# host name in the ssh config -> (server kind, with the launcher)
HOSTS = {
    "openssh+L": ("openssh", True),
    "openssh": ("openssh", False),
    "embedded+L": ("embedded", True),
    "embedded": ("embedded", False),
}
OPS = ("ssh_true", "sftp_pwd")
LOCAL_TEXT = {
    "bash_norc": "bash --norc -c true",
    "bash_rc": "bash -c '. ~/.bashrc; true'",
    "chain_plain": "sshd's exec, no launcher: $SHELL -c true",
    "chain_launcher": "sshd's exec, launcher: $SHELL -c '/bin/sh session.sh'",
    "chain_plain_nohome": "the same, no launcher, HOME with an empty .bashrc",
    "chain_launcher_nohome": "the same, launcher, HOME with an empty .bashrc",
}
PR_SET_CHILD_SUBREAPER = 36


def colab_like_environment(notebook: Path) -> dict[str, str]:
    """~80 variables of the kind a Colab kernel's environment holds (values made up)."""
    env = {
        "COLAB_GPU": "1",
        "COLAB_TPU_ADDR": "",
        "COLAB_BACKEND_VERSION": "next",
        "COLAB_RELEASE_TAG": "release-colab_20261120-060000_RC00",
        "COLAB_JUPYTER_IP": "172.28.0.12",
        "COLAB_JUPYTER_TRANSPORT": "ipc",
        "COLAB_JUPYTER_TOKEN": "",
        "COLAB_LANGUAGE_SERVER_PROXY": "/usr/colab/bin/language_service",
        "COLAB_LANGUAGE_SERVER_PROXY_ROOT_URL": "http://172.28.0.1:8013/",
        "COLAB_LANGUAGE_SERVER_PROXY_REQUEST_TIMEOUT": "30s",
        "COLAB_KERNEL_MANAGER_PROXY_HOST": "172.28.0.12",
        "COLAB_KERNEL_MANAGER_PROXY_PORT": "6000",
        "COLAB_DEBUG_ADAPTER_MUX_PATH": "/usr/local/bin/dap_multiplexer",
        "COLAB_FILE_HANDLER_ADDR": "localhost:3453",
        "COLAB_WARMUP_DEFAULTS": "1",
        "COLAB_NOTEBOOK_ID": "1a2B3c4D5e6F7g8H9i0JkLmNoPqRsTuVw",
        "GCS_READ_CACHE_BLOCK_SIZE_MB": "16",
        "GCE_METADATA_TIMEOUT": "3",
        "CLOUDSDK_CONFIG": "/content/.config",
        "CLOUDSDK_PYTHON": "python3",
        "TBE_CREDS_ADDR": "172.28.0.1:8008",
        "TBE_EPHEM_CREDS_ADDR": "172.28.0.1:8009",
        "TBE_RUNTIME_ADDR": "172.28.0.1:8011",
        "TF_FORCE_GPU_ALLOW_GROWTH": "true",
        "TF_CPP_MIN_LOG_LEVEL": "1",
        "TF2_BEHAVIOR": "1",
        "TPU_ML_PLATFORM": "Tensorflow",
        "KMP_LISTEN_PORT": "6000",
        "KMP_TARGET_PORT": "9000",
        "KMP_EXTRA_ARGS": (
            "--logtostderr --listen_host=172.28.0.12 --target_host=172.28.0.12 "
            "--tunnel_background_save_url=https://colab.research.google.com/tun/m/cc48301118ce"
            "/m-s-1a2b3c4d5e6f --tunnel_background_save_delay=10s "
            "--tunnel_periodic_background_save_frequency=30m0s --enable_output_coalescing=true "
            "--output_coalescing_required=true"
        ),
        "ENABLE_DIRECTORYPREFETCHER": "1",
        "DATALAB_SETTINGS_OVERRIDES": json.dumps(
            {
                "kernelManagerProxyPort": 6000,
                "kernelManagerProxyHost": "172.28.0.12",
                "jupyterArgs": ["--ip=172.28.0.12", "--transport=ipc"],
                "debugAdapterMultiplexerPath": "/usr/local/bin/dap_multiplexer",
                "enableLsp": True,
            }
        ),
        "CUDA_VERSION": "12.2.1",
        "CUDA_HOME": "/usr/local/cuda",
        "CUDNN_VERSION": "8.9.6.50",
        "NVIDIA_VISIBLE_DEVICES": "all",
        "NVIDIA_DRIVER_CAPABILITIES": "compute,utility",
        "NVIDIA_REQUIRE_CUDA": (
            "cuda>=12.2 brand=tesla,driver>=470,driver<471 brand=unknown,driver>=470,"
            "driver<471 brand=nvidia,driver>=470,driver<471 brand=nvidiartx,driver>=470,"
            "driver<471 brand=geforce,driver>=470,driver<471 brand=quadro,driver>=470,"
            "driver<471 brand=titan,driver>=525,driver<526"
        ),
        "NV_CUDA_CUDART_VERSION": "12.2.140-1",
        "NV_CUDA_LIB_VERSION": "12.2.1-1",
        "NV_LIBCUBLAS_VERSION": "12.2.5.6-1",
        "NV_LIBNCCL_PACKAGE_VERSION": "2.19.3-1",
        "NV_NVTX_VERSION": "12.2.140-1",
        "NCCL_VERSION": "2.19.3-1",
        "LD_LIBRARY_PATH": "/usr/local/nvidia/lib:/usr/local/nvidia/lib64:/usr/lib64-nvidia",
        "LIBRARY_PATH": "/usr/local/cuda/lib64/stubs",
        "LD_PRELOAD": "",
        "PYTHONPATH": "/env/python",
        "PYTHONWARNINGS": "ignore:::pip._internal.cli.base_command",
        "PYDEVD_USE_FRAME_EVAL": "NO",
        "USE_AUTH_EPHEM": "1",
        "VM_GCE_METADATA_HOST": "169.254.169.253",
        "GCE_METADATA_HOST": "169.254.169.254",
        "NO_GCE_CHECK": "False",
        "HF_TOKEN": "hf_" + "x" * 34,
        "WANDB_API_KEY": "0123456789abcdef0123456789abcdef01234567",
        "LANG": "C.UTF-8",  # Colab's is en_US.UTF-8, which a bare Debian lacks
        "LANGUAGE": "en_US",
        "TZ": "Etc/UTC",
        "SHELL": "/bin/bash",
        "HOSTNAME": "cc48301118ce",
        "PWD": str(notebook),
        "SHLVL": "0",
        "DEBIAN_FRONTEND": "noninteractive",
        "LAST_FORCED_REBUILD": "20261001",
        "JPY_PARENT_PID": "81",
        "JPY_SESSION_NAME": "/content/notebook.ipynb",
        "PAGER": "cat",
        "GIT_PAGER": "cat",
        "CLICOLOR": "1",
        "FORCE_COLOR": "1",
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        "TERM": "xterm-color",
        "PATH": (
            "/opt/bin:/usr/local/nvidia/bin:/usr/local/cuda/bin:"
            + os.environ.get("PATH", DEFAULT_PATH_USER)
            + ":/tools/node/bin:/tools/google-cloud-sdk/bin"
        ),
    }
    # Quoting: a value with quotes, a newline and a dollar sign.
    env["HC_BENCH_QUOTED"] = 'it\'s "quoted"\n$HOME and `not run`'
    for i in range(80 - len(env)):
        env[f"HC_BENCH_VAR_{i:02d}"] = f"value-{i}-" + "x" * (i % 7 * 16)
    return env


@contextlib.contextmanager
def environ(env: dict[str, str]) -> Iterator[None]:
    """os.environ replaced for a moment (a child started now inherits ``env``)."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def p90(values: list[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=10, method="inclusive")[-1]


class Bench:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.servers: dict[str, Server] = {}
        self.n_vars = 0

    def setup(self) -> None:
        tmp = self.tmp
        os.environ["HANDY_COLAB_STATE_DIR"] = str(tmp / "state")
        self.cfg, self.host_key, self.client_key = loopback_runtime(tmp)
        self.notebook = tmp / "notebook"
        self.notebook.mkdir()
        self.kernel_env = {**os.environ, **colab_like_environment(self.notebook)}
        self.kernel_env.pop("HANDY_COLAB_STATE_DIR", None)
        self.sftp = find_sftp_server()
        for host, (kind, launcher) in HOSTS.items():
            self.start_server(host, kind, launcher)
        self.ssh_config = write_client_config(
            tmp,
            {host: server.port for host, server in self.servers.items()},
            self.cfg.login_user,
            self.client_key,
            self.host_key.public_line,
        )
        self.batch = tmp / "sftp_batch"
        self.batch.write_text("pwd\n")

    def start_server(self, host: str, kind: str, launcher: bool) -> None:
        name = host.replace("+", "-launcher")
        rd = RuntimeDir.for_name(name).ensure()
        server: Server
        if kind == "openssh":
            server = OpenSSHServer(self.cfg, rd, self.host_key)
            server.prepare()  # writes the launcher and an sshd_config with its ForceCommand
            if not launcher:
                text = render_sshd_config(rd, server.port, self.cfg.login_user, self.sftp, None)
                atomic_write(rd.sshd_config, text, mode=0o600)
        else:
            emb = EmbeddedServer(self.cfg, rd, self.host_key)
            emb.cwd = self.notebook
            emb.prepare()
            if not launcher:
                settings = json.loads(emb.config_path.read_text())
                settings.pop("launcher")
                settings.pop("session_info")
                atomic_write(emb.config_path, json.dumps(settings, indent=2) + "\n", mode=0o600)
            server = emb
        if launcher:
            sess = capture(rd, self.kernel_env, str(self.notebook), sys.executable)
            write_session(rd, sess)
            self.n_vars = len(sess.env)
        # Register before start: a half-started server is still stopped on the way out.
        self.servers[host] = server
        if kind == "embedded":
            # As if `up` ran in the kernel: the server inherits the kernel's environment.
            with environ(self.kernel_env):
                server.start()
        else:
            server.start()

    def argv(self, op: str, host: str) -> list[str]:
        if op == "ssh_true":
            return ["ssh", "-F", str(self.ssh_config), host, "true"]
        return ["sftp", "-q", "-F", str(self.ssh_config), "-b", str(self.batch), host]

    def run(self, argv: list[str]) -> tuple[float, str]:
        start = time.perf_counter()
        res = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60
        )
        wall = time.perf_counter() - start
        if res.returncode != 0:
            raise SystemExit(f"{argv} failed ({res.returncode}): {res.stderr.strip()[-400:]}")
        return wall * 1000, res.stdout

    def sample(self, op: str, host: str) -> float:
        return self.run(self.argv(op, host))[0]

    def sanity(self) -> dict[str, dict[str, str]]:
        """Where each server's sessions start and whether they see the notebook's env."""
        out: dict[str, dict[str, str]] = {}
        probe = 'echo "$PWD|${COLAB_GPU-unset}|$(command -v python3)|${SHLVL-unset}"'
        for host in self.servers:
            _, text = self.run(["ssh", "-F", str(self.ssh_config), host, probe])
            pwd, colab, python, shlvl = text.strip().split("|")
            _, sftp = self.run(self.argv("sftp_pwd", host))
            sftp_dir = sftp.strip().rsplit(":", 1)[-1].strip()
            out[host] = {
                "pwd": pwd,
                "COLAB_GPU": colab,
                "python3": python,
                "SHLVL": shlvl,
                "sftp_pwd": sftp_dir,
            }
        return out

    def trace(self, host: str) -> dict[str, Any]:
        """strace one `ssh HOST true`: ~/.bashrc reads and the programs run server-side."""
        server = self.servers[host]
        assert server.pid is not None
        out = self.tmp / f"strace-{host}.txt"
        st = subprocess.Popen(
            [
                *("strace", "-f", "-qq", "-s", "300", "-e", "trace=execve,openat"),
                *("-o", str(out), "-p", str(server.pid)),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not traced(server.pid):
                time.sleep(0.02)
            self.run(["ssh", "-F", str(self.ssh_config), host, "true"])
            time.sleep(0.3)  # the session's last processes exit after the client returns
        finally:
            st.send_signal(signal.SIGINT)
            try:
                st.wait(5)
            except subprocess.TimeoutExpired:
                st.kill()
                st.wait(5)
        bashrc = 0
        execs = 0
        shells: list[str] = []  # the session's own shells, not those its rc files run
        home = login_defaults()[0]
        for line in out.read_text(errors="replace").splitlines():
            if f'"{home}/.bashrc"' in line and "openat(" in line and "= -1" not in line:
                bashrc += 1
            m = re.search(r'execve\("([^"]+)", \["[^"]*"(?:, "([^"]*)")?', line)
            if m is None or "= -1" in line:
                continue
            execs += 1
            prog, arg1 = os.path.basename(m.group(1)), m.group(2) or ""
            if arg1 == "-c":
                shells.append(f"{prog} -c")
            elif arg1.endswith(LAUNCHER):
                shells.append(f"{prog} {LAUNCHER}")
        return {"bashrc_reads": bashrc, "execs": execs, "shells": shells}

    def close(self) -> list[str]:
        """Stop every server and whatever they left; return what could not be stopped."""
        left: dict[int, str | None] = {}
        for server in self.servers.values():
            if server.pid is not None and server.alive():
                left.update(descendants(server.pid))
        for server in self.servers.values():
            with contextlib.suppress(Exception):
                server.stop()
        return kill_leftovers(left)


def traced(pid: int) -> bool:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("TracerPid:"):
                return line.split()[1] != "0"
    return False


def kill_leftovers(known: dict[int, str | None]) -> list[str]:
    """SIGKILL ``known`` (if still the same processes) and every descendant of this one."""
    targets = {pid: t for pid, t in known.items() if t is not None and start_time(pid) == t}
    targets.update(descendants(os.getpid()))
    for pid in targets:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        alive = [pid for pid, t in targets.items() if start_time(pid) == t]
        if not alive:
            break
        time.sleep(0.05)
    return [f"pid {pid}" for pid, t in targets.items() if start_time(pid) == t]


def still_running(tmp: Path) -> list[str]:
    """Processes whose command line names the temp dir (sshd -f, session.sh, strace -o)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if str(tmp) in cmd:
                found.append(f"{entry.name}: {cmd.strip()[:120]}")
    return found


def local_chain(bench: Bench) -> dict[str, Callable[[], float]]:
    """The server-side process chain of one `ssh HOST true`, without SSH, and the rc file."""
    home, shell = login_defaults()
    sshd_env = {
        "PATH": DEFAULT_PATH_ROOT if os.getuid() == 0 else DEFAULT_PATH_USER,
        "HOME": home,
        "USER": bench.cfg.login_user,
        "LOGNAME": bench.cfg.login_user,
        "SHELL": shell,
        "SSH_CLIENT": "127.0.0.1 50000 22",
        "SSH_CONNECTION": "127.0.0.1 50000 127.0.0.1 22",
    }
    rd = bench.servers["openssh+L"].rd
    empty = bench.tmp / "empty-home"
    empty.mkdir(exist_ok=True)
    (empty / ".bashrc").write_text("")
    launcher = force_command(rd.path / LAUNCHER)
    cases = {
        "bash_norc": (["bash", "--norc", "-c", "true"], None),
        "bash_rc": (["bash", "-c", ". ~/.bashrc; true"], None),
        "chain_plain": ([shell, "-c", "true"], sshd_env),
        "chain_launcher": ([shell, "-c", launcher], {**sshd_env, "SSH_ORIGINAL_COMMAND": "true"}),
        # What the launcher costs by itself: the same chains, without the user's rc file.
        "chain_plain_nohome": ([shell, "-c", "true"], {**sshd_env, "HOME": str(empty)}),
        "chain_launcher_nohome": (
            [shell, "-c", launcher],
            {**sshd_env, "HOME": str(empty), "SSH_ORIGINAL_COMMAND": "true"},
        ),
    }

    def timer(argv: list[str], env: dict[str, str] | None) -> Callable[[], float]:
        def once() -> float:
            start = time.perf_counter()
            res = subprocess.run(
                argv, stdin=subprocess.DEVNULL, capture_output=True, env=env, cwd=home
            )
            wall = time.perf_counter() - start
            if res.returncode != 0:
                raise SystemExit(f"{argv} failed ({res.returncode}): {res.stderr[-300:]!r}")
            return wall * 1000

        return once

    return {name: timer(argv, env) for name, (argv, env) in cases.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=40)
    ap.add_argument("--out", type=Path, help="write every sample here as JSON")
    ap.add_argument("--no-trace", action="store_true", help="skip the strace diagnostic")
    args = ap.parse_args(argv)
    for tool in ("ssh", "sftp", "ssh-keygen", "bash", "/usr/sbin/sshd"):
        if shutil.which(tool) is None:
            raise SystemExit(f"needs {tool}")
    # Orphans of the servers' sessions come back to us, so the cleanup can find them.
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    tmp = Path(tempfile.mkdtemp(prefix="hc-bench-session-"))
    bench: Bench | None = None
    problems: list[str] = []
    try:
        bench = Bench(tmp)
        bench.setup()
        hosts = list(HOSTS)
        print(f"{bench.n_vars} variables in session.env; sftp server {bench.sftp}", flush=True)
        checks = bench.sanity()
        print(f"\n{'server':11s} {'pwd / sftp pwd':48s} {'COLAB_GPU':9s} {'SHLVL':5s} python3")
        for host, c in checks.items():
            where = c["pwd"] if c["pwd"] == c["sftp_pwd"] else f"{c['pwd']} / {c['sftp_pwd']}"
            print(f"{host:11s} {where:48s} {c['COLAB_GPU']:9s} {c['SHLVL']:5s} {c['python3']}")
        traces: dict[str, Any] = {}
        if not args.no_trace and shutil.which("strace"):
            traces = {host: bench.trace(host) for host in hosts}
            print(f"\n{'server':11s} {'~/.bashrc reads':>15s} {'execve':>6s}  shells per session")
            for host, t in traces.items():
                shells = " -> ".join(t["shells"]) or "-"
                print(f"{host:11s} {t['bashrc_reads']:15d} {t['execs']:6d}  {shells}")
        for host in hosts:  # warm-up: first connections pay for cold caches
            bench.sample("ssh_true", host)
        local = local_chain(bench)
        samples: dict[str, dict[str, list[float]]] = {h: {op: [] for op in OPS} for h in hosts}
        local_samples: dict[str, list[float]] = {name: [] for name in local}
        names = list(local)
        print(f"\n{args.reps} repetitions", flush=True)
        for rep in range(args.reps):
            order = hosts[rep % len(hosts) :] + hosts[: rep % len(hosts)]
            for op in OPS:
                for host in order:
                    samples[host][op].append(bench.sample(op, host))
            for name in names[rep % len(names) :] + names[: rep % len(names)]:
                local_samples[name].append(local[name]())
            if (rep + 1) % 10 == 0 or rep + 1 == args.reps:
                print(f"rep {rep + 1}/{args.reps} done", flush=True)

        result: dict[str, Any] = {
            "reps": args.reps,
            "nproc": os.cpu_count(),
            "session_env_variables": bench.n_vars,
            "sanity": checks,
            "traces": traces,
            "ops": {},
            "local": {},
        }
        print(
            f"\n{'op':9s} {'server':9s} {'with L med':>10s} {'p90':>6s} "
            f"{'without med':>11s} {'p90':>6s} {'ratio':>6s} {'delta':>6s}   (ms)"
        )
        for op in OPS:
            for kind in ("openssh", "embedded"):
                with_l, without = samples[f"{kind}+L"][op], samples[kind][op]
                wm, om = statistics.median(with_l), statistics.median(without)
                result["ops"][f"{op}/{kind}"] = {
                    "with_median": wm,
                    "with_p90": p90(with_l),
                    "without_median": om,
                    "without_p90": p90(without),
                    "ratio": wm / om,
                    "with": with_l,
                    "without": without,
                }
                print(
                    f"{op:9s} {kind:9s} {wm:10.1f} {p90(with_l):6.1f} {om:11.1f} "
                    f"{p90(without):6.1f} {wm / om:6.2f} {wm - om:+6.1f}"
                )
        print(f"\n{'local, no SSH':58s} {'median':>7s} {'p90':>6s}   (ms)")
        for name, values in local_samples.items():
            med = statistics.median(values)
            result["local"][name] = {"median": med, "p90": p90(values), "samples": values}
            print(f"{LOCAL_TEXT[name]:58s} {med:7.1f} {p90(values):6.1f}")
        if args.out:
            args.out.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip this
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if bench is not None:
            problems += bench.close()
        problems += kill_leftovers({})
        problems += still_running(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if problems:
            print(f"left running: {problems}", file=sys.stderr)
        else:
            print("cleanup: no process left", flush=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
