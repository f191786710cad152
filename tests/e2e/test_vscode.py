"""VS Code Remote-SSH's own behaviour, with real OpenSSH, against both server kinds on every
route the rig has (relay public/private with either tunnel client, cloudflared quick, frp
public/private/p2p), from the laptop with the config `connect` wrote:

1. its invocation `ssh -T -D PORT -o ConnectTimeout=15 colab bash` with a script on stdin
   modelled on VS Code's (platform probe, local download of the server archive, tar, a
   server on 127.0.0.1 reported in a `<uuid>: start ... <uuid>: end` block), then a SOCKS5
   CONNECT through `-D` to that server while the session stays up;
2. its no-internet install copy `scp -o ConnectTimeout=15 F F.done colab:DIR`, SFTP and -O;
3. the SSH banner within ConnectTimeout through every ProxyCommand we write (and, once, a
   ProxyCommand delayed past it failing the way VS Code reports it);
4. the alias it reopens from "Recent", lowercased (and the reverse: `ssh COLAB`).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import secrets
import shlex
import shutil
import struct
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import vscode_probe as vp
from tests.clients import socks5_script
from tests.e2e import cfhelpers, conftest
from tests.e2e.conftest import need
from tests.e2e.test_frp import make_frp_runtime, need_frp
from tests.p2prig import STUN_PORT, add_nat_laptop, start_stun
from tests.p2prig import prerequisites as p2p_prerequisites
from tests.rig import RELAY_IP, Rig

CONNECT_TIMEOUT = 15  # VS Code's remote.SSH.connectTimeout default
DEADLINE = ("-o", f"ConnectTimeout={CONNECT_TIMEOUT}")


@dataclass(frozen=True)
class Case:
    route: str  # relay, cloudflared, frp
    mode: str  # public, private, quick, p2p
    server: str  # openssh, embedded
    tunnel: str = "openssh"  # the relay route's client: openssh, embedded

    @property
    def id(self) -> str:
        extra = "" if self.tunnel == "openssh" else f"-{self.tunnel}-tunnel"
        return f"{self.route}-{self.mode}-{self.server}{extra}"


CASES = [
    Case("relay", "public", "openssh"),
    Case("relay", "public", "embedded"),
    Case("relay", "private", "openssh"),
    Case("relay", "private", "embedded"),
    Case("relay", "private", "openssh", tunnel="embedded"),
    Case("cloudflared", "quick", "openssh"),
    Case("cloudflared", "quick", "embedded"),
    Case("frp", "public", "openssh"),
    Case("frp", "public", "embedded"),
    Case("frp", "private", "openssh"),
    Case("frp", "private", "embedded"),
    Case("frp", "p2p", "openssh"),
    Case("frp", "p2p", "embedded"),
]
# The one runtime on which a ProxyCommand is delayed past the deadline, to show it can fail.
SLOW_PROXY_CASE = Case("relay", "private", "openssh")


@dataclass
class Target:
    """One runtime seen from the laptop, whatever its route."""

    case: Case
    rig: Rig
    ssh_config: Path
    env: dict[str, str]
    status: Callable[[], dict[str, Any]]
    close: Callable[[], None]
    folder: Path  # the config folder, synced to the laptop in real use
    laptop_key: Path
    laptop: str = "laptop"  # the p2p route's laptop sits behind a NAT of its own

    def ssh_base(self) -> list[str]:
        # BatchMode: a prompt would hang the test instead of failing it (VS Code's key-only
        # setup never prompts either).
        return ["ssh", "-F", str(self.ssh_config), "-o", "BatchMode=yes"]

    def scp_base(self) -> list[str]:
        """scp as VS Code's local download runs it (plus our config file and BatchMode)."""
        return ["scp", "-F", str(self.ssh_config), "-o", "BatchMode=yes", *DEADLINE]

    def run(self, argv: list[str], **kw: Any) -> Any:
        kw.setdefault("env", self.env)
        return self.rig.run(self.laptop, argv, **kw)

    def popen(self, argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        kw.setdefault("env", self.env)
        return self.rig.popen(self.laptop, argv, **kw)

    def connect(self, source: Path, config: Path, known: Path) -> Any:
        """`handy-colab connect SOURCE` on the laptop into other ssh config files."""
        exe = shutil.which("handy-colab") or "handy-colab"
        argv = [exe, "connect", str(source), "--identity", str(self.laptop_key)]
        argv += ["--ssh-config", str(config), "--known-hosts", str(known)]
        return self.rig.run("laptop", argv, env=self.env)

    def free_port(self) -> int:
        code = "import socket;s=socket.socket();s.bind(('127.0.0.1',0));print(s.getsockname()[1])"
        return int(self.run(["python3", "-c", code], check=True).stdout)


def _relay(case: Case, tmp: Path) -> Target:
    rt = conftest.make_runtime(tmp, case.mode, start=False)
    try:
        res = rt.up("--server", case.server, "--relay-client", case.tunnel)
        assert res.returncode == 0, res.stderr + res.stdout
        res = rt.connect()
        assert res.returncode == 0, res.stderr + res.stdout
    except BaseException:
        rt.rig.close()
        raise

    def status() -> dict[str, Any]:
        return _status(rt.rig.handy("rt", "status", "colab", "--json"))

    env = rt.rig.env()
    close = lambda: conftest.finish(rt)  # noqa: E731
    return Target(case, rt.rig, rt.ssh_config, env, status, close, rt.folder, rt.laptop_key)


def _route(case: Case, tmp: Path) -> Target:
    laptop = "laptop"
    if case.route == "cloudflared":
        cfhelpers.need_peers()
        rt = cfhelpers.make_cf_runtime(tmp, server=case.server)
    elif case.mode != "p2p":
        need_frp()
        rt = make_frp_runtime(tmp, case.mode, server=case.server)
    else:
        need_frp()
        need(p2p_prerequisites(), "p2p prerequisites")
        rt = make_frp_runtime(
            tmp, "p2p", server=case.server, start=False, stun_server=f"{RELAY_IP}:{STUN_PORT}"
        )
        try:
            laptop = add_nat_laptop(rt.rig)
            start_stun(rt.rig)
            res = rt.up()
            assert res.returncode == 0, res.stderr + res.stdout
            res = rt.connect_to(rt.ssh_config, rt.known_hosts, str(rt.folder))
            assert res.returncode == 0, res.stderr + res.stdout
        except BaseException:
            rt.rig.close()
            raise

    def status() -> dict[str, Any]:
        return _status(rt.handy("rt", "status", "colab", "--json"))

    return Target(
        case,
        rt.rig,
        rt.ssh_config,
        rt.env(),
        status,
        lambda: cfhelpers.finish(rt),
        rt.folder,
        rt.laptop_key,
        laptop=laptop,
    )


def _status(res: Any) -> dict[str, Any]:
    assert res.returncode == 0, res.stderr + res.stdout
    data: dict[str, Any] = json.loads(res.stdout)
    return data


@pytest.fixture(scope="module", params=CASES, ids=[c.id for c in CASES])
def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    conftest.need_rig()
    case: Case = request.param
    tmp = tmp_path_factory.mktemp(case.id)
    made = _relay(case, tmp) if case.route == "relay" else _route(case, tmp)
    try:
        st = made.status()
        # The matrix is only worth something if each runtime runs what its id says.
        assert st["server"]["kind"] == case.server, st["server"]
        want = case.tunnel if case.route == "relay" else case.route
        assert st["tunnel"]["kind"] == want, st["tunnel"]
        yield made
    finally:
        made.close()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def banner_timing(t: Target, *opts: str) -> tuple[float, float]:
    """`ssh -v OPTS colab true`: seconds until the server's banner was read, and until ssh
    exited (successfully: asserted)."""
    argv = [*t.ssh_base(), "-v", *opts, "colab", "true"]
    t0 = time.monotonic()
    proc = t.popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert proc.stderr is not None
    err = vp.Output(proc.stderr)
    try:
        err.until("Remote protocol version", CONNECT_TIMEOUT + 5)
        banner = time.monotonic() - t0
        code = proc.wait(CONNECT_TIMEOUT + 5)
        err.text += proc.stderr.read().decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        proc.stderr.close()
    assert code == 0, err.text
    return banner, time.monotonic() - t0


# Runs first on each runtime (tests run in file order per fixture instance), so it times the
# first connection through a fresh ProxyCommand, as VS Code's first connect does.
def test_banner_within_connect_timeout(target: Target) -> None:
    banner, total = banner_timing(target, *DEADLINE)
    print(f"{target.case.id}: banner after {banner:.2f}s, `ssh colab true` done in {total:.2f}s")
    assert banner < CONNECT_TIMEOUT and total < CONNECT_TIMEOUT


@pytest.mark.parametrize("target", [SLOW_PROXY_CASE], ids=[SLOW_PROXY_CASE.id], indirect=True)
def test_a_proxy_command_past_the_deadline_fails(target: Target, tmp_path: Path) -> None:
    """The check above can fail: the very ProxyCommand `connect` wrote, started late by a
    wrapper, within the deadline works and past it gives VS Code's "banner exchange" error.
    A 4 s deadline stands in for the 15 s one: ssh applies whichever it is given alike."""
    res = target.run(["ssh", "-F", str(target.ssh_config), "-G", "colab"], check=True)
    (original,) = [ln[13:] for ln in res.stdout.splitlines() if ln.startswith("proxycommand ")]
    late = tmp_path / "late"
    # One process that sleeps then becomes the ProxyCommand: ssh's SIGHUP on timeout ends
    # it, so nothing is left behind.
    late.write_text(
        "#!/usr/bin/env python3\nimport os, sys, time\n"
        "time.sleep(float(sys.argv[1]))\nos.execvp(sys.argv[2], sys.argv[2:])\n"
    )
    late.chmod(0o755)
    deadline = "ConnectTimeout=4"
    banner, _ = banner_timing(target, "-o", deadline, "-o", f"ProxyCommand {late} 1 {original}")
    assert 1 <= banner < 4
    t0 = time.monotonic()
    slow = f"ProxyCommand {late} 7 {original}"
    res = target.run(
        [*target.ssh_base(), "-o", deadline, "-o", slow, "colab", "true"],
        timeout=30,
    )
    took = time.monotonic() - t0
    assert res.returncode == 255, res.stderr
    assert "Connection timed out during banner exchange" in res.stderr, res.stderr
    assert 3.5 < took < 6.5, took


@pytest.mark.parametrize(
    "how",
    [
        # Windows' default: the script goes to an explicit `bash`.
        ("-T", "colab", "bash"),
        # macOS/Linux's local-server mode: verbose, the script goes to the login shell.
        ("-v", "-T", "colab"),
    ],
    ids=["bash", "login-shell"],
)
def test_vscode_session_local_download_and_socks(
    target: Target, tmp_path: Path, how: tuple[str, ...]
) -> None:
    """VS Code's whole connect on a runtime without internet: the script asks for the server
    archive, the client copies it with scp while the session waits, the script unpacks and
    starts the server and reports its port; a SOCKS5 CONNECT through -D reaches it."""
    run_id, commit, token = str(uuid.uuid4()), secrets.token_hex(20), secrets.token_urlsafe(16)
    archive = vp.server_archive(tmp_path / "laptop-cache", commit)
    dest = tmp_path / "home" / ".vscode-server"
    socks = target.free_port()
    errlog = tmp_path / "ssh.stderr"
    with open(errlog, "wb") as err:
        vsc = target.popen(
            [*target.ssh_base(), "-D", str(socks), *DEADLINE, *how],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
        )
    assert vsc.stdin is not None and vsc.stdout is not None
    try:
        vsc.stdin.write(vp.probe_script(run_id, commit, str(dest), token).encode())
        vsc.stdin.flush()  # and kept open: VS Code's session lives on
        out = vp.Output(vsc.stdout)
        request = vp.parse_download_request(out.until("trigger_server_download_end", 30))
        assert request["artifact"] == "cli-alpine-x64", request
        assert request["destFolder2"] == f"/{archive.name}", request
        res = target.run(
            [*target.scp_base(), str(archive), f"{archive}.done", f"colab:{request['destFolder']}"],
            timeout=60,
        )
        assert res.returncode == 0, res.stderr
        info = vp.parse_result(out.until(f"{run_id}: end", 30), run_id)
        assert info["exitCode"] == "0" and info["unpackResult"] == "success", info
        assert info["platform"] == "linux" and info["tar"] == "1", info
        assert info["arch"] == platform.machine(), info
        assert info["bitness"] == str(struct.calcsize("P") * 8), info
        assert info["osReleaseId"] == platform.freedesktop_os_release()["ID"], info
        host, port = info["listeningOn"].rsplit(":", 1)
        assert host == "127.0.0.1" and port.isdigit(), info
        target.rig.wait_tcp(target.laptop, "127.0.0.1", socks)
        res = target.run(["python3", "-c", socks5_script(socks, host, int(port))], timeout=30)
        assert res.stdout.strip() == f"vscode-server {token}", res.stderr
        # The session was up all along: it ends cleanly, the server gone with it.
        vsc.stdin.write(
            f"wait {info['serverPid']}; rm -rf {shlex.quote(str(dest))}; exit 0\n".encode()
        )
        vsc.stdin.close()
        rest = vsc.stdout.read().decode()
        assert vsc.wait(15) == 0, rest + errlog.read_text()
    finally:
        if vsc.poll() is None:
            vsc.terminate()
            vsc.wait(10)
        for pipe in (vsc.stdin, vsc.stdout):
            if not pipe.closed:
                pipe.close()


@pytest.mark.parametrize("legacy", [False, True], ids=["sftp", "scp-O"])
def test_install_copy_both_scp_modes(target: Target, tmp_path: Path, legacy: bool) -> None:
    """`scp -o ConnectTimeout=15 <tgz> <tgz>.done alias:<dir>`: both arrive byte-identical."""
    local = tmp_path / "local"
    local.mkdir()
    tgz = local / f"vscode-cli-{secrets.token_hex(20)}.tar.gz"
    tgz.write_bytes(os.urandom(2 * 1024 * 1024 + 333))
    done = Path(f"{tgz}.done")
    done.write_bytes(b"")
    remote = tmp_path / "remote" / ".vscode-server"
    remote.mkdir(parents=True)
    res = target.run(
        [*target.scp_base(), *(["-O"] if legacy else []), str(tgz), str(done), f"colab:{remote}/"],
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert sha256(remote / tgz.name) == sha256(tgz)
    assert (remote / done.name).read_bytes() == b""


def test_alias_as_vscode_reopens_it(target: Target) -> None:
    """VS Code reopens "Recent" hosts with the alias lowercased. OpenSSH 9.2 matches `Host`
    patterns case-sensitively (checked here: `COLAB` does not select `Host colab`), so the
    block must be written under the lowercase alias; through it the pinned key
    (HostKeyAlias) and the route's ProxyCommand work."""
    alias = "colab"  # what `connect` wrote, already lowercase
    res = target.run(["ssh", "-F", str(target.ssh_config), "-G", alias], check=True)
    assert "hostkeyalias colab" in res.stdout.splitlines(), res.stdout
    res = target.run([*target.ssh_base(), alias, "echo alias-$((6*7))"], timeout=60)
    assert res.returncode == 0 and res.stdout == "alias-42\n", res.stderr
    for other in ("COLAB", "Colab"):
        res = target.run(["ssh", "-F", str(target.ssh_config), "-G", other], check=True)
        assert "hostkeyalias colab" not in res.stdout.splitlines(), other


def test_mixed_case_name_gets_the_alias_vscode_reopens(target: Target, tmp_path: Path) -> None:
    """A runtime named "MyColab" (a valid name): `connect` writes its block under "mycolab",
    the alias VS Code reopens from "Recent", and the route's ProxyCommand works under it."""
    # A copy of the config folder: frp's private modes take their secret from it.
    folder = tmp_path / "drive"
    shutil.copytree(target.folder, folder)
    original = folder / "connections" / "colab.json"
    desc = json.loads(original.read_text())
    desc["name"] = "MyColab"
    renamed = folder / "connections" / "MyColab.json"
    renamed.write_text(json.dumps(desc))
    original.unlink()
    config, known = tmp_path / "config", tmp_path / "known_hosts"
    res = target.connect(renamed, config, known)
    assert res.returncode == 0, res.stderr + res.stdout
    res = target.run(["ssh", "-F", str(config), "-G", "mycolab"], check=True)
    assert "hostkeyalias mycolab" in res.stdout.splitlines(), res.stdout
    res = target.run(["ssh", "-F", str(config), "-o", "BatchMode=yes", "mycolab", "echo ok"])
    assert res.returncode == 0 and res.stdout == "ok\n", res.stderr
