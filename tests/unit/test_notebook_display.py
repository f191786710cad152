"""The notebook block's HTML and its plain text: what comes first, what stands out, what is
escaped, and the rules that keep it readable where notebooks render it (inline styles only,
nothing fetched, no fixed text colour). The browser half is tests/e2e/test_notebook_browser.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from html import unescape
from pathlib import Path
from typing import Any

import pytest

from handy_colab import platforms
from handy_colab.descriptor import Descriptor
from handy_colab.notebook import Runtime, RuntimeStatus
from handy_colab.notebook_display import COPY_JS, render_runtime, render_status
from handy_colab.packages import PackageResult

HOSTILE = "<img src=x onerror=alert(1)>&'\""
FAILED = PackageResult("python", "no-such-dist", "failed", "ERROR: No matching distribution")


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # No runtime ever ran here: a block's live status must come out "not healthy".
    monkeypatch.setenv("HANDY_COLAB_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def make_rt(desc: Descriptor, **over: Any) -> Runtime:
    fields: dict[str, Any] = {
        "name": "colab",
        "descriptor": desc,
        "descriptor_path": None,
        "platform": platforms.detect({}),
        "server": "embedded",
        "tunnel": "openssh",
        "already_running": False,
        "packages": [
            PackageResult("python", "pip", "present", "25.0"),
            PackageResult("os", "tmux", "installed", "3.3a"),
            FAILED,
        ],
        "warnings": [f"python package {FAILED.spec} failed: {FAILED.detail}", "disk is full"],
    }
    fields.update(over)
    return Runtime(**fields)


HEALTHY = RuntimeStatus("colab", True, "ready", "embedded up", "openssh up", None, "r:22", 2)
DOWN = RuntimeStatus("colab", False, "dead", "embedded down", "openssh down", "gone")


def commands(html: str) -> list[str]:
    """The copyable lines, in order, as the copy button would copy them (textContent)."""
    found = re.findall(r'<div class="hc-cmd"[^>]*><code[^>]*>([^<]*)</code><button', html)
    return [unescape(c) for c in found]


def test_verdict_first_then_the_paste_line_then_ssh(
    make_descriptor: Callable[..., Descriptor],
) -> None:
    rt = make_rt(make_descriptor(mode="private", workdir="/content"))
    html = render_runtime(rt, HEALTHY)
    first = re.search(r'<div class="hc-state ([^"]*)"[^>]*>(.*?)</div>', html)
    assert first and html.index(first[0]) < html.index("hc-cmd")
    assert first[1] == "hc-ok"
    # In words and a sign, not colour alone; the route is named.
    assert "&#10004; Runtime &#x27;colab&#x27; is reachable</b>" in first[2]
    assert "through the relay (private mode)" in first[2]
    lines = commands(html)
    assert lines[0] == rt.connect_command and lines[0].startswith("handy-colab connect 'hc1:")
    assert lines[1] == "ssh colab"
    assert lines[2] == "handy-colab code colab"
    assert 'href="vscode://vscode-remote/ssh-remote+colab/content"' in html
    assert "<details" in html and "PyCharm" in html and "SHA256:" in html


def test_unreadable_status_claims_only_what_up_saw(
    make_descriptor: Callable[..., Descriptor],
) -> None:
    html = render_runtime(make_rt(make_descriptor()), None)
    assert "Runtime &#x27;colab&#x27; was reachable</b>" in html and "(when up() ran)" in html


def test_not_healthy_says_so_first(make_descriptor: Callable[..., Descriptor]) -> None:
    html = render_runtime(make_rt(make_descriptor()), DOWN)
    first = re.search(r'<div class="hc-state ([^"]*)"[^>]*>(.*?)</div>', html)
    assert first and first[1] == "hc-bad"
    assert "&#10006; Runtime &#x27;colab&#x27; is not healthy</b> &middot; dead: gone" in first[2]


def test_failed_package_is_red_with_its_reason_once(
    make_descriptor: Callable[..., Descriptor],
) -> None:
    html = render_runtime(make_rt(make_descriptor()), HEALTHY)
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", html)
    failed = [r for r in rows if "no-such-dist" in r]
    assert len(failed) == 1
    assert "#e5534b" in failed[0] and "&#10006; failed" in failed[0]
    assert "ERROR: No matching distribution" in failed[0]
    assert "2 of 3 ready, <b>1 failed</b>" in html
    ok = next(r for r in rows if "tmux" in r)
    assert "#2da44e" in ok and "installed" in ok
    # The warning box holds the other warning, not the failure a second time.
    box = re.search(r'<div class="hc-warning".*?</div>', html, re.S)
    assert box and "disk is full" in box[0] and "no-such-dist" not in box[0]


def test_no_warning_box_without_warnings(make_descriptor: Callable[..., Descriptor]) -> None:
    html = render_runtime(make_rt(make_descriptor(), warnings=[], packages=[]), HEALTHY)
    assert "hc-warning" not in html and "Extra packages" not in html


def test_everything_from_outside_is_escaped(make_descriptor: Callable[..., Descriptor]) -> None:
    rt = make_rt(
        make_descriptor(workdir="/content/" + HOSTILE),
        packages=[PackageResult("python", HOSTILE, "failed", HOSTILE)],
        warnings=[HOSTILE],
    )
    st = RuntimeStatus("colab", False, HOSTILE, HOSTILE, HOSTILE, HOSTILE, HOSTILE)
    for html in (render_runtime(rt, st), render_status(st)):
        assert "<img" not in html and "onerror=alert(1)>" not in html


def test_portable_markup(make_descriptor: Callable[..., Descriptor]) -> None:
    """Inline styles only (outputs may lose <style>), nothing fetched (no network in a
    sandboxed output), and no fixed dark text colour (dark themes)."""
    for html in (
        render_runtime(make_rt(make_descriptor(mode="quick", route="cloudflared")), HEALTHY),
        render_status(HEALTHY),
        render_status(DOWN),
    ):
        assert "<style" not in html and "<script" not in html and "<link" not in html
        assert not re.search(r"(src|href)=\"(https?:)?//", html)
        assert "url(" not in html
        colours = re.findall(r"(?<![-\w])color:([^;\"]+)", html)
        assert colours and set(colours) == {"inherit"}, colours
    assert "writeText" in COPY_JS and "execCommand('copy')" in COPY_JS
    assert "Ctrl+C / Cmd+C" in COPY_JS and "addRange" in COPY_JS


def test_quick_tunnel_says_the_name_changes(make_descriptor: Callable[..., Descriptor]) -> None:
    desc = make_descriptor(mode="quick", route="cloudflared", hostname="a-b.trycloudflare.com")
    html = render_runtime(make_rt(desc), HEALTHY)
    assert "new hostname" in html and "through Cloudflare" in html


def test_status_html_and_text_say_the_same(state_dir: Path) -> None:
    html = render_status(HEALTHY)
    assert "&#10004; Runtime &#x27;colab&#x27; is healthy</b> &middot; ready" in html
    assert "embedded up" in html and "openssh up" in html and "r:22" in html
    assert str(HEALTHY) == "runtime 'colab': ready (server embedded up, tunnel openssh up)"
    bad = render_status(DOWN)
    assert "&#10006; Runtime &#x27;colab&#x27; is not healthy</b> &middot; dead: gone" in bad
    assert str(DOWN).endswith("- not healthy: gone")
    assert HEALTHY._repr_html_() == html


def test_block_reads_the_live_status(
    make_descriptor: Callable[..., Descriptor], state_dir: Path
) -> None:
    rt = make_rt(make_descriptor())
    # Nothing runs under this state dir: both renderings lead with that.
    assert 'class="hc-state hc-bad"' in rt._repr_html_()
    text = rt.text()
    assert text.startswith("NOT healthy now: never started\n")
    assert "python no-such-dist: FAILED ERROR: No matching distribution" in text
    assert "<" not in text.replace("<user>", "")
