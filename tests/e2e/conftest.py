"""E2E fixtures: a NAT rig, a stock-sshd relay, a runtime brought up with handy-colab."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.rig import RELAY_IP, RELAY_USER, Rig, keygen, prerequisites

REMOTE_PORT = 2222


def need(missing: list[str], what: str = "e2e prerequisites") -> None:
    """Skip without them; under CI=true fail instead (a broken install step, never a silent
    skip)."""
    if not missing:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {what} are missing: {', '.join(missing)}")
    pytest.skip(f"needs: {', '.join(missing)}")


def need_rig() -> None:
    need(prerequisites())


@dataclass
class Runtime:
    rig: Rig
    folder: Path
    laptop_key: Path
    relay_key: Path
    ssh_config: Path
    known_hosts: Path
    mode: str
    relay_host_key: str
    extra: dict[str, Any] = field(default_factory=dict)

    def up(self, *args: str, timeout: float = 60) -> Any:
        return self.rig.handy(
            "rt", "up", str(self.folder), "--timeout", "40", *args, timeout=timeout
        )

    def connect(self, descriptor: Path | None = None) -> Any:
        """`handy-colab connect` on the laptop, with the folder's descriptor by default."""
        return self.rig.handy(
            "laptop",
            "connect",
            str(descriptor or self.folder / "connections" / "colab.json"),
            "--identity",
            str(self.laptop_key),
            "--ssh-config",
            str(self.ssh_config),
            "--known-hosts",
            str(self.known_hosts),
        )

    def ssh_base(self) -> list[str]:
        return ["ssh", "-F", str(self.ssh_config), "-o", "BatchMode=yes"]

    def ssh(self, *cmd: str, **kw: Any) -> Any:
        return self.rig.run("laptop", [*self.ssh_base(), "colab", *cmd], **kw)


def _etc_ssh_digest() -> str:
    """Hash of the system's sshd config: handy-colab must never edit it."""
    h = hashlib.sha256()
    for f in sorted(Path("/etc/ssh").glob("sshd_config*")):
        if f.is_file():
            h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def write_seed_folder(folder: Path, relay_key: Path, laptop_key: Path) -> None:
    """The seed's exact format: portmap-style PEM key named <user>.first.pem + a .pub."""
    folder.mkdir(parents=True)
    shutil.copy(relay_key, folder / f"{RELAY_USER}.first.pem")
    shutil.copy(f"{laptop_key}.pub", folder / "public_key.pub")
    (folder / "user_config.json").write_text(
        json.dumps(
            {
                "tunnel_options": {
                    "service_url": RELAY_IP,
                    "service_port": REMOTE_PORT,
                    "local_port": 8888,
                },
                "python_packages": [],
                "os_packages": [],
            },
            indent=4,
        )
    )


def write_private_folder(
    folder: Path, relay_key: Path, laptop_key: Path, relay_host_key: str, socket_path: str
) -> None:
    folder.mkdir(parents=True)
    shutil.copy(relay_key, folder / "relay_key")
    shutil.copy(f"{laptop_key}.pub", folder / "laptop.pub")
    (folder / "user_config.json").write_text(
        json.dumps(
            {
                "name": "colab",
                "mode": "private",
                "relay": {
                    "host": RELAY_IP,
                    "port": 22,
                    "user": RELAY_USER,
                    "host_key": relay_host_key,
                    "socket_path": socket_path,
                },
                "server": {"authorized_keys": ["laptop.pub"]},
            },
            indent=4,
        )
    )


def make_runtime(tmp: Path, mode: str, *, start: bool = True) -> Runtime:
    rig = Rig(tmp / "rig", gateway_ports="yes" if mode == "public" else "no")
    try:
        return _populate(rig, tmp, mode, start)
    except BaseException:
        rig.close()
        raise


def _populate(rig: Rig, tmp: Path, mode: str, start: bool) -> Runtime:
    # portmap.io hands out PEM RSA keys; the private relay uses a modern ed25519 one.
    rt = rig_runtime(rig, tmp, mode, tmp / "drive" / "colab_data", pem_relay_key=mode == "public")
    if start:
        up_and_connect(rt)
    return rt


def up_and_connect(rt: Any, connect: Callable[[], Any] | None = None) -> None:
    """`up` on the runtime, then the laptop's ``connect`` (rt.connect by default): both must
    succeed."""
    res = rt.up()
    assert res.returncode == 0, res.stderr + res.stdout
    if isinstance(getattr(rt, "extra", None), dict):
        rt.extra["up_stdout"] = res.stdout  # what the runtime showed (the hc1: line...)
    res = (connect or rt.connect)()
    assert res.returncode == 0, res.stderr + res.stdout


def rig_runtime(
    rig: Rig,
    tmp: Path,
    mode: str,
    folder: Path,
    *,
    pem_relay_key: bool = False,
    extra: dict[str, Any] | None = None,
) -> Runtime:
    """Keys in ``tmp/keys``, the relay started, ``folder`` written in ``mode``'s format."""
    keys = tmp / "keys"
    keys.mkdir()
    relay_key = keygen(keys / "relay", "rsa", pem=True) if pem_relay_key else keygen(keys / "relay")
    laptop_key = keygen(keys / "laptop")
    relay_host_key = rig.start_relay([relay_key, laptop_key])
    if mode == "public":
        write_seed_folder(folder, relay_key, laptop_key)
    else:
        write_private_folder(folder, relay_key, laptop_key, relay_host_key, rig.relay_socket)
    return Runtime(
        rig,
        folder,
        laptop_key,
        relay_key,
        tmp / "laptop" / "config",
        tmp / "laptop" / "known_hosts",
        mode,
        relay_host_key,
        extra={**(extra or {}), "etc_ssh": _etc_ssh_digest()},
    )


def finish(rt: Runtime) -> None:
    leftovers = rt.rig.close()
    assert leftovers == [], f"processes left running: {leftovers}"


@pytest.fixture(scope="module", params=["public", "private"])
def runtime(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Runtime]:
    need_rig()
    rt = make_runtime(tmp_path_factory.mktemp(f"rt-{request.param}"), request.param)
    try:
        yield rt
    finally:
        finish(rt)


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Any]:
    """Factory for a rig whose runtime a test starts (or fails to start) itself."""
    made: list[Runtime] = []

    def factory(mode: str = "public", start: bool = False) -> Runtime:
        need_rig()
        rt = make_runtime(tmp_path / f"r{len(made)}", mode, start=start)
        made.append(rt)
        return rt

    yield factory
    for rt in made:
        finish(rt)
