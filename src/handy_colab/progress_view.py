"""How the front ends (the CLI's `up`, ``notebook.up``) show progress: they pick a reporter
here and hand it to the library (progress.py), which never prints.

- a terminal (the stream is a TTY, TERM is not "dumb"): tqdm bars that redraw in place,
  whole lines printed above them (``tqdm.write``);
- a Jupyter kernel with ipywidgets (Colab has it): tqdm's widget bar, lines as output;
- a Jupyter kernel without ipywidgets: tqdm's text bar in one display that is updated in
  place (``update_display``), so the cell shows one line moving, not one per update;
- anything else (a log, CI, a pipe): whole lines (progress.LineReporter), no carriage
  returns.
"""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO

from .progress import Bar, LineReporter, Reporter

# The packages' bar: no rate (packages per second means nothing), the step under way after.
_COUNT_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"


def is_terminal(stream: TextIO) -> bool:
    """A terminal a bar can redraw on: a TTY, and not one that says it cannot move back."""
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        return False
    return tty and os.environ.get("TERM", "") != "dumb"


def _tqdm_args(what: str, total: float | None, unit: str) -> dict[str, Any]:
    args: dict[str, Any] = {"total": total, "desc": what, "leave": True, "mininterval": 0.1}
    if unit == "B":
        args.update(unit="B", unit_scale=True, unit_divisor=1024)
    else:
        args.update(unit=unit, bar_format=_COUNT_FORMAT)
    return args


class _TqdmBar:
    def __init__(self, bar: Any) -> None:
        self._bar = bar

    def update(self, done: float, total: float | None = None) -> None:
        if total and total != self._bar.total:
            self._bar.total = total
        self._bar.update(done - self._bar.n)

    def step(self, text: str) -> None:
        self._bar.set_postfix_str(text)

    def close(self) -> None:
        self._bar.close()


class TerminalReporter:
    """tqdm bars on ``stream`` (a terminal); lines go above the bar that is running."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def say(self, line: str) -> None:
        from tqdm import tqdm

        tqdm.write(line, file=self._stream)
        self._stream.flush()

    def bar(self, what: str, total: float | None, unit: str) -> Bar:
        from tqdm import tqdm

        return _TqdmBar(
            tqdm(file=self._stream, dynamic_ncols=True, **_tqdm_args(what, total, unit))
        )


class WidgetReporter:
    """In a kernel with ipywidgets: tqdm's widget bar (one comm, updated), lines as output."""

    def say(self, line: str) -> None:
        print(line, flush=True)

    def bar(self, what: str, total: float | None, unit: str) -> Bar:
        from tqdm.notebook import tqdm

        return _TqdmBar(tqdm(**_tqdm_args(what, total, unit)))


class _DisplayLine:
    """A file for tqdm's text bar whose every redraw replaces one display's text."""

    def __init__(self) -> None:
        self._handle: Any = None

    def write(self, text: str) -> int:
        # tqdm redraws as "\r" + the line, and ends with "\n": keep the last line drawn.
        line = text.rsplit("\r", 1)[-1].strip()
        if line:
            from IPython.display import display

            data = {"text/plain": line}
            if self._handle is None:
                # IPython ships no annotations for display().
                self._handle = display(data, raw=True, display_id=True)  # type: ignore[no-untyped-call]
            else:
                self._handle.update(data, raw=True)
        return len(text)

    def flush(self) -> None:
        pass


class DisplayLineReporter:
    """In a kernel without ipywidgets: tqdm's text bar in one display updated in place."""

    def say(self, line: str) -> None:
        print(line, flush=True)

    def bar(self, what: str, total: float | None, unit: str) -> Bar:
        from tqdm.std import tqdm

        return _TqdmBar(tqdm(file=_DisplayLine(), ncols=100, **_tqdm_args(what, total, unit)))


def _in_kernel() -> bool:
    """Running in a Jupyter kernel (not a terminal IPython, not a plain interpreter)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _widgets() -> bool:
    """tqdm's own test: its widget bar needs ipywidgets (a recent enough one)."""
    try:
        import tqdm.notebook
    except ImportError:
        return False
    # Set to None by tqdm when ipywidgets is missing (its stubs do not name it).
    return getattr(tqdm.notebook, "IProgress", None) is not None


def terminal_reporter(stream: TextIO | None = None) -> Reporter:
    """For a command line: bars on a terminal, whole lines anywhere else."""
    out = stream or sys.stdout
    if is_terminal(out):
        return TerminalReporter(out)
    return LineReporter(lambda line: print(line, file=out, flush=True))


def auto_reporter() -> Reporter:
    """For the notebook API: a widget or an updated line in a kernel, else as a terminal."""
    if not _in_kernel():
        return terminal_reporter()
    return WidgetReporter() if _widgets() else DisplayLineReporter()
