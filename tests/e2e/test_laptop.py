"""The laptop side with several runtimes: lowercase aliases, `list`, `forward`, and the config
`connect --os windows` writes, run for real by OpenSSH with spaces in every path.

Two private-mode runtimes (one per server kind) in one NAT rig, one laptop config.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Runtime, finish, make_runtime, need_rig, write_private_folder

SECOND = "Kaggle-GPU"  # upper case on purpose: the alias connect writes is lowercase
SECOND_ALIAS = SECOND.lower()


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runtime, Path]]:
    """Runtime colab (OpenSSH server) and Kaggle-GPU (embedded server) on one relay."""
    need_rig()
    rt = make_runtime(tmp_path_factory.mktemp("laptop"), "private")
    try:
        folder = rt.folder.parent / "kaggle_data"
        socket2 = rt.rig.relay_socket + "2"
        # The relay's sshd leaves the socket file behind; the rig removes only its own one.
        rt.rig.cleanups.append(lambda: Path(socket2).unlink(missing_ok=True))
        write_private_folder(folder, rt.relay_key, rt.laptop_key, rt.relay_host_key, socket2)
        cfg = json.loads((folder / "user_config.json").read_text())
        cfg["name"] = SECOND
        (folder / "user_config.json").write_text(json.dumps(cfg))
        res = rt.rig.handy("rt", "up", str(folder), "--timeout", "40", "--server", "embedded")
        assert res.returncode == 0, res.stderr + res.stdout
        res = rt.connect(folder / "connections" / f"{SECOND}.json")
        assert res.returncode == 0, res.stderr + res.stdout
        assert f"Wrote Host '{SECOND_ALIAS}'" in res.stdout
        yield rt, folder
    finally:
        finish(rt)


def laptop(rt: Runtime, *args: str, timeout: float = 60) -> Any:
    return rt.rig.handy("laptop", *args, timeout=timeout)


def test_aliases_are_lowercase_and_any_case_reaches_them(two: tuple[Runtime, Path]) -> None:
    rt, _ = two
    text = rt.ssh_config.read_text()
    # Lowercase first (VS Code reopens it lowercased), the runtime's own spelling beside it
    # (OpenSSH matches Host patterns case-sensitively: measured, not assumed).
    assert f"Host {SECOND_ALIAS} {SECOND}\n" in text
    assert f"HostKeyAlias {SECOND_ALIAS}\n" in text
    assert f"{SECOND_ALIAS} " in rt.known_hosts.read_text()
    for name in (SECOND_ALIAS, SECOND):
        res = rt.rig.run("laptop", [*rt.ssh_base(), name, "echo", "hi"])
        assert res.returncode == 0 and res.stdout == "hi\n", (name, res.stderr)


def test_a_second_runtime_never_disturbs_the_first(
    two: tuple[Runtime, Path], tmp_path: Path
) -> None:
    rt, folder = two
    # The ProxyCommands' own temp dir: private mode's used to leave socket folders there.
    tmp = tmp_path / "proxy-tmp"
    tmp.mkdir()
    env = dict(rt.rig.env(), TMPDIR=str(tmp))
    # A session on the first stays up while the second is connected to and used.
    first = rt.rig.popen(
        "laptop",
        [*rt.ssh_base(), "colab", "echo started; read line; echo got $line"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert first.stdout is not None and first.stdin is not None
    assert first.stdout.readline() == "started\n"
    res = rt.connect(folder / "connections" / f"{SECOND}.json")
    assert res.returncode == 0, res.stderr
    res = rt.rig.run("laptop", [*rt.ssh_base(), SECOND_ALIAS, "hostname"], env=env)
    assert res.returncode == 0, res.stderr
    first.stdin.write("ping\n")
    first.stdin.flush()
    assert first.stdout.readline() == "got ping\n"
    assert first.wait(15) == 0
    # Each runtime has its own block, host key and descriptor copy.
    blocks = re.findall(r"^# >>> handy-colab (\S+) >>>$", rt.ssh_config.read_text(), re.M)
    assert sorted(blocks) == ["colab", SECOND_ALIAS]
    runtimes = rt.known_hosts.parent / "handy-colab-runtimes"
    assert sorted(p.name for p in runtimes.iterdir()) == ["colab.json", f"{SECOND_ALIAS}.json"]
    # Private mode's ProxyCommand made no local socket folder (they were left behind before).
    assert list(tmp.iterdir()) == []


def test_list_on_the_laptop_and_on_the_runtime(two: tuple[Runtime, Path]) -> None:
    rt, folder = two
    res = laptop(rt, "list", "--ssh-config", str(rt.ssh_config), "--json")
    assert res.returncode == 0, res.stderr
    listed = {item["alias"]: item for item in json.loads(res.stdout)["laptop"]}
    assert set(listed) == {"colab", SECOND_ALIAS}
    for item in listed.values():
        assert item["reachable"] and item["detail"].startswith("SSH-2.0-"), item
        assert item["route"] == "relay private"
    res = rt.rig.handy("rt", "list")
    assert res.returncode == 0, res.stderr
    assert re.search(r"^  colab  healthy", res.stdout, re.M), res.stdout
    assert re.search(rf"^  {SECOND}  healthy", res.stdout, re.M), res.stdout
    # The second runtime goes down: the laptop's list says so, the first still answers.
    assert rt.rig.handy("rt", "down", SECOND).returncode == 0
    try:
        res = laptop(rt, "list", "--ssh-config", str(rt.ssh_config))
        assert res.returncode == 0, res.stderr
        assert re.search(r"^  colab\s+relay private\s+reachable", res.stdout, re.M), res.stdout
        assert re.search(rf"^  {SECOND_ALIAS}\s+relay private\s+NOT reachable", res.stdout, re.M), (
            res.stdout
        )
    finally:
        res = rt.rig.handy("rt", "up", str(folder), "--timeout", "40", "--server", "embedded")
        assert res.returncode == 0, res.stderr + res.stdout


def test_forward_gives_a_plain_address_with_the_key_pinned(
    two: tuple[Runtime, Path], tmp_path: Path
) -> None:
    """What PyCharm and any client without ProxyCommand/HostKeyAlias get: 127.0.0.1:PORT."""
    rt, _ = two
    port = 22022
    fwd = rt.rig.popen(
        "laptop",
        [
            "handy-colab",
            "forward",
            "colab",
            "--port",
            str(port),
            "--ssh-config",
            str(rt.ssh_config),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert fwd.stdout is not None
        line = fwd.stdout.readline()
        assert f"127.0.0.1:{port}" in line, line + (fwd.stderr.read() if fwd.stderr else "")
        assert f"[127.0.0.1]:{port} " in rt.known_hosts.read_text()

        def plain(known: Path) -> list[str]:
            return [
                "ssh",
                "-F",
                "/dev/null",
                "-p",
                str(port),
                "-i",
                str(rt.laptop_key),
                "-o",
                f"UserKnownHostsFile={known}",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "BatchMode=yes",
                "root@127.0.0.1",
            ]

        for _ in range(2):  # each connection gets its own route
            res = rt.rig.run("laptop", [*plain(rt.known_hosts), "echo", "via-forward"])
            assert res.returncode == 0 and res.stdout == "via-forward\n", res.stderr
        # A key pinned for that address that is not the runtime's is refused.
        wrong = tmp_path / "wrong_known_hosts"
        other = rt.relay_host_key
        wrong.write_text(f"[127.0.0.1]:{port} {other}\n")
        res = rt.rig.run("laptop", [*plain(wrong), "true"])
        assert res.returncode == 255 and "Host key verification failed" in res.stderr, res.stderr
    finally:
        fwd.send_signal(signal.SIGTERM)
        assert fwd.wait(10) == 0


@pytest.fixture
def spaced_user(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A laptop account whose home has spaces, like C:/Users/Jane Doe (for `ssh -G`)."""
    root = Path(tempfile.mkdtemp(prefix="hc win ", dir="/tmp"))
    root.chmod(0o755)
    home = root / "Users" / "Jane Doe"
    home.mkdir(parents=True)
    name = f"hcwin{os.getpid() % 10000}"
    subprocess.run(["useradd", "-M", "-d", str(home), name], check=True)
    try:
        yield name, home
    finally:
        subprocess.run(["userdel", name], check=False)
        shutil.rmtree(root, ignore_errors=True)


def test_windows_shaped_config_runs_with_openssh(
    two: tuple[Runtime, Path], spaced_user: tuple[str, Path]
) -> None:
    """`connect --os windows` (relative Include, quoted absolute program, forward slashes),
    with spaces in the home, the program's folder and the key's: OpenSSH runs it here.
    Windows' own ssh is not run here: its rules are checked line by line in the unit tests."""
    rt, _ = two
    user, home = spaced_user
    scripts = home.parent.parent / "Program Files" / "Python" / "Scripts"
    scripts.mkdir(parents=True)
    exe = shutil.which("handy-colab")
    assert exe is not None
    (scripts / "handy-colab").symlink_to(exe)
    key_dir = home / "My Keys"
    key_dir.mkdir()
    key = key_dir / "id_ed25519"
    shutil.copy(rt.laptop_key, key)
    key.chmod(0o600)
    env = dict(rt.rig.env(), HOME=str(home), PATH=f"{scripts}:{os.environ['PATH']}")
    res = rt.rig.run(
        "laptop",
        [
            exe,
            "connect",
            str(rt.folder / "connections" / "colab.json"),
            "--os",
            "windows",
            "--identity",
            str(key),
        ],
        env=env,
    )
    assert res.returncode == 0, res.stderr + res.stdout
    user_cfg = home / ".ssh" / "config"
    assert user_cfg.read_text().splitlines()[0] == "Include config.d/handy-colab"
    managed = home / ".ssh" / "config.d" / "handy-colab"
    proxy = [ln.strip() for ln in managed.read_text().splitlines() if "ProxyCommand" in ln]
    assert proxy == [
        f'ProxyCommand "{scripts}/handy-colab" proxy -F "{managed}" colab-relay '
        f"{rt.rig.relay_socket}"
    ]
    # The relative Include resolves against the account's own ~/.ssh (as Windows' ssh does).
    subprocess.run(["chown", "-R", user, str(home / ".ssh")], check=True)
    res = subprocess.run(
        ["runuser", "-u", user, "--", "ssh", "-G", "colab"], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    resolved = dict(ln.split(" ", 1) for ln in res.stdout.splitlines() if " " in ln)
    assert resolved["hostkeyalias"] == "colab" and resolved["stricthostkeychecking"] == "true"
    assert resolved["proxycommand"].startswith(f'"{scripts}/handy-colab" proxy')
    # And OpenSSH runs it: the ProxyCommand is the pure-Python proxy, spaces everywhere.
    for _ in range(2):
        res = rt.rig.run(
            "laptop", ["ssh", "-F", str(managed), "-o", "BatchMode=yes", "colab", "echo", "ok"]
        )
        assert res.returncode == 0 and res.stdout == "ok\n", res.stderr


@pytest.mark.parametrize(
    "name, proxy",
    [
        # Short enough for the held connection's sockets (relayhop.max_dir_len).
        ("%d $(touch HCPWN1) 'q\"`touch HCPWN2`", "relayhop.py"),
        # ssh's -L drops a backslash and splits on ':': the asyncssh proxy instead.
        ("b\\s:c %h `touch HCPWN3`", "handy_colab.streamlocal"),
    ],
)
def test_hostile_folder_names_reach_ssh_as_plain_words(
    two: tuple[Runtime, Path], name: str, proxy: str
) -> None:
    """A config, known_hosts and held-connection folder in a directory named with what a
    shell or ssh's tokenizers would read (`%`, `$(...)`, quotes, backticks, a backslash):
    OpenSSH runs the ProxyCommand connect wrote, nothing else runs, and `disconnect` reads
    the block back."""
    rt, _ = two
    root = Path(tempfile.mkdtemp(prefix="hc q ", dir="/tmp"))
    try:
        weird = root / name
        weird.mkdir()
        cfg, kh = weird / "config", weird / "kh"
        res = rt.rig.handy(
            "laptop",
            "connect",
            str(rt.folder / "connections" / "colab.json"),
            "--identity",
            str(rt.laptop_key),
            "--ssh-config",
            str(cfg),
            "--known-hosts",
            str(kh),
        )
        assert res.returncode == 0, res.stderr + res.stdout
        assert proxy in cfg.read_text()
        for _ in range(2):  # the first starts a held connection, the second uses it
            res = rt.rig.run(
                "laptop", ["ssh", "-F", str(cfg), "-o", "BatchMode=yes", "colab", "echo", "ok"]
            )
            assert res.returncode == 0 and res.stdout == "ok\n", res.stderr
        res = rt.rig.handy("laptop", "disconnect", "--ssh-config", str(cfg))
        assert res.returncode == 0, res.stderr
        if proxy == "relayhop.py":
            assert (weird / "handy-colab-hop").is_dir()
            assert "No relay connection was held" not in res.stdout, res.stdout
        found = [p for d in (root, weird, Path.cwd(), Path("/tmp")) for p in d.glob("HCPWN*")]
        assert found == []
    finally:
        shutil.rmtree(root, ignore_errors=True)
