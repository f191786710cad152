"""A real Jupyter kernel (ipykernel, driven by jupyter_client) inside a rig namespace.

The kernel runs in the runtime's network namespace, behind the NAT, as a notebook would.
jupyter_client talks to it over ZeroMQ's ipc transport (Unix sockets): a TCP loopback
inside the namespace would not be reachable from the test process outside it.
"""

from __future__ import annotations

import json
import queue
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager


@dataclass
class CellResult:
    status: str  # "ok" | "error" | "aborted"
    stdout: str = ""
    stderr: str = ""
    results: list[dict[str, Any]] = field(default_factory=list)  # execute_result/display data
    ename: str = ""
    evalue: str = ""
    # Every iopub message of the cell, in order: (msg_type, content); widget comms and
    # display updates included.
    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def check(self) -> CellResult:
        assert self.status == "ok", f"cell failed: {self.ename}: {self.evalue}\n{self.stderr}"
        return self


class Kernel:
    def __init__(self, work: Path, netns: str | None, env: dict[str, str], cwd: Path) -> None:
        """``netns``: the rig namespace to run in (None: this machine's own network)."""
        spec = work / "kernels" / "hc-rt"
        spec.mkdir(parents=True)
        netns_exec = ["ip", "netns", "exec", netns] if netns else []
        argv = [*netns_exec, sys.executable, "-m", "ipykernel_launcher"]
        (spec / "kernel.json").write_text(
            json.dumps(
                {
                    "argv": [*argv, "-f", "{connection_file}"],
                    "display_name": "handy-colab test kernel",
                    "language": "python",
                }
            )
        )
        ksm = KernelSpecManager(kernel_dirs=[str(work / "kernels")])
        (work / "ipc").mkdir()
        self.km = KernelManager(
            kernel_name="hc-rt",
            kernel_spec_manager=ksm,
            transport="ipc",
            ip=str(work / "ipc" / "k"),
            connection_file=str(work / "connection.json"),
        )
        self.env = env
        self.cwd = cwd
        self.km.start_kernel(env=env, cwd=str(cwd))
        self._connect()

    def _connect(self) -> None:
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    def run(self, code: str, timeout: float = 120) -> CellResult:
        """Execute a cell and collect what Jupyter would show for it."""
        msg_id = self.kc.execute(code)
        return self._collect(msg_id, timeout)

    def _collect(self, msg_id: str, timeout: float) -> CellResult:
        res = CellResult(status="?")
        deadline = time.monotonic() + timeout
        idle = False
        while not idle:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"cell did not finish within {timeout}s: {res}")
            try:
                msg = self.kc.get_iopub_msg(timeout=min(left, 1))
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            res.messages.append((kind, content))
            if kind == "stream":
                if content["name"] == "stdout":
                    res.stdout += content["text"]
                else:
                    res.stderr += content["text"]
            elif kind in ("execute_result", "display_data"):
                res.results.append(content["data"])
            elif kind == "error":
                res.ename, res.evalue = content["ename"], content["evalue"]
            elif kind == "status" and content["execution_state"] == "idle":
                idle = True
        while True:
            # Skip replies to earlier requests (wait_for_ready's kernel_info may answer late).
            reply = self.kc.get_shell_msg(timeout=max(1.0, deadline - time.monotonic()))
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        res.status = reply["content"]["status"]
        return res

    def interrupt_during(self, code: str, after: float = 1.0, timeout: float = 60) -> CellResult:
        """Start a cell, interrupt it (the notebook's stop button) and wait for its end."""
        msg_id = self.kc.execute(code)
        time.sleep(after)
        self.km.interrupt_kernel()
        return self._collect(msg_id, timeout)

    def restart(self) -> None:
        """The notebook's "Restart kernel": the old process is killed, a new one starts."""
        self.kc.stop_channels()
        self.km.restart_kernel(now=True)
        self._connect()

    def value(self, expr: str) -> Any:
        res = self.run(f"import json as _j; print(_j.dumps({expr}))").check()
        return json.loads(res.stdout.strip().splitlines()[-1])

    def shutdown(self) -> None:
        try:
            self.kc.stop_channels()
        finally:
            self.km.shutdown_kernel(now=True)
