"""PyCharm / JetBrains: what its SSH interpreter does, with the settings our connection block
gives, against both server kinds, public and private mode, through the NAT rig.

The client is sshj itself (the library JetBrains IDEs bundle; tests/peers/sshj), with its
default algorithms: host key checked against the known_hosts file `connect` wrote, looked up
as [host]:port (sshj knows no HostKeyAlias); key login; a helpers tree over SFTP; the remote
interpreter run; a remote forward on localhost port 0 (the debugger's) that the runtime
connects back through. In private mode PyCharm cannot run a ProxyCommand, so the settings'
"First" command (`handy-colab forward`) runs on the laptop and the IDE dials 127.0.0.1.

paramiko stands in for JetBrains' legacy config parser (it ignores Include): the same
settings work with it too (RejectPolicy, SFTP, exec, request_port_forward).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from handy_colab.client.pycharm import pycharm_settings
from handy_colab.descriptor import Descriptor
from tests import sshj
from tests.e2e.conftest import Runtime, finish, make_runtime, need, need_rig
from tests.rig import keygen, wait_until

CASES = [
    ("public", "openssh"),
    ("public", "embedded"),
    ("private", "openssh"),
    ("private", "embedded"),
]


@dataclass
class PyCharm:
    rt: Runtime
    server: str
    settings: dict[str, str]
    rsa_key: Path
    work: Path
    forward: subprocess.Popen[str] | None = None

    @property
    def host(self) -> str:
        return self.settings["Host"]

    @property
    def port(self) -> int:
        return int(self.settings["Port"])

    @property
    def pattern(self) -> str:
        """How sshj and paramiko look the host key up."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def sshj(self, **kw: Any) -> sshj.Result:
        kw.setdefault("key", Path(self.settings["Key"]))
        kw.setdefault("known_hosts", self.rt.known_hosts)
        return sshj.run(
            self.rt.rig, host=self.host, port=self.port, user=self.settings["User"], **kw
        )


def _authorize_rsa(rt: Runtime, rsa: Path) -> None:
    """Let a second laptop key, an RSA one, into the runtime: appended to the folder's .pub
    file (the seed's public_key.pub, or the laptop.pub the private config lists)."""
    pub = rt.folder / ("public_key.pub" if rt.mode == "public" else "laptop.pub")
    with pub.open("a") as f:
        f.write(Path(f"{rsa}.pub").read_text())


def _start_first(rt: Runtime, first: str) -> subprocess.Popen[str]:
    """The settings' "First" command on the laptop, with the test's ssh config; returns once
    it prints the address it listens on."""
    argv = shlex.split(first)
    assert argv[:2] == ["handy-colab", "forward"], first
    argv[0] = shutil.which("handy-colab") or "handy-colab"
    proc = rt.rig.popen(
        "laptop",
        [*argv, "--ssh-config", str(rt.ssh_config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    port = argv[argv.index("--port") + 1]

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)

    threading.Thread(target=read, daemon=True).start()
    ok = wait_until(lambda: any(f"127.0.0.1:{port}" in ln for ln in lines), 20)
    if not ok:
        proc.kill()
        _, err = proc.communicate(timeout=10)
        raise AssertionError(f"`{first}` never said it listens: {lines} {err}")
    return proc


@pytest.fixture(scope="module", params=CASES, ids=["-".join(c) for c in CASES])
def pc(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PyCharm]:
    need_rig()
    need(sshj.prerequisites(), "the sshj client's prerequisites")
    mode, server = request.param
    tmp = tmp_path_factory.mktemp(f"pc-{mode}-{server}")
    rt = make_runtime(tmp, mode, start=False)
    pc: PyCharm | None = None
    try:
        rsa = keygen(tmp / "keys" / "laptop_rsa", "rsa")
        _authorize_rsa(rt, rsa)
        res = rt.up("--server", server)
        assert res.returncode == 0, res.stderr + res.stdout
        res = rt.connect()
        assert res.returncode == 0, res.stderr + res.stdout
        desc = Descriptor.load(rt.folder / "connections" / "colab.json")
        settings = pycharm_settings(desc, str(rt.laptop_key))
        pc = PyCharm(rt, server, settings, rsa, tmp)
        assert ("First" in settings) == (mode == "private"), settings
        if "First" in settings:
            pc.forward = _start_first(rt, settings["First"])
        yield pc
    finally:
        if pc is not None and pc.forward is not None:
            pc.forward.terminate()
            pc.forward.wait(10)
        finish(rt)


def test_sshj_does_what_pycharm_does(pc: PyCharm) -> None:
    helpers = pc.work / "helpers"
    want = sshj.make_helpers(helpers)
    # The runtime shares this machine's file system: what landed can be read back directly.
    remote = pc.work / "remote" / ".pycharm_helpers"
    res = pc.sshj(
        helpers=helpers,
        remote_dir=str(remote),
        python=pc.settings["Interpreter"],
        remote_folder=pc.settings["Remote folder"],
        forward=True,
    )
    assert res.code == sshj.OK, res
    d = res.data
    assert d["host_key"] == "verified", res
    assert d["auth"] == "publickey" and d["key_type"] == "ssh-ed25519", res
    assert d["sftp"] == {
        "remote_folder_is_dir": True,
        "files": len(want),
        "bytes": sum((helpers / r).stat().st_size for r in want),
        "mismatched": [],
    }, res
    assert sshj.tree_hashes(remote) == want
    assert d["exec"]["stdout"] == pc.settings["Interpreter"] + "\n", res
    assert d["exec"]["exit_status"] == 0
    fwd = d["remote_forward"]
    assert fwd["ok"] is True and 0 < fwd["port"] < 65536, res
    assert len(fwd["received"]) == 2, res
    neg = d["negotiated"]
    if pc.server == "embedded":
        # sshj's own first choices among what the embedded server offers (no chacha20).
        want_algs = sshj.first_common(sshj.default_algorithms(), sshj.embedded_server_algorithms())
        assert {k: neg[k] for k in want_algs} == want_algs, neg
    else:
        # sshj's first cipher; stock sshd offers it.
        assert neg["cipher"] == "chacha20-poly1305@openssh.com", neg
        assert neg["hostkey"] == "ssh-ed25519", neg
        assert neg["kex"].startswith("curve25519-sha256"), neg


def test_sshj_with_an_rsa_key(pc: PyCharm) -> None:
    res = pc.sshj(key=pc.rsa_key, python=pc.settings["Interpreter"])
    assert res.code == sshj.OK, res
    assert res.data["key_type"] == "ssh-rsa", res
    assert res.data["exec"]["stdout"] == pc.settings["Interpreter"] + "\n", res


def _known_hosts_variant(pc: PyCharm, name: str, impostor: str | None) -> Path:
    """The known_hosts file connect (and forward) wrote, with the runtime's [host]:port lines
    dropped, or holding ``impostor``'s key instead; every other line kept as written."""
    lines = pc.rt.known_hosts.read_text().splitlines()
    ours = [ln for ln in lines if ln.split()[:1] == [pc.pattern]]
    assert ours, f"no {pc.pattern} line in {pc.rt.known_hosts}: {lines}"
    kept = [ln for ln in lines if ln not in ours]
    if impostor is not None:
        kept += [f"{pc.pattern} {impostor}"]
    out = pc.work / name
    out.write_text("\n".join(kept) + "\n")
    return out


def test_sshj_refuses_a_key_it_was_not_given(pc: PyCharm) -> None:
    """Another key pinned for the same [host]:port: sshj refuses (it would connect if it did
    not check); without the [host]:port line it refuses too, although the alias line holds
    the right key (sshj never uses HostKeyAlias)."""
    other = keygen(pc.work / "impostor-sshj")
    impostor_line = " ".join(Path(f"{other}.pub").read_text().split()[:2])
    changed = _known_hosts_variant(pc, "kh-changed", impostor_line)
    res = pc.sshj(known_hosts=changed, python=pc.settings["Interpreter"])
    assert res.code == sshj.CHANGED_KEY, res
    assert res.data["host_key"] == "changed" and "exec" not in res.data, res
    assert "auth" not in res.data, res
    unknown = _known_hosts_variant(pc, "kh-unknown", None)
    res = pc.sshj(known_hosts=unknown)
    assert res.code == sshj.UNKNOWN_KEY, res
    assert res.data["host_key"] == "unknown", res
    # The right host, a key the runtime does not authorize: refused at login.
    res = pc.sshj(key=other, python=pc.settings["Interpreter"])
    assert res.code == sshj.AUTH_REFUSED and res.data["host_key"] == "verified", res
    assert "exec" not in res.data, res


def test_embedded_server_overlaps_sshj_defaults() -> None:
    """Every kind of algorithm has one that sshj's defaults and the embedded server share;
    the message names the lists if one does not."""
    need(sshj.prerequisites(), "the sshj client's prerequisites")
    client = sshj.default_algorithms()
    server = sshj.embedded_server_algorithms()
    picks = sshj.first_common(client, server)
    missing = {k: {"sshj": client[k], "embedded": server[k]} for k, v in picks.items() if not v}
    assert not missing, f"no common algorithm: {missing}"


PARAMIKO = r"""
import json, os, shlex, sys
import paramiko
(host, port, user, key, known, python, helpers, remote, user_config, alias) = sys.argv[1:11]
out = {}
# What a config parser that ignores Include makes of a ~/.ssh/config whose Host blocks are
# Included: nothing (the alias stays a bare name).
looked = paramiko.SSHConfig.from_path(user_config).lookup(alias)
out["config"] = {"hostname": looked.get("hostname"), "include": looked.get("include")}
client = paramiko.SSHClient()
client.load_host_keys(known)
client.set_missing_host_key_policy(paramiko.RejectPolicy())
try:
    client.connect(host, port=int(port), username=user, key_filename=key, timeout=15,
                   look_for_keys=False, allow_agent=False)
except paramiko.BadHostKeyException:
    out["refused"] = "changed"
    print(json.dumps(out))
    sys.exit(4)
t = client.get_transport()
out["cipher"], out["mac"], out["hostkey"] = t.local_cipher, t.local_mac, t.host_key_type
sftp = client.open_sftp()
sizes = {}
for top, dirs, files in os.walk(helpers):
    rel = os.path.relpath(top, helpers)
    target = remote if rel == "." else remote + "/" + rel
    parts = target.split("/")
    for i in range(2, len(parts) + 1):
        try:
            sftp.mkdir("/".join(parts[:i]))
        except OSError:
            pass
    for name in files:
        # put() stats the remote file and raises if its size differs.
        sizes[os.path.join(rel, name)] = sftp.put(os.path.join(top, name),
                                                  target + "/" + name).st_size
out["sftp"] = sizes
_, so, _ = client.exec_command(shlex.quote(python) + " -c 'import sys; print(sys.executable)'")
out["exec"] = [so.read().decode(), so.channel.recv_exit_status()]
port = t.request_port_forward("localhost", 0)
out["forward_port"] = port
code = ("import socket\nfor h in ('127.0.0.1', 'localhost'):\n"
        f" s = socket.create_connection((h, {port}), 10)\n s.sendall(h.encode() + b'\\n')\n"
        " print(h, s.makefile().readline().strip())\n s.close()\n")
_, so, se = client.exec_command(shlex.quote(python) + " -c " + shlex.quote(code))
got = []
for _ in range(2):
    chan = t.accept(15)
    if chan is None:
        break
    line = chan.makefile("rb").readline().decode().strip()
    got.append(line)
    chan.sendall(b"ack " + line.encode() + b"\n")
    chan.close()
out["forward"] = [got, so.read().decode(), se.read().decode(), so.channel.recv_exit_status()]
t.cancel_port_forward("localhost", port)
client.close()
print(json.dumps(out))
"""


def _paramiko(pc: PyCharm, known: Path, tag: str) -> tuple[int, dict[str, Any], str]:
    import json

    helpers = pc.work / "helpers-pm"
    if not helpers.exists():
        sshj.make_helpers(helpers)
    # A user's ~/.ssh/config as `connect` leaves it: the Host blocks only Included.
    user_config = pc.work / "user_config"
    user_config.write_text(f"Include {pc.rt.ssh_config}\n")
    res = pc.rt.rig.run(
        "laptop",
        [
            sys.executable,
            "-c",
            PARAMIKO,
            pc.host,
            str(pc.port),
            pc.settings["User"],
            pc.settings["Key"],
            str(known),
            pc.settings["Interpreter"],
            str(helpers),
            str(pc.work / f"remote-{tag}" / ".pycharm_helpers"),
            str(user_config),
            "colab",
        ],
        timeout=90,
    )
    lines = res.stdout.strip().splitlines()
    return res.returncode, json.loads(lines[-1]) if lines else {}, res.stderr


def test_paramiko_with_the_same_settings(pc: PyCharm) -> None:
    code, out, err = _paramiko(pc, pc.rt.known_hosts, "pm")
    assert code == 0, err + str(out)
    # Include ignored: the alias resolves to nothing, hence settings entered by hand.
    assert out["config"] == {"hostname": "colab", "include": str(pc.rt.ssh_config)}, out
    helpers = pc.work / "helpers-pm"
    remote = pc.work / "remote-pm" / ".pycharm_helpers"
    assert sshj.tree_hashes(remote) == sshj.tree_hashes(helpers)
    assert max(out["sftp"].values()) > 1024 * 1024, out
    assert out["exec"] == [pc.settings["Interpreter"] + "\n", 0], out
    got, printed, _stderr, status = out["forward"]
    assert got == ["127.0.0.1", "localhost"], out
    assert printed == "127.0.0.1 ack 127.0.0.1\nlocalhost ack localhost\n", out
    assert status == 0 and 0 < out["forward_port"] < 65536, out
    assert out["hostkey"] == "ssh-ed25519", out


def test_paramiko_refuses_an_impostor(pc: PyCharm) -> None:
    other = keygen(pc.work / "impostor-pm")
    line = " ".join(Path(f"{other}.pub").read_text().split()[:2])
    code, out, err = _paramiko(pc, _known_hosts_variant(pc, "kh-pm", line), "pm-bad")
    assert code == 4 and out.get("refused") == "changed", err + str(out)
    assert "exec" not in out
