"""Progress of long work (a download, the extra packages), as the library reports it.

Library code never prints: it tells a ``Reporter`` what happens (a line, or a ``Bar`` that
moves) and the front end decides how that looks. ``progress_view.py`` has the front ends'
reporters (a tqdm bar on a terminal, a widget or one updated line in a notebook); this
module has the plain one, ``LineReporter``, which turns everything into whole lines for a
callable, as ``progress=print`` always did: no carriage return, a few lines per download
(one per 10 %), one per package step. It is what logs, CI and callers passing a callable
get.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol, runtime_checkable

Say = Callable[[str], None]


class Bar(Protocol):
    """One piece of long work with a size: bytes of a download, packages of an install."""

    def update(self, done: float, total: float | None = None) -> None:
        """``done`` so far (absolute), of ``total`` (None: unknown or unchanged)."""

    def step(self, text: str) -> None:
        """What is going on now, in words ("python package torch: installing...")."""

    def close(self) -> None: ...


@runtime_checkable
class Reporter(Protocol):
    def say(self, line: str) -> None:
        """A whole line: a phase, or a result worth keeping."""

    def bar(self, what: str, total: float | None, unit: str) -> Bar:
        """Start a bar; ``unit`` "B" counts bytes, anything else is a count ("pkg")."""


# What `up(progress=...)` accepts: a reporter, a callable that takes lines, or None (quiet).
ProgressArg = Reporter | Say | None


class _LineBar:
    """Whole lines: for bytes one per tenth (per 10 MB with no size); for counts, each step."""

    def __init__(self, say: Say, what: str, total: float | None, unit: str) -> None:
        self._say, self._what, self._total, self._unit = say, what, total, unit
        self._last = -1

    def update(self, done: float, total: float | None = None) -> None:
        if total is not None:
            self._total = total
        if self._unit != "B":
            return  # a count's steps are its lines
        mb = done / 1e6
        if self._total:
            tenth = int(done * 10 / self._total)
            if tenth != self._last:
                self._last = tenth
                size = self._total / 1e6
                self._say(f"{self._what}: {tenth * 10}% ({mb:.0f} of {size:.0f} MB)")
        elif int(mb / 10) != self._last:
            self._last = int(mb / 10)
            self._say(f"{self._what}: {mb:.0f} MB")

    def step(self, text: str) -> None:
        self._say(text)

    def close(self) -> None:
        pass


class LineReporter:
    """Every event as a whole line for ``say`` (print, a log, a list in a test)."""

    def __init__(self, say: Say) -> None:
        self._say = say

    def say(self, line: str) -> None:
        self._say(line)

    def bar(self, what: str, total: float | None, unit: str) -> Bar:
        return _LineBar(self._say, what, total, unit)


class _NoBar:
    def update(self, done: float, total: float | None = None) -> None:
        pass

    def step(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


class QuietReporter:
    """``progress=None``: nothing is shown (the log still gets what the library logs)."""

    def say(self, line: str) -> None:
        pass

    def bar(self, what: str, total: float | None, unit: str) -> Bar:
        return _NoBar()


def as_reporter(progress: ProgressArg) -> Reporter:
    """The reporter for ``progress``: itself, lines for a callable, quiet for None."""
    if progress is None:
        return QuietReporter()
    if isinstance(progress, Reporter):
        return progress
    return LineReporter(progress)


@contextmanager
def bytes_bar(reporter: Reporter, what: str) -> Iterator[Callable[[int, int | None], None]]:
    """A ``(done, total)`` callback for a download that opens its bar on the first bytes: a
    copy found in the cache shows no bar at all."""
    opened: list[Bar] = []

    def report(done: int, total: int | None) -> None:
        if not opened:
            opened.append(reporter.bar(what, total, "B"))
        opened[0].update(done, total)

    try:
        yield report
    finally:
        for bar in opened:
            bar.close()
