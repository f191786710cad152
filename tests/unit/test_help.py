"""`handy-colab help [TOPIC]`: every page of docs/ is a topic and prints itself, the list
names each with its heading, and an unknown topic is one line with the fix."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from handy_colab import userdocs
from handy_colab.cli import main
from handy_colab.errors import HandyColabError

REPO = Path(__file__).resolve().parents[2]
PAGES = sorted(REPO.glob("docs/*.md"))


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_the_topics_are_the_pages_of_docs() -> None:
    assert len(PAGES) >= 10  # the checkout's pages were found
    assert [t.name for t in userdocs.topics()] == [p.stem for p in PAGES]
    for must in ("config", "cloudflared", "frp", "relay", "laptop", "recovery", "security"):
        assert must in {t.name for t in userdocs.topics()}


def test_help_alone_lists_every_topic_with_its_heading(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(["help"], capsys)
    assert code == 0 and err == ""
    for path in PAGES:
        heading = path.read_text().split("\n", 1)[0].lstrip("# ").strip()
        assert re.search(rf"^  {re.escape(path.stem)} +{re.escape(heading)}$", out, re.M), (
            path.stem,
            out,
        )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.stem)
def test_every_topic_prints_its_page(page: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(["help", page.stem], capsys)
    assert code == 0 and err == ""
    assert out == page.read_text()


def test_topic_names_are_forgiving_of_case_and_suffix(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["help", "Config.md"], capsys)[1] == (REPO / "docs" / "config.md").read_text()


def test_an_unknown_topic_is_one_line_naming_the_topics(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = _run(["help", "nosuchpage"], capsys)
    assert code != 0 and out == ""
    assert err.count("\n") == 1 and "Fix:" in err and "'nosuchpage'" in err, err
    assert "config" in err.split("Fix:", 1)[1]


def test_no_pages_anywhere_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(userdocs, "docs_dir", lambda: None)
    assert userdocs.topics() == []
    with pytest.raises(HandyColabError, match=r"no help pages.*Fix:"):
        userdocs.page("config")


def test_the_program_itself_prints_a_page() -> None:
    # A real process, as a user runs it (the plugged command is found by main()).
    res = subprocess.run(
        [sys.executable, "-m", "handy_colab.cli", "help", "relay"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert res.stdout == (REPO / "docs" / "relay.md").read_text()
