"""What `up` shows while it downloads and installs, in a log and on a terminal.

A child process runs a real download (binaries.Installer from a local HTTP server, digest
checked) and a package bar through the reporter the CLI picks (progress_view.terminal_reporter
on its stdout): once with stdout a pipe (a log, CI: whole lines, no carriage return), once
with stdout a real pty (a tqdm bar redrawn in place), whose screen pyte renders as a person
would see it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pyte

from handy_colab.progress import LineReporter, QuietReporter, as_reporter
from tests import webserver

SIZE = 6 * 1024 * 1024 + 123

CHILD = r"""
import sys
import termios
from pathlib import Path
from handy_colab.binaries import Asset, BinarySpec, Installer, platform_key
from handy_colab.progress import bytes_bar
from handy_colab.progress_view import terminal_reporter

base, digest, cache = sys.argv[1:4]
spec = BinarySpec("hcfake", "1.0.0", "https://unused.invalid",
                  {platform_key(): Asset("hcfake", digest)}, "HC_TEST_UNUSED", "hcfake")
rep = terminal_reporter(sys.stdout)
rep.say("before")
with bytes_bar(rep, "downloading hcfake") as report:
    Installer(spec, base_url=base, cache=Path(cache)).resolve(report)
# The cache has it now: a second resolve shows no bar at all.
with bytes_bar(rep, "downloading again") as report:
    Installer(spec, base_url=base, cache=Path(cache)).resolve(report)
bar = rep.bar("extra packages", 2, "pkg")
bar.step("python package alpha: installing...")
rep.say("python package alpha: installed (1.0)")
bar.update(1)
bar.step("os package beta: installing...")
rep.say("os package beta: installed (2.0)")
bar.update(2)
bar.close()
rep.say("after")
"""


@contextlib.contextmanager
def _release(tmp: Path) -> Iterator[tuple[str, str]]:
    """(base URL, sha256) of a fake release asset served on loopback."""
    data = os.urandom(SIZE)
    (tmp / "www" / "1.0.0").mkdir(parents=True)
    (tmp / "www" / "1.0.0" / "hcfake").write_bytes(data)
    with webserver.serve(tmp / "www", slow=True) as base:
        yield base, hashlib.sha256(data).hexdigest()


def _argv(tmp: Path, base: str, digest: str) -> list[str]:
    return [sys.executable, "-c", CHILD, base, digest, str(tmp / "cache")]


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": "/usr/bin:/bin", "TERM": "xterm", "COLUMNS": "100"}


def test_in_a_log_whole_lines_and_no_carriage_return(tmp_path: Path) -> None:
    with _release(tmp_path) as (base, digest):
        res = subprocess.run(
            _argv(tmp_path, base, digest), capture_output=True, text=True, env=_env(), timeout=60
        )
    assert res.returncode == 0, res.stderr
    assert "\r" not in res.stdout and "\x1b" not in res.stdout and res.stderr == ""
    lines = res.stdout.splitlines()
    tenths = [ln for ln in lines if ln.startswith("downloading hcfake: ")]
    shape = re.compile(r"^downloading hcfake: (\d+)% \(\d+ of 6 MB\)$")
    percents = [int(m.group(1)) for ln in tenths if (m := shape.match(ln))]
    assert len(percents) == len(tenths) and percents == sorted(set(percents)), tenths
    assert tenths[-1] == "downloading hcfake: 100% (6 of 6 MB)"
    # At most one line per tenth: a log stays short however big the download.
    assert 2 <= len(tenths) <= 11
    assert not any("downloading again" in ln for ln in lines)
    rest = [ln for ln in lines if not ln.startswith("downloading hcfake")]
    assert rest == [
        "before",
        "python package alpha: installing...",
        "python package alpha: installed (1.0)",
        "os package beta: installing...",
        "os package beta: installed (2.0)",
        "after",
    ]


def _run_on_pty(argv: list[str], env: dict[str, str]) -> tuple[int, bytes]:
    primary, secondary = pty.openpty()
    os.set_blocking(primary, False)
    # A terminal 100 columns wide, as the screen below.
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    proc = subprocess.Popen(argv, stdin=secondary, stdout=secondary, stderr=secondary, env=env)
    os.close(secondary)
    out = b""
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(primary, 65536)
                except OSError:
                    break  # the child closed the terminal
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        return proc.wait(10), out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(primary)


def test_on_a_terminal_a_bar_redrawn_in_place(tmp_path: Path) -> None:
    with _release(tmp_path) as (base, digest):
        code, raw = _run_on_pty(_argv(tmp_path, base, digest), _env())
    text = raw.decode()
    assert code == 0, text
    # Redrawn in place: carriage returns, and the download's sizes growing on one line.
    assert text.count("\r") >= 4, text
    assert "downloading hcfake: 0%" not in text  # no log lines on a terminal
    screen = pyte.Screen(100, 30)
    stream = pyte.ByteStream(screen)
    stream.feed(raw)  # the pty turned each "\n" into "\r\n", as a terminal shows it
    shown = [ln.rstrip() for ln in screen.display if ln.strip()]
    # What the person sees at the end: each line once, the bars finished, in order.
    assert shown[0] == "before", shown
    download = [ln for ln in shown if ln.startswith("downloading hcfake:")]
    assert len(download) == 1 and "100%|" in download[0] and "6.00M/6.00M" in download[0], shown
    assert shown.index(download[0]) == 1
    assert shown[2:4] == [
        "python package alpha: installed (1.0)",
        "os package beta: installed (2.0)",
    ], shown
    packages = [ln for ln in shown if ln.startswith("extra packages:")]
    assert len(packages) == 1 and "100%|" in packages[0] and "2/2" in packages[0], shown
    assert "os package beta: installing..." in packages[0]  # the last step, on the bar
    assert shown[-1] == "after" and len(shown) == 6, shown
    assert not any("downloading again" in ln for ln in shown)


def test_progress_argument_forms() -> None:
    said: list[str] = []
    assert isinstance(as_reporter(None), QuietReporter)
    rep = as_reporter(said.append)
    assert isinstance(rep, LineReporter) and as_reporter(rep) is rep
    bar = rep.bar("downloading x", None, "B")
    for mb in (0, 5, 12, 25):
        bar.update(mb * 1_000_000)
    assert said == ["downloading x: 0 MB", "downloading x: 12 MB", "downloading x: 25 MB"]
