"""Notebook parity, from a real Jupyter kernel behind the NAT, for both server kinds.

A real ipykernel starts in the runtime's namespace with a distinctive environment and
working directory (as a Colab kernel has /content, CUDA paths, COLAB_* variables, a Python
that is not the first on PATH) and runs the seed's ``start_tunnel(folder)`` (OpenSSH sshd,
public mode) or the new ``handy_colab.up()`` (embedded server, private mode). The laptop
then checks over real ssh/sftp that every kind of session sees what the kernel sees, and
that the tunnel outlives a cell interrupt and a kernel restart.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import Any

import pytest

from tests.clients import PtySession
from tests.e2e.conftest import Runtime, finish, make_runtime, need_rig
from tests.e2e.test_progress_notebook import widget_states
from tests.kernel import Kernel
from tests.nonroot import ensure_user
from tests.rig import REPO, wait_until

# Made per run: a literal would sit in this (world-readable) test file itself.
SECRET = "hc-secret-" + secrets.token_hex(8)
PROBE = (
    "import json, os, sys; print(json.dumps({'exe': sys.executable, 'cwd': os.getcwd(), "
    "'env': dict(os.environ)}))"
)
# The variables a notebook's sessions must see, as the kernel has them.
PARITY_VARS = (
    "LD_LIBRARY_PATH",
    "CUDA_HOME",
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
    "XLA_FLAGS",
    "COLAB_NOTEBOOK_ID",
    "KAGGLE_HC_DATA",
    "PYTHONPATH",
    "LANG",
    "LC_ALL",
    "HC_MARK",
)


@dataclass
class Notebook:
    rt: Runtime
    kernel: Kernel
    server: str
    api: str  # "seed" (start_tunnel) or "up"
    workdir: Path
    python: str
    up_code: str
    first_up: Any

    def ssh(self, *cmd: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.rt.ssh(*cmd, **kw)

    def probe(self, *ssh_opts: str) -> dict[str, Any]:
        res = self.rt.rig.run(
            "laptop", [*self.rt.ssh_base(), *ssh_opts, "colab", f'python -c "{PROBE}"']
        )
        assert res.returncode == 0, res.stderr
        data: dict[str, Any] = json.loads(res.stdout)
        return data


def kernel_env(rt: Runtime, home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        # No venv on it: the kernel's Python is not what `python` finds here.
        "PATH": "/opt/hc-nb/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "LD_LIBRARY_PATH": "/usr/lib64-nvidia:/opt/hc-nb/cuda/lib64",
        "CUDA_HOME": "/opt/hc-nb/cuda",
        "CUDA_VISIBLE_DEVICES": "0",
        "NVIDIA_VISIBLE_DEVICES": "all",
        "XLA_FLAGS": "--xla_gpu_cuda_data_dir=/opt/hc-nb/cuda",
        "COLAB_NOTEBOOK_ID": "hc-test-notebook",
        "KAGGLE_HC_DATA": "/kaggle/input/hc",
        "PYTHONPATH": "/opt/hc-nb/pylib",
        "HC_MARK": "notebook",
        "HC_SECRET_TOKEN": SECRET,
        "HANDY_COLAB_STATE_DIR": str(rt.rig.state_dir),
    }
    env.update(extra or {})
    return env


@contextlib.contextmanager
def kernel_in_runtime(
    tmp: Path, mode: str, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[Runtime, Kernel, Path, Path]]:
    """A rig, and a kernel in its runtime namespace: (runtime, kernel, workdir, home).

    On the way out the kernel is shut down, the runtime stopped, and the rig must be empty.
    """
    need_rig()
    rt = make_runtime(tmp / "rig", mode, start=False)
    kernel = None
    try:
        workdir = tmp / "content"
        workdir.mkdir()
        home = tmp / "home"
        home.mkdir()
        env = kernel_env(rt, home, extra_env)
        kernel = Kernel(tmp / "kernel", rt.rig.ns["rt"], env, workdir)
        yield rt, kernel, workdir, home
    finally:
        if kernel is not None:
            kernel.shutdown()
        rt.rig.handy("rt", "down", "colab")
        finish(rt)


@pytest.fixture(scope="module", params=["openssh", "embedded"])
def nb(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Notebook]:
    server = request.param
    mode, api = ("public", "seed") if server == "openssh" else ("private", "up")
    with kernel_in_runtime(tmp_path_factory.mktemp(f"nb-{server}"), mode) as (
        rt,
        kernel,
        workdir,
        _home,
    ):
        if api == "seed":
            up_code = f"import handy_colab\nblock = handy_colab.start_tunnel({str(rt.folder)!r})"
        else:
            up_code = (
                f"import handy_colab\nrt = handy_colab.up({str(rt.folder)!r}, server='embedded')"
            )
        first = kernel.run(up_code).check()
        python = kernel.value("__import__('sys').executable")
        res = rt.connect()
        assert res.returncode == 0, res.stderr + res.stdout
        yield Notebook(rt, kernel, server, api, workdir, python, up_code, first)


def test_up_chose_the_server_kind(nb: Notebook) -> None:
    out = nb.kernel.run("print(handy_colab.status())").check().stdout
    assert f"server {nb.server} up" in out, out
    assert "phase" not in out and "ready" in out


def test_exec_session_sees_the_kernel(nb: Notebook) -> None:
    kenv = nb.kernel.value("dict(__import__('os').environ)")
    out = nb.probe()
    assert out["exe"] == nb.python
    assert out["cwd"] == str(nb.workdir)
    for name in PARITY_VARS:
        assert out["env"].get(name) == kenv[name], name
    path = out["env"]["PATH"].split(":")
    assert path[0] == os.path.dirname(nb.python)
    # Then the kernel's PATH; what the user's rc files add (~/.bashrc here) comes after.
    kpath = kenv["PATH"].split(":")
    assert path[1 : 1 + len(kpath)] == kpath
    # Session-owned values are the session's, not the kernel's.
    assert out["env"]["HOME"] == "/root" != kenv["HOME"]
    assert "JPY_PARENT_PID" in kenv and "JPY_PARENT_PID" not in out["env"]


def test_login_shell_on_a_terminal_sees_the_kernel(nb: Notebook) -> None:
    sess = PtySession(
        ["ip", "netns", "exec", nb.rt.rig.ns["laptop"], *nb.rt.ssh_base(), "-tt", "colab"]
    )
    try:
        sess.send(
            'echo "P=$PATH"; echo "D=$(pwd)"; echo "C=$CUDA_VISIBLE_DEVICES"; '
            'python -c \'import sys; print("X=" + sys.executable)\'; echo "Z=$0"\r'
        )
        m = sess.expect(r"P=(\S+)\r\nD=(\S+)\r\nC=(\S*)\r\nX=(\S+)\r\nZ=(\S+)\r\n", timeout=20)
        path, cwd, cuda, exe, zero = (g.decode() for g in m.groups())
        assert path.split(":")[0] == os.path.dirname(nb.python)
        assert cwd == str(nb.workdir)
        assert cuda == "0"
        assert exe == nb.python
        assert zero == "-bash"  # a login shell, as sshd starts one
        sess.send("exit\r")
    finally:
        sess.close()


def test_sftp_and_scp_start_in_the_notebook_dir(nb: Notebook, tmp_path: Path) -> None:
    res = nb.rt.rig.run(
        "laptop", ["sftp", "-F", str(nb.rt.ssh_config), "-b", "-", "colab"], input="pwd\n"
    )
    assert res.returncode == 0, res.stderr
    assert f"Remote working directory: {nb.workdir}" in res.stdout
    src = tmp_path / "to-notebook.txt"
    src.write_text("hello notebook\n")
    res = nb.rt.rig.run("laptop", ["scp", "-F", str(nb.rt.ssh_config), str(src), "colab:"])
    assert res.returncode == 0, res.stderr
    assert (nb.workdir / "to-notebook.txt").read_text() == "hello notebook\n"


def test_client_setenv_wins(nb: Notebook) -> None:
    out = nb.probe("-o", "SetEnv=HC_MARK=from-laptop CUDA_VISIBLE_DEVICES=1")
    assert out["env"]["HC_MARK"] == "from-laptop"
    assert out["env"]["CUDA_VISIBLE_DEVICES"] == "1"
    assert out["env"]["LD_LIBRARY_PATH"] == "/usr/lib64-nvidia:/opt/hc-nb/cuda/lib64"
    assert nb.probe()["env"]["HC_MARK"] == "notebook"


def test_secrets_in_the_environment_stay_private(nb: Notebook) -> None:
    # The session does get them (it is the same user)...
    assert nb.probe()["env"]["HC_SECRET_TOKEN"] == SECRET
    # ...and a file holds them, readable by that user alone.
    state = nb.rt.rig.state_dir
    holders = subprocess.run(
        ["grep", "-rlF", SECRET, str(state), str(nb.rt.folder)], capture_output=True, text=True
    ).stdout.split()
    assert holders, "the session environment file should hold the kernel's variables"
    for f in holders:
        assert os.stat(f).st_mode & 0o077 == 0, f
    # Another local user finds the value nowhere it can read.
    ensure_user()
    res = subprocess.run(
        [
            "runuser",
            "-u",
            "hcuser",
            "--",
            "grep",
            "-rlFs",
            SECRET,
            str(state),
            str(nb.rt.folder),
            "/tmp",
            "/var/tmp",
            "/dev/shm",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    # 1: nothing found; 2: nothing found, and some places were closed to it (as they should).
    assert res.returncode in (1, 2) and res.stdout == "", res.stdout
    log = nb.rt.rig.handy("rt", "logs", "colab").stdout
    assert SECRET not in log


def test_up_again_refreshes_sessions(nb: Notebook) -> None:
    other = nb.workdir / "project"
    other.mkdir(exist_ok=True)
    nb.kernel.run(
        "import os\nos.environ['HC_MARK'] = 'refreshed'\nos.environ['HC_NEW'] = 'new'\n"
        f"os.chdir({str(other)!r})\n{nb.up_code}"
    ).check()
    try:
        out = nb.probe()
        assert out["env"]["HC_MARK"] == "refreshed"
        assert out["env"]["HC_NEW"] == "new"
        assert out["cwd"] == str(other)
    finally:
        nb.kernel.run(
            "os.environ['HC_MARK'] = 'notebook'\ndel os.environ['HC_NEW']\n"
            f"os.chdir({str(nb.workdir)!r})\n{nb.up_code}"
        ).check()
    out = nb.probe()
    assert "HC_NEW" not in out["env"] and out["cwd"] == str(nb.workdir)


def test_connection_block_renders(nb: Notebook) -> None:
    if nb.api == "seed":
        # The seed's API prints the block, as it always did, and returns it.
        assert "ssh colab" in nb.first_up.stdout
        block = nb.kernel.value("block")
        assert "ssh colab" in block and "vscode://vscode-remote/ssh-remote+colab" in block
        return
    shown = nb.kernel.run("rt").check().results
    assert len(shown) == 1
    html, text = shown[0]["text/html"], shown[0]["text/plain"]
    assert f'href="vscode://vscode-remote/ssh-remote+colab{nb.workdir}"' in html
    assert html.count(">copy</button>") >= 3
    assert f">{nb.python}</code>" in html  # PyCharm's interpreter: the kernel's
    # The paste line first, then `ssh colab`, each in its own <code> with a copy button.
    codes = re.findall(r'<div class="hc-cmd"[^>]*><code[^>]*>([^<]*)</code><button', html)
    line = nb.kernel.value("rt.connect_command")
    assert [unescape(c) for c in codes[:2]] == [line, "ssh colab"], codes
    assert "&#10004; Runtime &#x27;colab&#x27; is reachable</b> through the relay" in html
    assert "ssh colab" in text and "<" not in text.replace("<user>", "")
    printed = nb.kernel.run("print(rt)").check().stdout
    assert printed.strip() == text.strip()


def test_tunnel_outlives_interrupt_and_restart(nb: Notebook) -> None:
    cell = nb.kernel.interrupt_during("import time\ntime.sleep(60)", after=1.5)
    assert cell.ename == "KeyboardInterrupt"
    assert nb.ssh("echo", "after-interrupt").stdout == "after-interrupt\n"
    nb.kernel.restart()
    assert nb.kernel.value("__import__('os').getpid()") != 0
    assert nb.probe()["env"]["HC_MARK"] == "notebook"
    # The new kernel finds the runtime, reports it and can stop it.
    out = nb.kernel.run("import handy_colab\nprint(handy_colab.status())").check().stdout
    assert "ready" in out and "not healthy" not in out, out
    stopped = nb.kernel.value("handy_colab.stop()")
    assert stopped is True
    assert wait_until(lambda: nb.ssh("true", timeout=20).returncode != 0, 20)
    assert shutil.which("ssh")


# -- Colab, at the boundary: a fake google.colab in a real kernel ---------------------------

_FAKE_USERDATA = '''
"""Stand-in for google.colab.userdata (Google's module runs only on Colab): the same
names; the secrets come from a JSON file the test writes."""
import json, os


class SecretNotFoundError(Exception):
    pass


class NotebookAccessError(Exception):
    pass


def get(key):
    secrets = json.load(open(os.environ["HC_FAKE_SECRETS"]))
    if key not in secrets:
        raise SecretNotFoundError(f"Secret {key} does not exist.")
    return secrets[key]
'''


def _fake_colab(root: Path) -> Path:
    pkg = root / "google" / "colab"
    pkg.mkdir(parents=True)
    (root / "google" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "userdata.py").write_text(_FAKE_USERDATA)
    (pkg / "drive.py").write_text(
        "def mount(*a, **k):\n    raise AssertionError('no Drive folder was named')\n"
    )
    return root


def test_colab_keys_from_secrets_warning_once_and_packages(tmp_path: Path) -> None:
    """On "Colab" (its variables and a stand-in google.colab), ``up()`` with no folder takes
    the config and keys from Colab's secrets, warns once about the terms, installs the
    config's packages with progress and reports a failed one without losing the tunnel."""
    secrets_file = tmp_path / "secrets.json"
    extra = {
        "COLAB_RELEASE_TAG": "release-colab-hc-test",
        "PYTHONPATH": str(_fake_colab(tmp_path / "fake")),
        "HC_FAKE_SECRETS": str(secrets_file),
        # The failing package must fail here and now, not after a slow index lookup.
        "PIP_NO_INDEX": "1",
        "PIP_CONFIG_FILE": "/dev/null",
    }
    with kernel_in_runtime(tmp_path, "private", extra) as (rt, kernel, workdir, home):
        cfg = json.loads((rt.folder / "user_config.json").read_text())
        cfg["python_packages"] = ["pip", "hc-no-such-dist-3f9"]
        secret_values = {
            "HANDY_COLAB_CONFIG": json.dumps(cfg),
            "HANDY_COLAB_RELAY_KEY": (rt.folder / "relay_key").read_text(),
            "HANDY_COLAB_PUBLIC_KEYS": (rt.folder / "laptop.pub").read_text(),
        }
        secrets_file.write_text(json.dumps(secret_values))
        secrets_file.chmod(0o600)
        first = kernel.run("import handy_colab\nrt = handy_colab.up(server='embedded')").check()
        assert "Colab" in first.stderr and "free" in first.stderr, first.stderr
        assert "python package pip: already present" in first.stdout, first.stdout
        assert "hc-no-such-dist-3f9" in first.stdout and "FAILED" in first.stdout
        # The packages' progress: one widget bar over both (the step under way on it, not a
        # line each), and a line per result above.
        assert "installing..." not in first.stdout, first.stdout
        bars = [
            s
            for s in widget_states(first).values()
            if s[0].get("_model_name") == "FloatProgressModel"
        ]
        assert len(bars) == 1 and bars[0][0]["max"] == 2, bars
        assert [u["value"] for u in bars[0][1:] if "value" in u][-1] == 2, bars
        statuses = kernel.value("[(p.spec, p.status) for p in rt.packages]")
        assert statuses == [["pip", "present"], ["hc-no-such-dist-3f9", "failed"]]
        assert "Colab" in kernel.value("rt.platform.label")
        html = kernel.run("rt").check().results[0]["text/html"]
        # The failed package stands out: a red row with its reason (not twice in a warning).
        row = re.search(r"<tr[^>]*>.*?hc-no-such-dist-3f9.*?</tr>", html)
        assert row and "&#10006; failed" in row[0] and "No matching distribution" in row[0]
        assert "1 failed</b>" in html and "hc-warning" not in html
        again = kernel.run("rt = handy_colab.up(server='embedded', install=False)").check()
        assert "Colab" not in again.stderr, "the terms warning is shown once per kernel"

        dest = home / ".config" / "handy-colab" / "from-secrets"
        assert os.stat(dest).st_mode & 0o077 == 0
        assert os.stat(dest / "relay_key").st_mode & 0o077 == 0
        res = rt.connect(dest / "connections" / "colab.json")
        assert res.returncode == 0, res.stderr + res.stdout
        out = rt.ssh("pwd; echo $COLAB_RELEASE_TAG")
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == [str(workdir), "release-colab-hc-test"]


# -- docs/example.ipynb, top to bottom in a real kernel -------------------------------------


@contextlib.contextmanager
def example_in_kernel(tmp: Path) -> Iterator[tuple[Any, Runtime, Kernel, Path]]:
    """docs/example.ipynb (validated) and a public-mode kernel_in_runtime whose
    HANDY_COLAB_FOLDER, for the notebook's FOLDER cell, is the folder the rig writes:
    (notebook, runtime, kernel, workdir)."""
    import nbformat

    notebook = nbformat.read(REPO / "docs" / "example.ipynb", as_version=4)
    nbformat.validate(notebook)
    folder = tmp / "rig" / "drive" / "colab_data"  # make_runtime's layout
    with kernel_in_runtime(tmp, "public", {"HANDY_COLAB_FOLDER": str(folder)}) as (
        rt,
        kernel,
        workdir,
        _home,
    ):
        assert rt.folder == folder
        yield notebook, rt, kernel, workdir


def test_example_notebook_runs_top_to_bottom(tmp_path: Path) -> None:
    with example_in_kernel(tmp_path) as (notebook, rt, kernel, workdir):
        cells = [c.source for c in notebook.cells if c.cell_type == "code"]
        outputs = []
        for i, source in enumerate(cells):
            outputs.append(kernel.run(source).check())
            if "handy_colab.up(" in source and i == 2:
                assert "text/html" in outputs[-1].results[0]
                res = rt.connect()
                assert res.returncode == 0, res.stderr + res.stdout
                assert rt.ssh("pwd").stdout.strip() == str(workdir)
            if "MY_SETTING" in source:
                assert rt.ssh("echo $MY_SETTING").stdout.strip() == "on"
        status = outputs[3].results[0]["text/plain"]
        assert "ready" in status and "not healthy" not in status, status
        assert outputs[-1].results[0]["text/plain"] == "True"  # rt.stop() stopped it
        assert rt.ssh("true", timeout=20).returncode != 0
