"""The command blocks of README.md and docs/*.md that say they run, run as written.

A fenced block right after the line ``<!-- runnable -->`` (invisible on GitHub) is run with
``bash -euo pipefail`` in a temporary HOME and working directory, the dev venv's
``handy-colab`` first on PATH. ``<!-- runnable: cloudflared-rig -->`` runs it instead in the
NAT rig's runtime namespace with the cloudflared stand-in edge (tests/cfrig.py) reachable the
way Cloudflare is for a user: the real cloudflared, no config needed, so a block may `up` a
folder holding only a public key and `connect` and `ssh` to it. The marked blocks of one file
run in order, in one HOME and directory: a block may use what the one before it made. The
convention is in docs/testing.md.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
MARKER = re.compile(r"^<!-- runnable(?::\s*(?P<env>[a-z-]+))? -->$")
FENCE = re.compile(r"^```(?:bash|sh|shell)?$")
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
ENVIRONMENTS = ("plain", "cloudflared-rig")


@dataclass(frozen=True)
class Block:
    file: str  # relative to the repository
    index: int  # among the file's marked blocks
    line: int  # the block's first line, 1-based
    env: str
    text: str


def blocks_of(path: Path) -> list[Block]:
    lines = path.read_text().splitlines()
    name = str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)
    found = []
    for i, line in enumerate(lines):
        m = MARKER.match(line.rstrip())  # at column 0: an indented one is an example
        if m is None:
            continue
        env = m.group("env") or "plain"
        where = f"{name}:{i + 1}"
        assert env in ENVIRONMENTS, f"{where}: unknown environment {env!r}"
        assert i + 1 < len(lines) and FENCE.match(lines[i + 1]), (
            f"{where}: the marker must be right before a ```bash (or ```) fence"
        )
        end = next((j for j in range(i + 2, len(lines)) if lines[j] == "```"), None)
        assert end is not None, f"{where}: the block is never closed"
        text = "\n".join(lines[i + 2 : end]) + "\n"
        found.append(Block(name, len(found), i + 3, env, text))
    return found


FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCKS = [b for path in FILES for b in blocks_of(path)]


@dataclass
class FileRun:
    """One file's blocks so far: its HOME and directory, its rig, the first failure."""

    home: Path
    cwd: Path
    failed: str | None = None
    rig: Any = None
    cf: Any = None
    rig_env: dict[str, str] = field(default_factory=dict)

    def env(self, kind: str) -> dict[str, str]:
        base = {
            "HOME": str(self.home),
            "PATH": f"{self.home.parent / 'bin'}:{VENV_BIN}:{SYSTEM_PATH}",
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "TERM": "dumb",
        }
        if kind == "plain":
            return base
        env = dict(self.rig_env)
        env.update(base)
        env["PATH"] = f"{self.home.parent / 'bin'}:{VENV_BIN}:{self.rig_env['PATH']}"
        return env


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, FileRun]]:
    made: dict[str, FileRun] = {}
    yield made
    problems = []
    for run in made.values():
        if run.rig is None:
            continue
        # Whatever a block started on the runtime is stopped; nothing may be left.
        run.rig.run("rt", ["handy-colab", "down"], env=run.env("cloudflared-rig"), timeout=120)
        left = set(run.rig.ns_pids("rt")) - run.cf.helper_pids
        leftovers = run.rig.close()
        if left or leftovers:
            problems.append(f"left running: {left or leftovers}")
    assert problems == []


def _file_run(runs: dict[str, FileRun], block: Block, tmp: Path) -> FileRun:
    if block.file not in runs:
        base = tmp / re.sub(r"\W", "_", block.file)
        (base / "home").mkdir(parents=True)
        (base / "work").mkdir()
        # OpenSSH finds ~ in the account's passwd entry, not $HOME: with the temporary HOME,
        # the ssh on PATH is told that HOME's ~/.ssh/config and default identities.
        (base / "bin").mkdir()
        wrapper = base / "bin" / "ssh"
        wrapper.write_text(
            "#!/bin/sh\n"
            "for k in id_rsa id_ecdsa id_ed25519; do\n"
            '    [ -f "$HOME/.ssh/$k" ] && set -- -i "$HOME/.ssh/$k" "$@"\n'
            "done\n"
            'exec /usr/bin/ssh -F "$HOME/.ssh/config" "$@"\n'
        )
        wrapper.chmod(0o755)
        runs[block.file] = FileRun(base / "home", base / "work")
    run = runs[block.file]
    if block.env == "cloudflared-rig" and run.rig is None:
        from tests.cfrig import CloudflareStandIn
        from tests.e2e.cfhelpers import need_peers
        from tests.rig import Rig

        need_peers()
        run.rig = Rig(run.home.parent / "rig")
        try:
            run.cf = CloudflareStandIn(run.rig)
            run.rig_env = run.cf.defaults_env()
        except BaseException:
            run.rig.close()
            raise
    return run


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: f"{b.file}#{b.index}")
def test_marked_block_runs_as_written(
    block: Block, runs: dict[str, FileRun], tmp_path_factory: pytest.TempPathFactory
) -> None:
    assert shutil.which("handy-colab", path=str(VENV_BIN)), f"no handy-colab in {VENV_BIN}"
    run = _file_run(runs, block, tmp_path_factory.getbasetemp() / "readme-blocks")
    assert run.failed is None, f"{block.file}: depends on {run.failed}, which failed"
    argv = ["bash", "-euo", "pipefail", "-c", block.text]
    env = run.env(block.env)
    if block.env == "cloudflared-rig":
        res = run.rig.run("rt", ["env", "-C", str(run.cwd), *argv], env=env, timeout=240)
    else:
        res = subprocess.run(
            argv, env=env, cwd=run.cwd, capture_output=True, text=True, timeout=240
        )
    if res.returncode != 0:
        run.failed = f"block #{block.index} (line {block.line})"
    assert res.returncode == 0, (
        f"{block.file}:{block.line}: exit {res.returncode}\n--- block\n{block.text}"
        f"--- stdout\n{res.stdout}\n--- stderr\n{res.stderr}"
    )


def test_the_collector_finds_blocks_and_rejects_bad_markers(tmp_path: Path) -> None:
    # The check can fail: a marker not before a fence, or an unknown environment, is an error.
    assert BLOCKS, "no <!-- runnable --> block anywhere"
    page = tmp_path / "probe.md"
    if True:
        page.write_text("<!-- runnable -->\n```bash\necho hi\n```\n<!-- runnable: x -->\n```\n")
        with pytest.raises(AssertionError, match="unknown environment"):
            blocks_of(page)
        page.write_text("<!-- runnable -->\n\n```bash\necho hi\n```\n")
        with pytest.raises(AssertionError, match="right before"):
            blocks_of(page)
        page.write_text("x\n<!-- runnable: cloudflared-rig -->\n```sh\na\nb\n```\n```\nc\n```\n")
        (only,) = blocks_of(page)
        assert (only.env, only.text, only.line) == ("cloudflared-rig", "a\nb\n", 4)
