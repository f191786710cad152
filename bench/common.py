"""What the rig benchmarks share: the repository on sys.path, logging, summaries, the machine,
a random payload, the first working ``ssh``, the hand-made sshd, tear-down and the report.

Imported as ``common`` (a script's own folder, bench/, is sys.path[0]); importing it puts the
repository on sys.path, so that the scripts' ``tests.*`` imports that follow it resolve.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.rig import sh  # noqa: E402

MIB = 1024 * 1024
T = TypeVar("T")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def summary(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "min": None, "max": None}
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def fmt(x: float | None, spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


def machine_info() -> dict[str, Any]:
    def out(*argv: str) -> str:
        try:
            res = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except OSError as exc:
            return f"unavailable: {exc}"
        return (res.stdout + res.stderr).strip()

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "nproc_cmd": out("nproc"),
        "ssh_version": out("ssh", "-V"),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cpu_model": next(
            (
                ln.split(":", 1)[1].strip()
                for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")
            ),
            "unknown",
        ),
    }


def rotated(items: Sequence[T], k: int) -> list[T]:
    """``items`` rotated left by ``k``: repetition k's order, so that no item is always first."""
    k %= len(items)
    return [*items[k:], *items[:k]]


def tmpfs_dir(prefix: str) -> Path:
    """A temporary folder on tmpfs where there is one, so that disks do not enter the numbers."""
    shm = Path("/dev/shm")
    return Path(tempfile.mkdtemp(prefix=prefix, dir=shm if shm.is_dir() else None))


def write_payload(path: Path, size_mib: int) -> str:
    """``size_mib`` MiB of random bytes (incompressible, like SSH's own); returns its sha256."""
    h = hashlib.sha256()
    with open(path, "wb") as fh:
        for _ in range(size_mib):
            block = os.urandom(MIB)
            h.update(block)
            fh.write(block)
    return h.hexdigest()


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(4 * MIB):
            h.update(chunk)
    return h.hexdigest()


def timed_run(
    ns: str, argv: list[str], *, stdin: Any, env: dict[str, str], timeout: float
) -> tuple[float, subprocess.CompletedProcess[bytes]]:
    """``argv`` in network namespace ``ns``, its output thrown away (only stderr kept):
    (the wall seconds of the whole command, its result)."""
    t0 = time.perf_counter()
    res = subprocess.run(
        ["ip", "netns", "exec", ns, *argv],
        stdin=stdin,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        timeout=timeout,
    )
    return time.perf_counter() - t0, res


def first_ssh(
    rig: Any,
    ssh: list[str],
    t0: float,
    limit: float,
    what: str,
    *,
    role: str = "laptop",
    env: dict[str, str] | None = None,
    connect_timeout: int = 5,
    timeout: float = 30,
) -> int:
    """Try ``ssh ... true`` from ``role`` until it works; return how many tries it took."""
    attempts = 0
    while True:
        attempts += 1
        argv = [*ssh, "-o", f"ConnectTimeout={connect_timeout}", "true"]
        res = rig.run(role, argv, env=env, timeout=timeout)
        if res.returncode == 0:
            return attempts
        if time.perf_counter() - t0 > limit:
            raise RuntimeError(f"{what}: ssh never succeeded: {res.stderr}")
        time.sleep(0.05)


def ready_sample(
    rig: Any,
    up: Callable[[], Any],
    connect: Callable[[], Any],
    ssh: list[str],
    limit: float,
    what: str,
    **first_ssh_kw: Any,
) -> dict[str, Any]:
    """One time to ready: ``up`` (runtime) -> ``connect`` (laptop) -> the first working ssh."""
    t0 = time.perf_counter()
    res = up()
    t_up = time.perf_counter()
    if res.returncode != 0:
        raise RuntimeError(f"{what}: up failed: {res.stderr or res.stdout}")
    res = connect()
    t_conn = time.perf_counter()
    if res.returncode != 0:
        raise RuntimeError(f"{what}: connect failed: {res.stderr or res.stdout}")
    attempts = first_ssh(rig, ssh, t0, limit, what, **first_ssh_kw)
    t_ssh = time.perf_counter()
    return {
        "total_s": t_ssh - t0,
        "up_s": t_up - t0,
        "connect_s": t_conn - t_up,
        "first_ssh_s": t_ssh - t_conn,
        "ssh_attempts": attempts,
    }


def hand_sshd_config(d: Path, port: int, hostkey: Path, ak: Path, *extra: str) -> Path:
    """``d/sshd_config`` of an sshd started by hand (the baselines'), on 127.0.0.1:``port``."""
    cfg = d / "sshd_config"
    lines = [
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {hostkey}",
        f"AuthorizedKeysFile {ak}",
        f"PidFile {d / 'sshd.pid'}",
        "StrictModes no",
        "UsePAM no",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
        *extra,
        "",
    ]
    cfg.write_text("\n".join(lines))
    return cfg


def close_runtime(rt: Any, leftovers: list[str], finish: Callable[[Any], None]) -> None:
    """Tear one rig down with ``finish``, recording (not raising) whatever it had to kill."""
    try:
        finish(rt)
    except AssertionError as exc:
        leftovers.append(f"{rt.mode}: {exc}")
        log(f"{rt.mode}: {exc}")
    except Exception as exc:  # keep cleaning the rest
        leftovers.append(f"{rt.mode}: close failed: {exc!r}")
        log(f"{rt.mode}: close failed: {exc!r}")


def stale_namespaces(prefixes: Sequence[str]) -> list[str]:
    netns = sh("ip", "netns", "list", check=False).stdout
    stale = [ln for ln in netns.splitlines() if any(p in ln for p in prefixes)]
    return [f"namespaces left: {stale}"] if stale else []


class OneRigBench:
    """A benchmark of one runtime in one rig, with a scratch folder and a payload on tmpfs."""

    def __init__(self, args: Any, name: str, finish: Callable[[Any], None]) -> None:
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix=f"hc-bench-{name}-"))
        self.data = tmpfs_dir(f"hc-bench-{name}-data-")
        self.src = self.data / "payload.bin"
        self.rt: Any = None
        self.leftovers: list[str] = []
        self.result: dict[str, Any] = {"machine": machine_info()}
        self._finish = finish

    def close(self) -> None:
        if self.rt is not None:
            try:
                self._finish(self.rt)
            except AssertionError as exc:
                self.leftovers.append(str(exc))
        shutil.rmtree(self.work, ignore_errors=True)
        shutil.rmtree(self.data, ignore_errors=True)
        self.result["leftovers"] = self.leftovers


def run_and_report(
    bench: Any,
    body: Callable[[], None],
    out: Path,
    render: Callable[[dict[str, Any]], str],
    t0: float,
) -> int:
    """Run a benchmark body, always clean up, write JSON, print the table.

    Exit code: 0 fine, 1 the benchmark failed, 3 it had to kill leftovers.
    """
    code = 0
    try:
        body()
    except Exception as exc:
        log(f"benchmark failed: {exc!r}")
        bench.result["error"] = repr(exc)
        code = 1
    finally:
        bench.close()
    bench.result["wall_s"] = time.perf_counter() - t0
    if bench.leftovers:
        code = code or 3
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(bench.result, indent=2, default=str) + "\n")
    print(render(bench.result), end="")
    return code


def compile_package(python: str = sys.executable) -> str:
    """Byte-compile the handy_colab package ``python`` imports, as `pip install` does.

    An editable install run with PYTHONDONTWRITEBYTECODE set (these machines set it) would
    compile every module from source at every start: 0.1-0.15 s of each `up` and `connect`
    that no installed copy pays. Returns the package's folder."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    where = subprocess.run(
        [python, "-c", "import handy_colab, os; print(os.path.dirname(handy_colab.__file__))"],
        capture_output=True, text=True, check=True, env=env,
    ).stdout.strip()  # fmt: skip
    subprocess.run([python, "-m", "compileall", "-q", where], check=True, env=env)
    log(f"byte-compiled {where} (as an installed package is)")
    return where


def run_main(
    bench: Any, body: Callable[[], None], out: Path, render: Callable[[dict[str, Any]], str]
) -> int:
    """run_and_report, with SIGTERM and SIGHUP turned into SystemExit so that ``close`` runs.
    The package under test is byte-compiled first (compile_package)."""
    compile_package()

    def on_term(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    code = run_and_report(bench, body, out, render, time.perf_counter())
    log(f"done in {bench.result['wall_s']:.0f}s; raw numbers in {out}")
    return code
