"""A runtime on the cloudflared route in the NAT rig, for the cloudflared e2e tests."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.cfrig import PEERS_BIN, PEERS_BY_NAME, CloudflareStandIn, prerequisites
from tests.e2e.conftest import need, need_rig, up_and_connect
from tests.rig import Rig, keygen


def need_peers() -> None:
    need_rig()
    need(prerequisites(), "the cloudflared test peers (bash scripts/build-test-peers.sh)")


def one_line_error(res: Any) -> str:
    """The failed command's only stderr line: handy-colab's error, with the fix."""
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode != 0, res.stdout
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("handy-colab: error: ") and "Fix:" in lines[0], lines[0]
    return lines[0]


@dataclass
class RouteRuntime:
    """A runtime on a route other than the relay (cloudflared, frp) in the NAT rig."""

    rig: Rig
    folder: Path
    laptop_key: Path
    ssh_config: Path
    known_hosts: Path
    cf: CloudflareStandIn | None = None  # the cloudflared route's stand-in edge
    frps: Any = None  # the frp route's real frps (tests.frprig.Frps)
    env_extra: dict[str, str] = field(default_factory=dict)
    base_config: dict[str, Any] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        if self.cf is not None:
            return self.cf.env(**self.env_extra)
        env = self.rig.env()
        env["PATH"] = f"{PEERS_BIN}:{env.get('PATH', '')}"
        env.update(PEERS_BY_NAME)
        env.update(self.env_extra)
        return env

    def handy(self, role: str, *args: str, timeout: float = 120) -> Any:
        exe = shutil.which("handy-colab") or "handy-colab"
        return self.rig.run(role, [exe, *args], timeout=timeout, env=self.env())

    def up(self, *args: str, timeout: float = 90) -> Any:
        wait = str(max(60, int(timeout) - 30))
        return self.handy("rt", "up", str(self.folder), "--timeout", wait, *args, timeout=timeout)

    def status(self) -> tuple[int, dict[str, Any]]:
        res = self.handy("rt", "status", "colab", "--json")
        return res.returncode, json.loads(res.stdout) if res.stdout.strip() else {}

    @property
    def descriptor(self) -> Path:
        return self.folder / "connections" / "colab.json"

    def descriptor_data(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.descriptor.read_text())
        return data

    def connect(self) -> Any:
        """`handy-colab connect` on the laptop into the runtime's own ssh config files."""
        return self.connect_to(self.ssh_config, self.known_hosts, str(self.descriptor))

    def connect_to(self, config: Path, known: Path, source: str, *extra: str) -> Any:
        return self.handy(
            "laptop",
            "connect",
            source,
            "--identity",
            str(self.laptop_key),
            "--ssh-config",
            str(config),
            "--known-hosts",
            str(known),
            *extra,
        )

    def ssh_base(self) -> list[str]:
        return ["ssh", "-F", str(self.ssh_config), "-o", "BatchMode=yes"]

    def assert_nothing_runs(self) -> None:
        """No process of the runtime is left (the rig's own DNS stubs aside)."""
        left = set(self.rig.ns_pids("rt")) - (self.cf.helper_pids if self.cf else set())
        assert left == set(), left

    def ssh(self, *cmd: str, **kw: Any) -> Any:
        kw.setdefault("env", self.env())
        return self.rig.run("laptop", [*self.ssh_base(), "colab", *cmd], **kw)

    def write_config(self, **cloudflared: Any) -> None:
        assert self.cf is not None
        cfg: dict[str, Any] = dict(self.base_config)
        section = {"extra_args": self.cf.extra_args(), **cloudflared}
        cfg["cloudflared"] = section
        (self.folder / "user_config.json").write_text(json.dumps(cfg, indent=2))


CfRuntime = RouteRuntime


def route_runtime(rig: Rig, tmp: Path, **kw: Any) -> RouteRuntime:
    """A config folder holding only the laptop's public key (the route's section is the
    caller's), and the laptop's files, for a runtime in ``rig``."""
    keys = tmp / "keys"
    keys.mkdir()
    laptop_key = keygen(keys / "laptop")
    folder = tmp / "drive" / "colab_data"
    folder.mkdir(parents=True)
    shutil.copy(f"{laptop_key}.pub", folder / "laptop.pub")
    return RouteRuntime(
        rig, folder, laptop_key, tmp / "laptop" / "config", tmp / "laptop" / "known_hosts", **kw
    )


def make_cf_runtime(
    tmp: Path,
    *,
    server: str = "auto",
    start: bool = True,
    api_mode: str = "ok",
    cloudflared: dict[str, Any] | None = None,
) -> CfRuntime:
    rig = Rig(tmp / "rig")
    try:
        cf = CloudflareStandIn(rig, api_mode=api_mode)
        # Only the laptop's public key: no relay anywhere, so `up` picks a quick tunnel.
        rt = route_runtime(rig, tmp, cf=cf, base_config={"server": {"kind": server}})
        rt.write_config(**(cloudflared or {}))
        if start:
            up_and_connect(rt)
        return rt
    except BaseException:
        rig.close()
        raise


def finish(rt: RouteRuntime) -> None:
    leftovers = rt.rig.close()
    assert leftovers == [], f"processes left running: {leftovers}"


@pytest.fixture
def cf_fresh(tmp_path: Path) -> Iterator[Any]:
    """Factory for a rig whose cloudflared runtime a test starts (or fails to start) itself."""
    made: list[CfRuntime] = []

    def factory(**kw: Any) -> CfRuntime:
        need_peers()
        rt = make_cf_runtime(tmp_path / f"r{len(made)}", **kw)
        made.append(rt)
        return rt

    yield factory
    for rt in made:
        finish(rt)
