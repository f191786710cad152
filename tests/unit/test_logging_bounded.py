"""The supervisor's log is bounded: a tunnel that flaps for days must not fill the disk."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from handy_colab.state import RuntimeDir
from handy_colab.supervisor_main import setup_logging


def test_supervisor_log_rotates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANDY_COLAB_STATE_DIR", str(tmp_path))
    rd = RuntimeDir.for_name("colab").ensure()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging(rd)
        log = logging.getLogger("handy_colab.test")
        line = "tunnel: debug1: channel 3: free: 127.0.0.1, nchannels 4 " + "x" * 100
        for _ in range(40_000):  # ~6 MB of log lines
            log.info(line)
        for h in root.handlers:
            h.flush()
        files = sorted(p for p in rd.path.iterdir() if p.name.startswith("supervisor.log"))
        total = sum(p.stat().st_size for p in files)
        assert [p.name for p in files] == ["supervisor.log", "supervisor.log.1", "supervisor.log.2"]
        assert total <= 3 * 1_000_000 + 10_000
        assert line in rd.log_file.read_text().splitlines()[-1]
    finally:
        for h in root.handlers[:]:
            if h not in saved[0]:
                root.removeHandler(h)
                h.close()
        root.setLevel(saved[1])
