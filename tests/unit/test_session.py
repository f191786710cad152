"""The session launcher, run by real shells the way sshd and the embedded server run it.

Each test starts ``session.sh`` with an environment like the one sshd builds (a fresh PATH,
USER/HOME/SHELL, whatever the client sent) and the request in SSH_ORIGINAL_COMMAND, as a
ForceCommand sees it; the servers themselves are exercised by tests/e2e/test_notebook.py.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from handy_colab.server.openssh import render_sshd_config
from handy_colab.server.session import (
    DEFAULT_PATH_USER,
    ENV_FILE,
    capture,
    ensure_launcher,
    keep_variable,
    read_info,
    write_session,
)
from handy_colab.state import RuntimeDir

PROBE = (
    "import json, os, sys; print(json.dumps({'exe': sys.executable, 'cwd': os.getcwd(), "
    "'env': dict(os.environ)}))"
)
NASTY = 'it\'s "quoted" $HOME `x` \\ and\nsecond line'


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    rd = RuntimeDir(tmp_path / "state" / "colab").ensure()
    home = tmp_path / "home"
    home.mkdir()
    nb = tmp_path / "content"
    nb.mkdir()
    return {"rd": rd.path, "home": home, "nb": nb}


def _notebook_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        "PATH": "/opt/nb/bin:/usr/local/bin:/usr/bin:/bin",
        "LD_LIBRARY_PATH": "/usr/lib64-nvidia:/opt/cuda/lib64",
        "CUDA_VISIBLE_DEVICES": "0",
        "COLAB_RELEASE_TAG": "release-colab-test",
        "PYTHONPATH": "/env/python",
        "LANG": "en_US.UTF-8",
        "HC_NASTY": NASTY,
        "HC_MARK": "notebook",
        # Kernel-only and session-owned variables that must not reach a session:
        "JPY_PARENT_PID": "1",
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        "PAGER": "cat",
        "TERM": "xterm-color",
        "HOME": "/nb-home",
        "SSH_AUTH_SOCK": "/tmp/agent.sock",
        "SHLVL": "3",
    }
    env.update(extra or {})
    return env


def _setup(world: dict[str, Path], python: str | None = None, **extra: str) -> Path:
    rd = RuntimeDir(world["rd"])
    write_session(rd, capture(rd, _notebook_env(extra), str(world["nb"]), python))
    return ensure_launcher(rd, "/usr/lib/openssh/sftp-server")


def _sshd_env(world: dict[str, Path], shell: str = "/bin/bash", **client: str) -> dict[str, str]:
    env = {
        "PATH": DEFAULT_PATH_USER,
        "USER": "someone",
        "LOGNAME": "someone",
        "HOME": str(world["home"]),
        "SHELL": shell,
        "SSH_CONNECTION": "10.0.0.3 5555 127.0.0.1 22",
        "SSH_CLIENT": "10.0.0.3 5555 22",
    }
    env.update(client)
    return env


def _exec(
    launcher: Path, env: dict[str, str], command: str, shell: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the launcher for ``command``: directly (as the embedded server does), or through
    ``shell`` (``["/bin/bash", "-c"]``: sshd runs ForceCommand as ``$SHELL -c COMMAND``)."""
    argv = [*shell, f"/bin/sh {launcher}"] if shell else ["/bin/sh", str(launcher)]
    return subprocess.run(
        argv,
        env=dict(env, SSH_ORIGINAL_COMMAND=command),
        cwd=env["HOME"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _probe(launcher: Path, env: dict[str, str], python: str = "python3") -> dict[str, object]:
    res = _exec(launcher, env, f'{python} -c "{PROBE}"')
    assert res.returncode == 0, res.stderr
    data: dict[str, object] = json.loads(res.stdout)
    return data


def test_exec_gets_the_notebook_environment_and_directory(world: dict[str, Path]) -> None:
    launcher = _setup(world, python=sys.executable)
    out = _probe(launcher, _sshd_env(world), "python")
    env = out["env"]
    assert isinstance(env, dict)
    assert out["exe"] == sys.executable
    assert out["cwd"] == str(world["nb"])
    for name in ("LD_LIBRARY_PATH", "CUDA_VISIBLE_DEVICES", "COLAB_RELEASE_TAG", "PYTHONPATH"):
        assert env[name] == _notebook_env()[name]
    assert env["HC_NASTY"] == NASTY
    assert env["PATH"].split(":")[0] == os.path.dirname(sys.executable)
    assert "/opt/nb/bin" in env["PATH"].split(":")
    # The session's own, not the kernel's:
    assert env["HOME"] == str(world["home"])
    assert env["USER"] == "someone"
    assert "SSH_ORIGINAL_COMMAND" not in env
    for name in ("JPY_PARENT_PID", "MPLBACKEND", "PAGER", "SSH_AUTH_SOCK", "TERM"):
        assert name not in env, name
    assert not any(k.startswith("hc_") or k.startswith("HC_LAUNCH") for k in env)


def test_client_setenv_wins_but_not_over_path(world: dict[str, Path]) -> None:
    launcher = _setup(world)
    out = _probe(launcher, _sshd_env(world, HC_MARK="client", LANG="de_DE.UTF-8"))
    env = out["env"]
    assert isinstance(env, dict)
    assert env["HC_MARK"] == "client"
    assert env["LANG"] == "de_DE.UTF-8"
    assert env["CUDA_VISIBLE_DEVICES"] == "0"
    assert env["PATH"] == _notebook_env()["PATH"]


def test_refresh_is_seen_by_the_next_session(world: dict[str, Path]) -> None:
    launcher = _setup(world)
    other = world["nb"] / "sub"
    other.mkdir()
    rd = RuntimeDir(world["rd"])
    env2 = _notebook_env({"HC_MARK": "second"})
    del env2["CUDA_VISIBLE_DEVICES"]
    write_session(rd, capture(rd, env2, str(other)))
    out = _probe(launcher, _sshd_env(world))
    env = out["env"]
    assert isinstance(env, dict)
    assert env["HC_MARK"] == "second"
    assert "CUDA_VISIBLE_DEVICES" not in env
    assert out["cwd"] == str(other)
    assert read_info(rd)["cwd"] == str(other)


def test_files_are_private(world: dict[str, Path]) -> None:
    launcher = _setup(world, HC_SECRET_TOKEN="tok-123")
    env_file = world["rd"] / ENV_FILE
    assert "tok-123" in env_file.read_text()
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(world["rd"].stat().st_mode) == 0o700
    assert "tok-123" not in launcher.read_text()
    assert "tok-123" not in (world["rd"] / "session.json").read_text()


def test_shims_when_the_python_dir_has_no_python(world: dict[str, Path], tmp_path: Path) -> None:
    # An interpreter reachable only as an odd name (as /usr/bin/python3.11 alone would be).
    pydir = tmp_path / "odd"
    pydir.mkdir()
    odd = pydir / "python3.99"
    odd.symlink_to(os.path.realpath(sys.executable))
    launcher = _setup(world, python=str(odd))
    for name in ("python", "python3"):
        out = _probe(launcher, _sshd_env(world), name)
        assert out["exe"] == str(odd), name


def test_missing_cwd_falls_back_to_home(world: dict[str, Path]) -> None:
    launcher = _setup(world)
    rd = RuntimeDir(world["rd"])
    write_session(rd, capture(rd, _notebook_env(), str(world["nb"] / "gone")))
    res = _exec(launcher, _sshd_env(world), "pwd")
    assert res.returncode == 0
    assert res.stdout.strip() == str(world["home"])


def test_exit_code_and_stdin_pass_through(world: dict[str, Path]) -> None:
    launcher = _setup(world)
    env = dict(_sshd_env(world), SSH_ORIGINAL_COMMAND="cat; exit 7")
    res = subprocess.run(
        ["/bin/sh", str(launcher)], env=env, input="data\n", capture_output=True, text=True
    )
    assert (res.returncode, res.stdout) == (7, "data\n")


def _login(launcher: Path, env: dict[str, str], script: str) -> str:
    """A login session on a terminal, as sshd gives one; returns what the shell printed."""
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.chdir(env["HOME"])
        os.execve("/bin/sh", ["/bin/sh", str(launcher)], env)
    out = b""
    os.write(fd, script.encode())
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    os.waitpid(pid, 0)
    os.close(fd)
    return out.decode(errors="replace")


@pytest.mark.parametrize("shell", ["/bin/bash", "/bin/dash"])
def test_login_shell_keeps_profile_entries_after_the_notebook_path(
    world: dict[str, Path], shell: str
) -> None:
    if not os.access(shell, os.X_OK):
        pytest.skip(f"{shell} not installed")
    launcher = _setup(world)
    home = world["home"]
    # A profile that resets PATH the way Debian's /etc/profile does, then adds its own.
    (home / ".profile").write_text(
        'PATH=/usr/bin:/bin\nPATH="$HOME/bin:$PATH"\nexport HC_PROFILE=yes\ncd /\n'
    )
    text = _login(
        launcher,
        _sshd_env(world, shell=shell, TERM="xterm"),
        'echo "R1=$PATH" ; echo "R2=$(pwd)" ; echo "R3=$CUDA_VISIBLE_DEVICES/$HC_PROFILE"\nexit\n',
    )
    vals = dict(re.findall(r"(R[123])=(\S*)", text.replace("\r", "")))
    assert vals.get("R1", "").startswith(_notebook_env()["PATH"]), text
    assert f"{home}/bin" in vals["R1"].split(":")
    assert vals.get("R2") == str(world["nb"]), text
    assert vals.get("R3") == "0/yes", text


def test_keep_variable() -> None:
    assert keep_variable("CUDA_HOME", "/usr/local/cuda")
    assert keep_variable("PAGER", "less")
    assert keep_variable("MPLBACKEND", "Agg")
    for name, value in (
        ("MPLBACKEND", "module://matplotlib_inline.backend_inline"),
        ("PAGER", "cat"),
        ("JPY_SESSION_NAME", "x"),
        ("SSH_CONNECTION", "x"),
        ("BASH_FUNC_module%%", "() { :; }"),
        ("bad-name", "x"),
        ("HOME", "/root"),
    ):
        assert not keep_variable(name, value), name


def test_internal_sftp_without_a_binary_says_how_to_fix(world: dict[str, Path]) -> None:
    rd = RuntimeDir(world["rd"])
    write_session(rd, capture(rd, _notebook_env(), str(world["nb"])))
    launcher = ensure_launcher(rd, None)
    res = _exec(launcher, _sshd_env(world), "internal-sftp")
    assert res.returncode == 127
    assert "openssh-sftp-server" in res.stderr


def test_transfer_commands_skip_the_rc_files(world: dict[str, Path]) -> None:
    launcher = _setup(world)
    marker = world["home"] / "bashrc-ran"
    (world["home"] / ".bashrc").write_text(f"touch {marker}\n")
    env = _sshd_env(world)
    # Runs in the notebook's directory with its PATH, without bash and its rc files.
    res = _exec(launcher, env, "rsync --server --version 2>/dev/null; pwd; echo $PATH")
    assert res.stdout.splitlines()[-2:] == [str(world["nb"]), _notebook_env()["PATH"]]
    assert not marker.exists()


def test_sshd_config_gateway_ports_follows_the_config(world: dict[str, Path]) -> None:
    """The OpenSSH server gets the same server.gateway_ports as the embedded one."""
    rd = RuntimeDir(world["rd"])
    default = render_sshd_config(rd, 2222, "someone", "internal-sftp", "/bin/sh x")
    assert "GatewayPorts no" in default.splitlines()
    chosen = render_sshd_config(rd, 2222, "someone", "internal-sftp", None, "clientspecified")
    assert "GatewayPorts clientspecified" in chosen.splitlines()


@pytest.mark.parametrize("sshd_setenv", [True, False], ids=["SetEnv-SHLVL", "no-SetEnv"])
def test_bashrc_runs_once_per_command(world: dict[str, Path], sshd_setenv: bool) -> None:
    """Debian's bash reads ~/.bashrc in a `-c` shell that sees SSH_CLIENT at level 1: both
    sshd's shell and the launcher's would. With the sshd config's `SetEnv SHLVL=1` only the
    launcher's does; the command still sees what ~/.bashrc did, and SHLVL 1."""
    launcher = _setup(world)
    count = world["home"] / "bashrc-count"
    (world["home"] / ".bashrc").write_text(f"echo x >> {count}\nexport HC_FROM_RC=yes\n")
    env = _sshd_env(world)
    if sshd_setenv:
        assert "SetEnv SHLVL=1" in render_sshd_config(
            RuntimeDir(world["rd"]), 2222, "someone", "internal-sftp", "/bin/sh x"
        )
        env["SHLVL"] = "1"
    res = _exec(launcher, env, 'echo "$HC_FROM_RC $SHLVL"', ["/bin/bash", "-c"])
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["yes", "1"]
    # Without the SetEnv the file runs twice: the reason for it (and a check that this bash
    # reads ~/.bashrc for ssh at all, so the first case proves something).
    assert count.read_text().count("x") == (1 if sshd_setenv else 2)
