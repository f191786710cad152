"""What a notebook cell shows while ``handy_colab.up()`` downloads cloudflared: one bar that
updates in place, not a line per step.

A real ipykernel runs ``up()`` on a config that names a local mirror (a real HTTP server on
loopback, serving slowly so the bar has sizes to show). The asset is not the pinned build,
so after the download ``up`` refuses it (digest mismatch) as it must: what is checked is
what the cell showed while it came. With ipywidgets (as on Colab): tqdm's widget, one
progress model whose value is updated over its comm. Without ipywidgets (hidden from the
kernel): one text display, updated in place with ``update_display_data``.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from handy_colab.binaries import platform_key
from handy_colab.tunnels.cloudflared import CLOUDFLARED
from tests import webserver
from tests.kernel import CellResult, Kernel

SIZE = 4 * 1024 * 1024 + 77


@contextlib.contextmanager
def _mirror(root: Path) -> Iterator[str]:
    asset = CLOUDFLARED.assets[platform_key()].filename
    (root / CLOUDFLARED.version).mkdir(parents=True)
    (root / CLOUDFLARED.version / asset).write_bytes(os.urandom(SIZE))
    with webserver.serve(root, slow=True) as base:
        yield base


def _up_in_a_kernel(tmp: Path, hide_widgets: bool) -> CellResult:
    folder = tmp / "cfg"
    folder.mkdir()
    key = tmp / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    (folder / "laptop.pub").write_text(Path(f"{key}.pub").read_text())
    (tmp / "home").mkdir()
    env = {
        # No cloudflared on PATH: only the download can provide it.
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(tmp / "home"),
        "LANG": "C.UTF-8",
        "HANDY_COLAB_STATE_DIR": str(tmp / "state"),
        "HANDY_COLAB_CACHE_DIR": str(tmp / "cache"),
    }
    if hide_widgets:
        shadow = tmp / "shadow" / "ipywidgets"
        shadow.mkdir(parents=True)
        (shadow / "__init__.py").write_text("raise ImportError('ipywidgets hidden by the test')\n")
        env["PYTHONPATH"] = str(tmp / "shadow")
    with _mirror(tmp / "www") as base:
        (folder / "user_config.json").write_text(
            json.dumps({"cloudflared": {"download_url": base}})
        )
        kernel = Kernel(tmp / "kernel", None, env, tmp)
        try:
            res = kernel.run(f"import handy_colab\nhandy_colab.up({str(folder)!r})", timeout=120)
        finally:
            kernel.shutdown()
    # The download came whole, then was refused: the asset is not the pinned build.
    assert res.status == "error" and res.ename == "BinaryError", (res.ename, res.evalue)
    assert "does not match the digest pinned" in res.evalue
    # No line per step: nothing about the download went to the cell's text output.
    assert "downloading cloudflared" not in res.stdout + res.stderr, res.stdout + res.stderr
    return res


def widget_states(res: CellResult) -> dict[str, list[dict[str, Any]]]:
    """comm id -> its states in order (the opening one, then each update)."""
    states: dict[str, list[dict[str, Any]]] = {}
    for kind, content in res.messages:
        if kind == "comm_open" and content.get("target_name") == "jupyter.widget":
            states[content["comm_id"]] = [content["data"]["state"]]
        elif kind == "comm_msg" and content["data"].get("method") == "update":
            states.setdefault(content["comm_id"], []).append(content["data"]["state"])
    return states


def test_with_ipywidgets_one_widget_bar_is_updated(tmp_path: Path) -> None:
    res = _up_in_a_kernel(tmp_path, hide_widgets=False)
    states = widget_states(res)
    bars = [s for s in states.values() if s[0].get("_model_name") == "FloatProgressModel"]
    assert len(bars) == 1, states.keys()
    opened, *updates = bars[0]
    assert opened["max"] == SIZE
    values = [u["value"] for u in updates if "value" in u]
    # Several sizes on the same bar, growing to the whole asset.
    assert len(values) >= 3 and values == sorted(values) and values[-1] == SIZE, values
    labels = [
        u["value"]
        for s in states.values()
        if s[0].get("_model_name") == "HTMLModel"
        for u in s
        if "value" in u
    ]
    assert any("downloading cloudflared" in v for v in labels), labels
    assert [k for k, _ in res.messages].count("display_data") == 1  # the bar, shown once


def test_without_ipywidgets_one_line_is_updated_in_place(tmp_path: Path) -> None:
    res = _up_in_a_kernel(tmp_path, hide_widgets=True)
    assert not widget_states(res)
    shown = [c for k, c in res.messages if k == "display_data"]
    updates = [c for k, c in res.messages if k == "update_display_data"]
    assert len(shown) == 1, shown
    display_id = shown[0]["transient"]["display_id"]
    assert all(u["transient"]["display_id"] == display_id for u in updates)
    texts = [shown[0]["data"]["text/plain"]] + [u["data"]["text/plain"] for u in updates]
    assert all(t.startswith("downloading cloudflared:") and "\n" not in t for t in texts), texts
    assert len(texts) >= 3 and "100%|" in texts[-1] and "4.00M/4.00M" in texts[-1], texts
