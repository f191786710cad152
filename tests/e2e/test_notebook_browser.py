"""The notebook block in a real browser, from a real kernel behind the NAT, to a real login.

A real ipykernel in the rig's runtime namespace runs ``handy_colab.up()`` (embedded server,
relay route in private mode, one extra package present and one failing). The HTML the kernel
returned for ``rt`` and ``handy_colab.status()`` is opened in headless Debian chromium,
driven by playwright-core (tests/browser/check_block.mjs): the first copy button must put
exactly the connect line on the clipboard; where the clipboard is refused (a
Permissions-Policy), missing (not a secure context) or not delegated (a sandboxed iframe,
as Colab renders outputs) it must select exactly that line, and with no script at all one
click on the line must select all of it. The line read back from the
clipboard is then run in a shell on the laptop side of the NAT, and ``ssh colab`` must log in.

HANDY_COLAB_UPDATE_SCREENSHOTS=1 copies the screenshots into docs/images/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tests.e2e.conftest import Runtime, need
from tests.e2e.test_notebook import example_in_kernel, kernel_in_runtime
from tests.kernel import CellResult
from tests.rig import REPO

BROWSER_DIR = REPO / "tests" / "browser"
CHROMIUM = os.environ.get("HC_CHROMIUM", "/usr/bin/chromium")
PNG = b"\x89PNG\r\n\x1a\n"
FALLBACK_WORDS = "selected: press Ctrl+C / Cmd+C"
FAILING = "hc-no-such-dist-3f9"


def browser_missing() -> list[str]:
    missing = [] if os.access(CHROMIUM, os.X_OK) else [f"{CHROMIUM} (apt-get install chromium)"]
    if not shutil.which("node"):
        missing.append("node (apt-get install nodejs npm)")
    if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
        missing.append("tests/browser/node_modules (npm ci in tests/browser)")
    return missing


def look_in_browser(payload: dict[str, Any], work: Path) -> dict[str, Any]:
    """Run check_block.mjs on ``payload`` (see its header) and return what it saw."""
    work.mkdir()
    (work / "in.json").write_text(json.dumps(payload))
    shots = work / "shots"
    shots.mkdir()
    res = subprocess.run(
        ["node", str(BROWSER_DIR / "check_block.mjs"), "in.json", "out.json", str(shots)],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=180,
        env=dict(os.environ, HC_CHROMIUM=CHROMIUM),
    )
    assert res.returncode == 0, res.stdout + res.stderr
    seen: dict[str, Any] = json.loads((work / "out.json").read_text())
    seen["shots"] = shots
    return seen


def luminance(css: str) -> float:
    """0 (black) to 1 (white) for a computed ``rgb(...)``/``rgba(...)`` colour."""
    r, g, b = (int(float(v)) for v in re.findall(r"[\d.]+", css)[:3])
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255


def assert_readable(looks: dict[str, Any], *, dark: bool) -> None:
    """Text light on a dark theme, dark on a light one: none left at a fixed colour."""
    for colour in looks["textColours"]:
        assert (luminance(colour) > 0.6) if dark else (luminance(colour) < 0.4), looks


def paste_and_log_in(rt: Runtime, pasted: str, workdir: Path) -> None:
    """The copied line, pasted into a shell on the laptop side of the NAT (plus where the
    rig keeps the laptop's key and config), then a login that lands in the notebook's
    directory."""
    env = rt.rig.env()
    env["PATH"] = f"{Path(shutil.which('handy-colab') or '').parent}:{env['PATH']}"
    opts = (
        f" --identity {rt.laptop_key} --ssh-config {rt.ssh_config} --known-hosts {rt.known_hosts}"
    )
    res = rt.rig.run("laptop", ["bash", "-c", pasted + opts], env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    login = rt.ssh("pwd")
    assert login.returncode == 0, login.stderr
    assert login.stdout.strip() == str(workdir)


def test_copy_button_in_chromium_then_the_pasted_line_logs_in(tmp_path: Path) -> None:
    need(browser_missing(), "the browser test's prerequisites (scripts/setup.sh test)")
    extra = {"PIP_NO_INDEX": "1", "PIP_CONFIG_FILE": "/dev/null"}  # fail fast, offline
    with kernel_in_runtime(tmp_path, "private", extra) as (rt, kernel, workdir, _home):
        cfg_file = rt.folder / "user_config.json"
        cfg = json.loads(cfg_file.read_text())
        cfg["python_packages"] = ["pip", FAILING]
        cfg_file.write_text(json.dumps(cfg))
        kernel.run(
            f"import handy_colab\nrt = handy_colab.up({str(rt.folder)!r}, server='embedded')"
        ).check()
        line = kernel.value("rt.connect_command")
        assert line.startswith("handy-colab connect 'hc1:")
        block = kernel.run("rt").check().results[0]
        status = kernel.run("handy_colab.status()").check().results[0]
        html = block["text/html"]
        assert "&#10004; Runtime &#x27;colab&#x27; is reachable</b>" in html
        assert "&#10006; failed" in html and FAILING in html
        assert "is healthy</b>" in status["text/html"]

        seen = look_in_browser(
            {"runtime_html": html, "status_html": status["text/html"]}, tmp_path / "browser"
        )
        cases = seen["cases"]
        # (a) granted: the first button is the paste line, and it lands on the clipboard.
        granted = cases["granted"]
        assert granted["connect"]["code"] == line
        assert granted["connect"]["button"] == "copied"
        assert granted["connect"]["clipboard"] == line
        assert granted["ssh"]["clipboard"] == "ssh colab" == granted["ssh"]["code"]
        # (b)-(d) refused, missing, sandboxed: exactly the line is selected, the button says
        # what to press.
        for case in ("denied", "insecure", "sandboxed"):
            got = cases[case]["connect"]
            assert got["selection"] == line, (case, got)
            assert got["button"] == FALLBACK_WORDS, (case, got)
        # (e) no script at all: one click on the line selects all of it.
        assert cases["noscript"]["connect"]["selection"] == line
        assert cases["noscript"]["connect"]["button"] == "copy"  # no script ran
        assert cases["sandboxed"]["connect"]["origin"] == "null"  # an opaque origin
        assert cases["insecure"]["connect"]["hasClipboardApi"] is False
        assert cases["insecure"]["connect"]["secure"] is False
        # Light and dark pages: every piece of text takes the page's own colour.
        for theme in ("light", "dark"):
            looks = seen["looks"][theme]
            assert looks["textColours"] == [looks["pageColour"]], (theme, looks)
            assert_readable(looks, dark=theme == "dark")
            assert looks["stateLine"].startswith(
                "\u2714 Runtime 'colab' is reachable through the relay (private mode)"
            )
        shots = sorted(p.name for p in seen["shots"].iterdir())
        assert shots == [
            "notebook-block-dark.png",
            "notebook-block.png",
            "notebook-status-dark.png",
            "notebook-status.png",
        ]
        for shot in seen["shots"].iterdir():
            data = shot.read_bytes()
            assert data.startswith(PNG) and len(data) > 5000, shot
        if os.environ.get("HANDY_COLAB_UPDATE_SCREENSHOTS") == "1":
            for shot in seen["shots"].iterdir():
                shutil.copy(shot, REPO / "docs" / "images" / shot.name)

        paste_and_log_in(rt, granted["connect"]["clipboard"], workdir)

        # Stopped: the same block and status() now say so, first, in words.
        assert kernel.value("rt.stop()") is True
        after = kernel.run("rt").check().results[0]
        assert "&#10006; Runtime &#x27;colab&#x27; is not healthy</b>" in after["text/html"]
        assert after["text/plain"].startswith("NOT healthy now: stopped")
        st_after = kernel.run("handy_colab.status()").check().results[0]
        assert "is not healthy</b>" in st_after["text/html"]
        assert "not healthy" in st_after["text/plain"]


def as_outputs(res: CellResult, count: int) -> list[Any]:
    """What Jupyter stores for a cell: its streams, then its results."""
    import nbformat

    outs = [
        nbformat.v4.new_output("stream", name=name, text=text)
        for name, text in (("stdout", res.stdout), ("stderr", res.stderr))
        if text
    ]
    outs += [
        nbformat.v4.new_output("execute_result", data=data, execution_count=count)
        for data in res.results
    ]
    return outs


def test_exported_example_notebook_in_jupyterlab_css(tmp_path: Path) -> None:
    """docs/example.ipynb executed in a real kernel (public relay mode, OpenSSH sshd), saved
    with its outputs and exported by nbconvert's JupyterLab template in its light and dark
    themes (JupyterLab's own stylesheet): in Chromium the block keeps its colours readable
    and the first copy button copies the line that, pasted on the laptop, logs in."""
    need(browser_missing(), "the browser test's prerequisites (scripts/setup.sh test)")
    from nbconvert import HTMLExporter

    with example_in_kernel(tmp_path) as (notebook, rt, kernel, workdir):
        code_cells = [c for c in notebook.cells if c.cell_type == "code"]
        # Up to status(): the cells a user runs before going to the laptop.
        for count, cell in enumerate(code_cells[:4], start=1):
            cell.outputs = as_outputs(kernel.run(cell.source).check(), count)
            cell.execution_count = count
        line = kernel.value("rt.connect_command")
        documents = {}
        for name, theme in (("lab", "light"), ("lab-dark", "dark")):
            body, _ = HTMLExporter(template_name="lab", theme=theme).from_notebook_node(notebook)
            assert body.count('class="handy-colab"') == 1, "the block, once"
            documents[name] = body
        seen = look_in_browser({"documents": documents}, tmp_path / "browser")
        for name, doc in seen["documents"].items():
            assert doc["connect"]["code"] == line, name
            assert doc["connect"]["button"] == "copied", name
            assert doc["connect"]["clipboard"] == line, name
            assert_readable(doc["looks"], dark=name.endswith("dark"))
            assert doc["looks"]["stateLine"].startswith(
                "\u2714 Runtime 'colab' is reachable through the relay (public mode)"
            )
        shots = seen["shots"]
        assert sorted(p.name for p in shots.iterdir()) == [
            "notebook-block-lab-dark.png",
            "notebook-block-lab.png",
        ]
        if os.environ.get("HANDY_COLAB_UPDATE_SCREENSHOTS") == "1":
            for shot in shots.iterdir():
                shutil.copy(shot, REPO / "docs" / "images" / shot.name)
        paste_and_log_in(rt, seen["documents"]["lab"]["connect"]["clipboard"], workdir)
        assert kernel.value("rt.stop()") is True
