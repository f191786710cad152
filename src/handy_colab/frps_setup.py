"""`frps-setup`: an frps for a VPS, done safely, and the matching runtime config.

It makes a token, a CA and a server certificate signed by it (the runtime's config pins the
CA, so frpc verifies frps), an frps.toml with TLS forced, the allowed ports restricted, the
dashboard on loopback only with a password (or off), short keepalives (a replaced runtime's
stale proxy is dropped in seconds, not a minute), one port per client, and a systemd unit
that runs frps as its own system user, the only one that can read the token and the key.
Printed by default; ``--apply`` (root) writes them; ``--out DIR`` writes them to a folder.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import pwd
import secrets
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .errors import RelaySetupError
from .fsutil import atomic_write

DEFAULT_DIR = Path("/etc/handy-colab-frps")
UNIT = Path("/etc/systemd/system/handy-colab-frps.service")
# frps pings each client session (yamux keepalive) every this many seconds, 30 by default: a
# session that stopped answering is dropped about one interval plus a write timeout later,
# and only then can a replaced runtime take its proxy name and port again.
KEEPALIVE = 5
# The unit's user: its own, so no other daemon's account (nobody) can read the token or key.
SERVICE_USER = "handy-colab-frps"
# A runtime's frpc asks for one port (public mode's tcp proxy; stcp/xtcp take none): a second
# one from the same client is refused, so a stolen token cannot take the whole range at once.
MAX_PORTS_PER_CLIENT = 1


@dataclass
class FrpsPlan:
    server_name: str  # the VPS's DNS name or IP address, as runtimes reach it
    bind_port: int
    ports: tuple[int, int]
    dashboard_port: int | None  # on 127.0.0.1; None = off
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    dashboard_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    ca_pem: bytes = b""
    cert_pem: bytes = b""
    key_pem: bytes = b""

    def frps_toml(self, conf_dir: Path) -> str:
        lines = [
            "# Written by handy-colab frps-setup.",
            f"bindPort = {self.bind_port}",
            f'auth.token = "{self.token}"',
            "transport.tls.force = true",
            f'transport.tls.certFile = "{conf_dir / "server.crt"}"',
            f'transport.tls.keyFile = "{conf_dir / "server.key"}"',
            f"transport.tcpMuxKeepaliveInterval = {KEEPALIVE}",
            f"allowPorts = [{{ start = {self.ports[0]}, end = {self.ports[1]} }}]",
            f"maxPortsPerClient = {MAX_PORTS_PER_CLIENT}",
            'log.to = "console"',
            "log.disablePrintColor = true",
        ]
        if self.dashboard_port:
            lines += [
                'webServer.addr = "127.0.0.1"',
                f"webServer.port = {self.dashboard_port}",
                'webServer.user = "admin"',
                f'webServer.password = "{self.dashboard_password}"',
            ]
        return "\n".join(lines) + "\n"

    def runtime_section(self, mode: str = "public") -> dict[str, object]:
        """The config folder's ``frp`` section (the token and CA go beside it as files)."""
        section: dict[str, object] = {
            "server": self.server_name,
            "port": self.bind_port,
            "token_file": "frp_token",
            "ca_file": "frps_ca.pem",
            "mode": mode,
        }
        if mode == "public":
            section["remote_port"] = self.ports[0]
        return section


def make_plan(
    server_name: str,
    *,
    bind_port: int = 7000,
    ports: str = "6000-6100",
    dashboard_port: int | None = None,
) -> FrpsPlan:
    try:
        low, high = (int(p) for p in ports.split("-", 1))
        if not 1 <= low <= high <= 65535:
            raise ValueError
    except ValueError:
        raise RelaySetupError(
            f"--ports '{ports}' is not a port range. Fix: write it as LOW-HIGH, e.g. 6000-6100"
        ) from None
    plan = FrpsPlan(server_name, bind_port, (low, high), dashboard_port)
    plan.ca_pem, plan.cert_pem, plan.key_pem = _certificates(server_name)
    return plan


def _certificates(name: str) -> tuple[bytes, bytes, bytes]:
    """A CA (its key is thrown away: nothing else is ever signed) and frps's certificate."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"handy-colab frps CA {name}")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        alt = x509.DNSName(name)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return (
        ca.public_bytes(serialization.Encoding.PEM),
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def unit(conf_dir: Path, frps: str = "/usr/local/bin/frps", user: str = SERVICE_USER) -> str:
    # An unprivileged user of its own: frps binds high ports only, and owns its 0600 secrets.
    return (
        "[Unit]\nDescription=frps for handy-colab runtimes\nAfter=network-online.target\n"
        f"Wants=network-online.target\n\n[Service]\nUser={user}\nGroup={user}\n"
        f"ExecStart={frps} -c {conf_dir / 'frps.toml'}\nRestart=always\nRestartSec=2\n"
        "NoNewPrivileges=yes\nProtectSystem=strict\nProtectHome=yes\nPrivateTmp=yes\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )


def apply(
    plan: FrpsPlan, conf_dir: Path = DEFAULT_DIR, unit_path: Path = UNIT, user: str = SERVICE_USER
) -> list[Path]:
    """As root: the files in conf_dir (frps's secrets 0600, owned by ``user``, made a system
    user if missing) and the unit that runs frps as ``user``."""
    if not is_root():
        raise RelaySetupError("--apply writes to /etc: run it as root. Fix: sudo, or use --out")
    if unit_path.exists():
        raise RelaySetupError(f"{unit_path}: exists; not overwritten. Fix: move it away first")
    account = _service_user(user)
    written = write(plan, conf_dir)
    for name in ("frps.toml", "server.key"):
        os.chown(conf_dir / name, account.pw_uid, account.pw_gid)
        os.chmod(conf_dir / name, 0o600)
    atomic_write(unit_path, unit(conf_dir, user=user), 0o644)
    return [*written, unit_path]


def _service_user(user: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(user)
    except KeyError:
        pass
    cmd = ["useradd", "--system", "--user-group", "--no-create-home"]
    cmd += ["--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", user]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    except OSError as exc:
        res = subprocess.CompletedProcess(cmd, 1, "", str(exc))
    if res.returncode != 0:
        why = (res.stderr.strip().splitlines() or ["no output"])[-1]
        raise RelaySetupError(
            f"cannot create the system user {user} for frps ({why}). Fix: create it "
            f"(useradd --system --user-group {user}) and run --apply again"
        )
    return pwd.getpwnam(user)


def _files(plan: FrpsPlan, conf_dir: Path) -> dict[str, tuple[str | bytes, int]]:
    """Every file `write` writes (name under conf_dir: content, mode): render lists these."""
    return {
        "frps.toml": (plan.frps_toml(conf_dir), 0o600),
        "server.crt": (plan.cert_pem, 0o644),
        "server.key": (plan.key_pem, 0o600),
        "runtime/frps_ca.pem": (plan.ca_pem, 0o644),
        "runtime/frp_token": (plan.token + "\n", 0o600),
        "runtime/user_config.frp.json": (
            json.dumps({"frp": plan.runtime_section()}, indent=2) + "\n",
            0o644,
        ),
    }


def write(plan: FrpsPlan, conf_dir: Path) -> list[Path]:
    """Write frps's files (secrets 0600) and the runtime's folder files into conf_dir."""
    try:
        conf_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        written = []
        for name, (data, mode) in _files(plan, conf_dir).items():
            path = conf_dir / name
            if path.exists():
                raise RelaySetupError(
                    f"{path}: exists; frps-setup never overwrites a key or a token. Fix: "
                    f"choose another --out folder, or move the old one away first"
                )
            atomic_write(path, data, mode)
            written.append(path)
        return written
    except OSError as exc:
        raise RelaySetupError(
            f"{exc.filename or conf_dir}: cannot write ({exc.strerror}). Fix: run as root with "
            f"--apply, or choose another --out folder"
        ) from None


def render(plan: FrpsPlan, conf_dir: Path, unit_path: Path | None = None) -> str:
    """What the operator reads: the files, the unit (``unit_path``, when it is written) and
    the runtime's part (no private key, no token)."""
    section = json.dumps({"frp": plan.runtime_section()}, indent=2)
    owner = f", owned by {SERVICE_USER}" if unit_path is not None else ""
    unit_line = (
        f"4. {unit_path}: runs frps as {SERVICE_USER} at boot\n" if unit_path is not None else ""
    )
    # Named from the table `write` writes, so the plan lists exactly what lands on disk.
    runtime_files = [name for name in _files(plan, conf_dir) if name.startswith("runtime/")]
    return (
        f"frps for {plan.server_name}:{plan.bind_port} (TLS forced, token, ports "
        f"{plan.ports[0]}-{plan.ports[1]}, at most {MAX_PORTS_PER_CLIENT} per client, keepalive "
        f"every {KEEPALIVE}s, dashboard "
        f"{'127.0.0.1:' + str(plan.dashboard_port) if plan.dashboard_port else 'off'})\n\n"
        f"1. {conf_dir}/frps.toml (0600{owner}):\n"
        + "".join(
            "    " + ln + "\n"
            for ln in plan.frps_toml(conf_dir).splitlines()
            if "auth.token" not in ln and "password" not in ln
        )
        + f"   (auth.token and the dashboard password are written into the file, not shown)\n"
        f"2. {conf_dir}/server.crt and {conf_dir}/server.key (the key 0600{owner}): signed by "
        "a new CA\n"
        + "3. for the runtime's config folder: "
        + ", ".join(f"{conf_dir}/{name}" for name in runtime_files)
        + "\n"
        + unit_line
        + f"\nOn the runtime's config folder: put frps_ca.pem and frp_token (from "
        f"{conf_dir}/runtime/) beside user_config.json, with\n{section}\n"
    )


def is_root() -> bool:
    return os.geteuid() == 0
