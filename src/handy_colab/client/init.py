"""`init`, the laptop's first run: find (or make) its SSH key and write a config folder.

Split in two so nothing is half done: `plan_init` reads and checks every input and every
file it would touch, writing nothing; `write_init` then makes the keys and files and has the
project's own loader read the folder back, undoing its writes if the loader refuses it.
Nothing here prints; the CLI (`commands/init.py`) asks and tells.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import CONFIG_FILE, DEFAULT_NAME, SEED_README_CONFIG_FILE, load_config
from ..errors import ConfigError
from ..fsutil import atomic_write, backup
from ..keys import _generate_ed25519
from ..selfwheel import SelfWheel
from ..selfwheel import build as build_wheel
from ..selfwheel import remove_others as remove_other_wheels
from ..selfwheel import write as write_wheel
from ..tunnels.frp_config import ensure_secret
from .init_inputs import (
    LaptopKey,
    bad,
    check_file,
    check_frp_ca,
    check_frp_token,
    check_private_key,
    find_laptop_key,
    make_laptop_key,
    portmap_user,
)

ROUTES = ("cloudflared", "relay", "frp", "portmap")
DEFAULT_FOLDER = "colab_data"  # the seed's Drive folder name: MyDrive/colab_data
LAPTOP_PUB = "laptop.pub"
RELAY_KEY = "relay_key"  # the name platforms/colab_folder.py gives the relay key secret too
FRP_TOKEN = "frp_token"
FRP_CA = "frps_ca.pem"
FRP_SECRET = "frp_secret"
DEFAULT_RELAY_USER = "handy-colab"  # relay-setup's default account


@dataclass
class InitRequest:
    """What the user asked for; every field already validated by the `check_*` helpers."""

    folder: Path
    route: str = "cloudflared"
    name: str = "colab"
    key: Path | None = None
    force: bool = False
    cloudflared_args: list[str] = field(default_factory=list)
    # relay (and frp's public mode: remote_port)
    relay_host: str | None = None
    relay_port: int = 22
    relay_user: str = DEFAULT_RELAY_USER
    relay_key: Path | None = None
    relay_host_key: str | None = None  # "type base64"
    mode: str = "public"
    remote_port: int | None = None
    socket_path: str | None = None
    # frp
    frp_server: str | None = None
    frp_port: int = 7000
    frp_token: Path | None = None
    frp_ca: Path | None = None
    frp_mode: str = "public"
    frp_server_name: str | None = None
    # portmap (the seed's format)
    pem: Path | None = None
    service_url: str | None = None
    service_port: int | None = None
    local_port: int | None = None


@dataclass
class InitPlan:
    request: InitRequest
    folder: Path  # absolute
    laptop_key: LaptopKey
    config: dict[str, Any]
    files: dict[str, tuple[bytes, int]]  # name in the folder -> (bytes, mode)
    replaces: Path | None  # an existing config that --force replaces (backed up)
    relay_public_line: str | None = None  # the relay key's public half (relay-setup --key)
    make_relay_key: bool = False
    make_frp_secret: bool = False
    # This handy-colab as a wheel: the notebook installs it from the folder (selfwheel.py).
    wheel: SelfWheel | None = None

    @property
    def secrets_config(self) -> dict[str, Any] | None:
        """What HANDY_COLAB_CONFIG should hold; None when the route needs the folder's files
        (frp's token and CA have no secret)."""
        if self.request.route == "frp":
            return None
        cfg: dict[str, Any] = json.loads(json.dumps(self.config))
        if self.request.route == "portmap":
            # From a secret, the relay user cannot come from the .pem's file name.
            assert self.request.pem is not None
            cfg["relay"] = {"user": portmap_user(self.request.pem)}
        return cfg


@dataclass
class InitResult:
    plan: InitPlan
    laptop_key: LaptopKey
    written: list[Path]  # files made or replaced in the folder
    backup: Path | None  # the replaced config's copy
    relay_public_line: str | None
    wheel: Path | None = None  # the wheel written into the folder
    removed_wheels: list[Path] = field(default_factory=list)  # older ones it replaced


def _build_config(req: InitRequest, plan_files: dict[str, tuple[bytes, int]]) -> dict[str, Any]:
    if req.route == "portmap":
        assert req.service_url and req.service_port and req.pem
        seed: dict[str, Any] = {
            "tunnel_options": {
                "service_url": req.service_url,
                "service_port": req.service_port,
                "local_port": req.local_port or req.service_port,
            }
        }
        if req.name != DEFAULT_NAME:  # the seed's format had no name: only when asked for
            seed["name"] = req.name
        return seed
    cfg: dict[str, Any] = {"name": req.name, "route": req.route}
    if req.route == "cloudflared" and req.cloudflared_args:
        cfg["cloudflared"] = {"extra_args": list(req.cloudflared_args)}
    if req.route == "relay":
        assert req.relay_host
        relay: dict[str, Any] = {
            "host": req.relay_host,
            "port": req.relay_port,
            "user": req.relay_user,
            "key": RELAY_KEY,
        }
        if req.relay_host_key:
            relay["host_key"] = req.relay_host_key
        if req.mode == "public":
            relay["remote_port"] = req.remote_port
        elif req.socket_path:
            relay["socket_path"] = req.socket_path
        cfg["mode"] = req.mode
        cfg["relay"] = relay
    if req.route == "frp":
        assert req.frp_server
        frp: dict[str, Any] = {"server": req.frp_server, "port": req.frp_port, "ca_file": FRP_CA}
        if FRP_TOKEN in plan_files:
            frp["token_file"] = FRP_TOKEN
        if req.frp_server_name:
            frp["server_name"] = req.frp_server_name
        frp["mode"] = req.frp_mode
        if req.frp_mode == "public":
            frp["remote_port"] = req.remote_port
        cfg["frp"] = frp
    return cfg


def _missing(flag: str, what: str) -> ConfigError:
    return ConfigError(
        f"{flag}: missing ({what}). Fix: pass {flag}, or run init in a terminal to be asked"
    )


def plan_init(req: InitRequest, home: Path | None = None) -> InitPlan:
    """Check everything `write_init` would do; read the input files; write nothing."""
    folder = req.folder.expanduser().absolute()
    existing = check_target(folder, req.force)
    laptop = find_laptop_key(req.key, home or Path.home())
    files: dict[str, tuple[bytes, int]] = {}
    plan = InitPlan(req, folder, laptop, {}, files, folder / CONFIG_FILE if existing else None)
    if req.route == "relay":
        if not req.relay_host:
            raise _missing("--relay-host", "the relay's address")
        if req.mode == "public" and req.remote_port is None:
            raise _missing("--remote-port", "the port the relay exposes in public mode")
        if req.relay_key is not None:
            key = check_private_key(req.relay_key, "--relay-key")
            files[RELAY_KEY] = (key.data, 0o600)
            plan.relay_public_line = key.public_line
        else:
            # A key made earlier for this folder is the one the relay already trusts: keep it.
            path = folder / RELAY_KEY
            kept = check_private_key(path, "the folder's") if path.exists() else None
            plan.make_relay_key = kept is None
            plan.relay_public_line = kept.public_line if kept else None
    elif req.route == "frp":
        if not req.frp_server:
            raise _missing("--frp-server", "frps's address")
        if req.frp_ca is None:
            raise _missing("--frp-ca", "frps's CA certificate, frps-setup's runtime/frps_ca.pem")
        if req.frp_mode == "public" and req.remote_port is None:
            raise _missing("--remote-port", "the port frps exposes in public mode")
        files[FRP_CA] = (check_frp_ca(check_file(req.frp_ca, "--frp-ca")), 0o644)
        if req.frp_token is not None:
            files[FRP_TOKEN] = (check_frp_token(check_file(req.frp_token, "--frp-token")), 0o600)
        # Made now, so the laptop's copy of the folder holds the secret its visitor needs.
        plan.make_frp_secret = req.frp_mode != "public"
    elif req.route == "portmap":
        if req.pem is None:
            raise _missing("--pem", "the private key portmap.io gave you, <user>.first.pem")
        if not req.service_url:
            raise _missing("--service-url", "e.g. user-12345.portmap.host")
        if req.service_port is None:
            raise _missing("--service-port", "the port of portmap.io's rule")
        key = check_private_key(req.pem, "--pem")
        if not portmap_user(key.path):
            raise bad(
                f"--pem {key.path}",
                "its name gives no relay user",
                "keep portmap.io's name, <user>.first.pem",
            )
        files[key.path.name] = (key.data, 0o600)
    plan.config = _build_config(req, files)
    files[CONFIG_FILE] = (json.dumps(plan.config, indent=4).encode() + b"\n", 0o644)
    # A key still to be made has no bytes yet: any laptop.pub there is another key's.
    files[LAPTOP_PUB] = (laptop.public_line.encode() + b"\n" if laptop.public_line else b"", 0o644)
    for name, (data, _) in files.items():
        path = folder / name
        if name == CONFIG_FILE or not (path.exists() or path.is_symlink()):
            continue
        if not path.is_file() or not data or path.read_bytes() != data:
            raise ConfigError(
                f"{path}: already exists with other content, and init never overwrites a key "
                f"file. Fix: move it away, or pass another DIR"
            )
    # Built now: a package that cannot be zipped refuses init before anything is written.
    plan.wheel = build_wheel()
    return plan


def check_target(folder: Path, force: bool) -> list[Path]:
    """Refuse a DIR init cannot write or whose config it would overwrite (without --force);
    return the config files it holds."""
    _check_folder(folder)
    existing = [p for p in (folder / CONFIG_FILE, folder / SEED_README_CONFIG_FILE) if p.exists()]
    if existing and not force:
        raise ConfigError(
            f"{existing[0]}: already exists, and init never overwrites a config. Fix: pass "
            f"another DIR, or --force to replace it (the old one is kept as a backup beside it)"
        )
    return existing


def _check_folder(folder: Path) -> None:
    probe = folder
    try:
        while not probe.exists():
            probe = probe.parent
    except OSError as exc:
        raise ConfigError(
            f"{folder}: cannot look into {probe.parent} ({exc.strerror}). Fix: pass a DIR you "
            f"can write to"
        ) from None
    if not probe.is_dir():
        raise ConfigError(f"{folder}: {probe} is not a folder. Fix: pass another DIR")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{folder}: {probe} is not writable. Fix: pass a DIR you can write to")


def write_init(plan: InitPlan) -> InitResult:
    """Make the keys, write the folder, and check it loads; on failure undo the writes."""
    laptop = plan.laptop_key
    folder = plan.folder
    made_dirs: list[Path] = []
    written: list[Path] = []
    kept_backup: Path | None = None
    relay_line = plan.relay_public_line
    try:
        for parent in reversed([folder, *folder.parents]):
            if not parent.exists():
                # DIR itself is private (it may hold the relay's key); its parents as usual.
                parent.mkdir(mode=0o700 if parent == folder else 0o777)
                made_dirs.append(parent)
        if folder in made_dirs:
            os.chmod(folder, 0o700)  # mkdir's mode went through the umask
        if laptop.made:  # only once the folder exists: a run that cannot write makes no key
            laptop = make_laptop_key(laptop.private)
            plan.files[LAPTOP_PUB] = (laptop.public_line.encode() + b"\n", 0o644)
        if plan.replaces is not None and plan.replaces.exists():
            kept_backup = backup(plan.replaces)
        if plan.make_relay_key:
            priv, relay_line = _generate_ed25519()
            plan.files[RELAY_KEY] = (priv, 0o600)
        for name, (data, mode) in plan.files.items():
            path = folder / name
            if path.exists() and name != CONFIG_FILE:
                continue  # the same bytes (plan_init refused any other)
            atomic_write(path, data, mode)
            written.append(path)
        if plan.make_frp_secret and not (folder / FRP_SECRET).exists():
            written.append(ensure_secret(folder / FRP_SECRET))
        wheel_path = _write_wheel(folder, plan.wheel, written)
    except BaseException as exc:
        _undo(written, made_dirs, plan.replaces, kept_backup)
        if isinstance(exc, OSError):
            raise ConfigError(
                f"{folder}: cannot write the config folder ({exc.strerror}). Fix: pass a DIR "
                f"you can write to"
            ) from None
        raise
    try:
        loaded = load_config(folder)
        want = " ".join(laptop.public_line.split()[:2])
        if not any(k.blob == want for k in loaded.authorized_keys):
            raise ConfigError(
                f"{folder}: the runtime would not let {laptop.private.name} in (its "
                f"server.authorized_keys or other .pub files decide). Fix: pass another DIR"
            )
    except ConfigError as exc:
        _undo(written, made_dirs, plan.replaces, kept_backup)
        raise ConfigError(f"{folder}: not written, as it would not load: {exc}") from None
    # Only once the folder is known good: an older wheel cannot be put back by _undo.
    removed = remove_other_wheels(folder, wheel_path) if wheel_path is not None else []
    return InitResult(plan, laptop, written, kept_backup, relay_line, wheel_path, removed)


def _write_wheel(folder: Path, wheel: SelfWheel | None, written: list[Path]) -> Path | None:
    if wheel is None:
        return None
    if write_wheel(folder, wheel):
        written.append(folder / wheel.name)
    return folder / wheel.name


def _undo(written: list[Path], dirs: list[Path], config: Path | None, kept: Path | None) -> None:
    for path in written:
        with contextlib.suppress(OSError):
            path.unlink()
    if config is not None and kept is not None:
        with contextlib.suppress(OSError):
            os.replace(kept, config)
    for d in reversed(dirs):
        with contextlib.suppress(OSError):
            d.rmdir()
