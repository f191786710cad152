"""The command blocks of README.md and docs/*.md run as written, or say why they cannot.

Every ```bash (or sh, shell, console) block of these files has a marker on the line before
it (an HTML comment, invisible on GitHub): ``<!-- runnable: ENV -->`` runs it with
``bash -euo pipefail`` in ENV, ``<!-- shown: WHY -->`` says why it cannot run here (a
Colab cell, a VPS of yours, a command that runs until Ctrl-C) and, in WHY, which test runs
it instead. The marked blocks of one file run in order, in one HOME and one directory, so
a block may use what the one before it made: README.md is walked top to bottom, from the
install to ``ssh colab``. The environments, and the one thing a reader fills in (the line
the notebook showed), are in docs/testing.md.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.cfrig import PEERS_BIN, CloudflareStandIn
from tests.e2e.conftest import need
from tests.wheelkit import clean_env

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
MARKER = re.compile(r"^<!-- (?:runnable(?::\s*(?P<env>[a-z-]+))?|shown: (?P<why>\S.*\S)) -->$")
COMMAND_FENCE = re.compile(r"^```(?:bash|sh|shell|console)$")
FENCE = re.compile(r"^```(?:bash|sh|shell|console)?$")
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
# plain: this machine, the dev venv's handy-colab. laptop: this machine with nothing of
# ours installed but what the file's blocks install, a copy of the repository in
# ./handy-colab. rig-runtime: the NAT rig's runtime, a fresh Python standing in for the
# notebook's, the folders the laptop made copied over (the upload). rig-laptop: the rig's
# laptop, with what "laptop" installed. cloudflared-rig: the rig's runtime, the dev venv.
ENVIRONMENTS = ("plain", "laptop", "rig-runtime", "rig-laptop", "cloudflared-rig")
RIG_ENVS = ("rig-runtime", "rig-laptop", "cloudflared-rig")
# The line a notebook shows; a reader puts theirs where a block says 'hc1:...'.
PLACEHOLDER = "'hc1:...'"
SHOWN_LINE = re.compile(r"handy-colab connect '(hc1:[A-Za-z0-9_-]+)'")


@dataclass(frozen=True)
class Block:
    file: str  # relative to the repository
    index: int  # among the file's runnable blocks
    line: int  # the block's first line, 1-based
    env: str
    text: str


def blocks_of(path: Path) -> list[Block]:
    """The file's runnable blocks; an unmarked command block, or a marker not before a
    fence, is an error."""
    lines = path.read_text().splitlines()
    name = str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)
    found = []
    for i, line in enumerate(lines):
        where = f"{name}:{i + 1}"
        if COMMAND_FENCE.match(line):
            before = lines[i - 1] if i > 0 else ""
            assert MARKER.match(before), (
                f"{name}:{i + 1}: a command block needs <!-- runnable: ENV --> or "
                "<!-- shown: WHY --> on the line before it (docs/testing.md)"
            )
        m = MARKER.match(line.rstrip())  # at column 0: an indented one is an example
        if m is None:
            continue
        assert i + 1 < len(lines) and FENCE.match(lines[i + 1]), (
            f"{where}: the marker must be right before a ```bash (or ```) fence"
        )
        env = m.group("env") or "plain"
        assert m.group("why") or env in ENVIRONMENTS, f"{where}: unknown environment {env!r}"
        end = next((j for j in range(i + 2, len(lines)) if lines[j] == "```"), None)
        assert end is not None, f"{where}: the block is never closed"
        if m.group("why"):
            continue
        text = "\n".join(lines[i + 2 : end]) + "\n"
        found.append(Block(name, len(found), i + 3, env, text))
    return found


FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCKS = [b for path in FILES for b in blocks_of(path)]


@dataclass
class FileRun:
    """One file's blocks so far: its HOMEs and directories, its rig, the first failure."""

    base: Path
    failed: str | None = None
    rig: Any = None
    cf: Any = None
    shown: list[str] = field(default_factory=list)  # hc1: lines earlier blocks printed
    runtime_env: dict[str, str] | None = None  # the env that can stop what runs there

    @property
    def home(self) -> Path:
        return self.base / "home"

    @property
    def cwd(self) -> Path:
        return self.base / "work"

    def cwd_for(self, kind: str) -> Path:
        return self.base / "runtime-work" if kind == "rig-runtime" else self.cwd

    def env(self, kind: str) -> dict[str, str]:
        wrappers = self.base / "bin"
        local_bin = self.home / ".local" / "bin"
        base = {
            "HOME": str(self.home),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "TERM": "dumb",
        }
        if kind == "plain":
            return {**base, "PATH": f"{wrappers}:{VENV_BIN}:{SYSTEM_PATH}"}
        if kind == "laptop":
            # The machine's pip settings (its index, its wheel cache) as a user's has them.
            pip = {k: v for k, v in os.environ.items() if k.startswith("PIP_")}
            return {**pip, **base, "PATH": f"{wrappers}:{local_bin}:{SYSTEM_PATH}"}
        rig = self.cf.env() if kind == "rig-laptop" else self.cf.defaults_env()
        env = clean_env(VENV_BIN, rig)  # its PATH is set below, per kind
        if kind == "cloudflared-rig":
            return {**env, **base, "PATH": f"{wrappers}:{VENV_BIN}:{rig['PATH']}"}
        if kind == "rig-laptop":
            return {**env, **base, "PATH": f"{wrappers}:{local_bin}:{SYSTEM_PATH}"}
        # rig-runtime: its own HOME; the notebook's Python first; pip offline (no index
        # behind the rig's NAT), from a wheelhouse of our dependencies.
        nb_bin = self.base / "notebook-python" / "bin"
        peers = [str(self.cf.defaults_bin()), str(PEERS_BIN)]
        return {
            **env,
            **base,
            "HOME": str(self.base / "runtime-home"),
            "PATH": ":".join([str(nb_bin), *peers, SYSTEM_PATH]),
            "PIP_NO_INDEX": "1",
            "PIP_FIND_LINKS": str(self.base / "wheelhouse"),
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        }


@pytest.fixture(scope="module")
def runs() -> Iterator[dict[str, FileRun]]:
    made: dict[str, FileRun] = {}
    yield made
    problems = []
    for run in made.values():
        if run.rig is None:
            continue
        # Whatever a block started on the runtime is stopped; nothing may be left.
        if run.runtime_env is not None:
            run.rig.run("rt", ["handy-colab", "down"], env=run.runtime_env, timeout=120)
        left = set(run.rig.ns_pids("rt")) - run.cf.helper_pids
        leftovers = run.rig.close()
        if left or leftovers:
            problems.append(f"{run.base.name}: left running: {left or leftovers}")
    assert problems == []


def _ssh_wrappers(bin_dir: Path) -> None:
    # OpenSSH finds ~ in the account's passwd entry, not $HOME: with the temporary HOME,
    # the ssh on PATH is told that HOME's ~/.ssh/config and default identities.
    bin_dir.mkdir()
    for name, prog in (("ssh", "/usr/bin/ssh"), ("scp", "/usr/bin/scp")):
        wrapper = bin_dir / name
        wrapper.write_text(
            "#!/bin/sh\n"
            "for k in id_rsa id_ecdsa id_ed25519; do\n"
            '    [ -f "$HOME/.ssh/$k" ] && set -- -i "$HOME/.ssh/$k" "$@"\n'
            "done\n"
            f'exec {prog} -F "$HOME/.ssh/config" "$@"\n'
        )
        wrapper.chmod(0o755)
    # rsync runs ssh from PATH: the wrapper above. VS Code cannot run here: its `code`
    # CLI is a stand-in that does what VS Code's Remote-SSH does first, log in to the host
    # and find the folder, and fails as VS Code would when it cannot.
    code = bin_dir / "code"
    code.write_text(
        "#!/bin/sh\n"
        '[ "$1" = --remote ] || { echo "code stand-in: expected --remote" >&2; exit 2; }\n'
        'host=${2#ssh-remote+}; [ "$host" != "$2" ] || { echo "not ssh-remote+" >&2; exit 2; }\n'
        'exec ssh "$host" test -d "$3"\n'
    )
    code.chmod(0o755)


def _file_run(runs: dict[str, FileRun], block: Block, tmp: Path) -> FileRun:
    if block.file not in runs:
        base = tmp / re.sub(r"\W", "_", block.file)
        for sub in ("home", "work", "runtime-home", "runtime-work"):
            (base / sub).mkdir(parents=True)
        _ssh_wrappers(base / "bin")
        runs[block.file] = FileRun(base)
    run = runs[block.file]
    if block.env == "laptop" and not (run.cwd / "handy-colab").exists():
        from tests.wheelkit import _NOT_SOURCE

        need([] if shutil.which("pipx") else ["pipx"], "the installer README.md runs")
        # "a copy of this repository": what a clone or the source archive holds.
        shutil.copytree(REPO, run.cwd / "handy-colab", ignore=_NOT_SOURCE)
    if block.env in RIG_ENVS and run.rig is None:
        from tests.e2e.cfhelpers import need_peers
        from tests.rig import Rig

        need_peers()
        run.rig = Rig(run.base / "rig")
        try:
            run.cf = CloudflareStandIn(run.rig)
        except BaseException:
            run.rig.close()
            raise
    if block.env == "rig-runtime" and not (run.base / "notebook-python").exists():
        from tests.wheelkit import run as run_tool
        from tests.wheelkit import wheelhouse

        wheelhouse(run.base)
        res = run_tool([sys.executable, "-m", "venv", str(run.base / "notebook-python")], 120)
        assert res.returncode == 0, res.stderr
    return run


def _upload(run: FileRun) -> None:
    """What the laptop made in its directory reaches the runtime's, as an upload to Drive
    would bring it (the repository copy stays behind)."""
    for item in run.cwd.iterdir():
        if item.name == "handy-colab":
            continue
        dest = run.cwd_for("rig-runtime") / item.name
        if item.is_dir():
            shutil.copytree(item, dest, dirs_exist_ok=True)
        else:
            shutil.copy2(item, dest)


def _as_filled_in(block: Block, run: FileRun) -> str:
    """The block as a reader runs it: the placeholder replaced by the line shown to them."""
    if PLACEHOLDER not in block.text:
        return block.text
    assert run.shown, f"{block.file}:{block.line}: {PLACEHOLDER}, but no block showed a line"
    return block.text.replace(PLACEHOLDER, f"'{run.shown[-1]}'")


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: f"{b.file}#{b.index}")
def test_marked_block_runs_as_written(
    block: Block, runs: dict[str, FileRun], tmp_path_factory: pytest.TempPathFactory
) -> None:
    assert shutil.which("handy-colab", path=str(VENV_BIN)), f"no handy-colab in {VENV_BIN}"
    run = _file_run(runs, block, tmp_path_factory.getbasetemp() / "readme-blocks")
    assert run.failed is None, f"{block.file}: depends on {run.failed}, which failed"
    text = _as_filled_in(block, run)
    argv = ["bash", "-euo", "pipefail", "-c", text]
    env = run.env(block.env)
    cwd = run.cwd_for(block.env)
    if block.env == "rig-runtime":
        _upload(run)
    if block.env in ("rig-runtime", "cloudflared-rig"):
        run.runtime_env = env  # what can stop what the block started there
    if block.env in RIG_ENVS:
        role = "laptop" if block.env == "rig-laptop" else "rt"
        cmd = ["env", "-C", str(cwd), *argv]
        res = run.rig.run(role, cmd, env=env, timeout=300, input="")
    else:
        res = subprocess.run(
            argv,
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
    run.shown += SHOWN_LINE.findall(res.stdout)
    if res.returncode != 0:
        run.failed = f"block #{block.index} (line {block.line})"
    assert res.returncode == 0, (
        f"{block.file}:{block.line}: exit {res.returncode}\n--- block\n{text}"
        f"--- stdout\n{res.stdout}\n--- stderr\n{res.stderr}"
    )


def test_the_collector_finds_blocks_and_rejects_bad_markers(tmp_path: Path) -> None:
    # The check can fail: a marker not before a fence, an unknown environment, or a command
    # block with no marker at all is an error.
    assert BLOCKS, "no <!-- runnable --> block anywhere"
    page = tmp_path / "probe.md"
    page.write_text("<!-- runnable -->\n```bash\necho hi\n```\n<!-- runnable: x -->\n```\n")
    with pytest.raises(AssertionError, match="unknown environment"):
        blocks_of(page)
    page.write_text("<!-- runnable -->\n\n```bash\necho hi\n```\n")
    with pytest.raises(AssertionError, match="right before"):
        blocks_of(page)
    page.write_text("Run this:\n```bash\necho hi\n```\n")
    with pytest.raises(AssertionError, match=r"probe\.md:2: a command block needs"):
        blocks_of(page)
    page.write_text("<!-- shown: -->\n```bash\necho hi\n```\n")
    with pytest.raises(AssertionError, match="a command block needs"):
        blocks_of(page)
    page.write_text(
        "x\n<!-- runnable: rig-laptop -->\n```sh\na\nb\n```\n```\nc\n```\n"
        "<!-- shown: a Colab cell; test_x runs it -->\n```bash\nd\n```\n```python\ne\n```\n"
    )
    (only,) = blocks_of(page)
    assert (only.env, only.text, only.line) == ("rig-laptop", "a\nb\n", 4)


def test_the_placeholder_is_filled_with_the_line_shown(tmp_path: Path) -> None:
    run = FileRun(tmp_path)
    block = Block("x.md", 0, 1, "rig-laptop", f"handy-colab connect {PLACEHOLDER}\nssh colab\n")
    with pytest.raises(AssertionError, match="no block showed a line"):
        _as_filled_in(block, run)
    run.shown += SHOWN_LINE.findall("  handy-colab connect 'hc1:eJw-_9'\n")
    assert _as_filled_in(block, run) == "handy-colab connect 'hc1:eJw-_9'\nssh colab\n"
