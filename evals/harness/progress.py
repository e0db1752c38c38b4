"""A live count of examples done and LM calls in flight, for long sessions.

On a terminal under plain pytest the count sits after pytest's own progress on the current
line and is rewritten in place (saved and restored cursor, so pytest's dots go on where they
were); elsewhere (a log, CI, the xdist controller) one plain line is written every
``every_s`` seconds (``EVALS_PROGRESS_INTERVAL``, 30 by default), the first only once a session
has run that long, so short sessions (and the harness's own pytester runs) print nothing.
:class:`TerminalWriters` are the ways to write there; :mod:`evals.harness.compile_progress` uses
them too.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from evals.errors import ConfigError

SAVE, RESTORE, CLEAR_TO_END = "\x1b7", "\x1b8", "\x1b[K"
EVERY_S = 30.0
"""Seconds between two plain progress lines (and before the first), unless ``EVALS_PROGRESS_INTERVAL`` says."""
INTERVAL_ENV = "EVALS_PROGRESS_INTERVAL"
TTY_EVERY_S = 0.5
"""Seconds between two in-place updates on a terminal."""


@dataclass(frozen=True)
class Progress:
    """One reading of a session's progress.

    Attributes:
        done: Examples evaluated (every attempt over).
        total: Examples the selected tests evaluate.
        in_flight: LM calls running now.
        elapsed_s: Seconds since the session started.
        rate_limited: Calls turned away with HTTP 429 so far.
    """

    done: int
    total: int
    in_flight: int
    elapsed_s: float
    rate_limited: int = 0


def progress_line(progress: Progress) -> str:
    """``evals: 120/212 examples, 16 calls in flight, 0:45`` (and rate-limited calls when there were some)."""
    minutes, seconds = divmod(int(progress.elapsed_s), 60)
    parts = [f"evals: {progress.done}/{progress.total} examples", f"{progress.in_flight} calls in flight"]
    if progress.rate_limited:
        parts.append(f"{progress.rate_limited} rate-limited")
    return ", ".join(parts) + f", {minutes}:{seconds:02d}"


def fit(text: str, room: int) -> str:
    """``text`` cut to ``room`` columns (an ellipsis marks the cut); empty when there is no room."""
    if room <= 0:
        return ""
    return text if len(text) <= room else text[: room - 1] + "…"


class Counter:
    """Examples done and total, counted from any thread."""

    def __init__(self, total: int = 0) -> None:
        self._lock = threading.Lock()
        self.total, self.done = total, 0

    def add_done(self, count: int = 1) -> None:
        with self._lock:
            self.done += count


class Display:
    """Shows :class:`Progress` readings, throttled: in place on a terminal, else as periodic lines.

    Args:
        write: Writes raw text to the terminal (no newline added).
        write_line: Writes one line (the caller's terminal reporter starts it on a fresh line).
        room: Columns left on the terminal's current line, or ``None`` where that is unknown
            (then no in-place text is written: periodic lines instead).
        tty: Whether the output is a terminal that understands cursor save/restore.
        clock: Seconds (injectable for tests); the session starts at the first reading's clock.
    """

    def __init__(
        self,
        write: Callable[[str], None],
        write_line: Callable[[str], None],
        *,
        room: Callable[[], int | None] = lambda: None,
        tty: bool = False,
        clock: Callable[[], float] = time.monotonic,
        every_s: float = EVERY_S,
        tty_every_s: float = TTY_EVERY_S,
    ) -> None:
        self.write, self.write_line, self.room, self.tty, self.clock = write, write_line, room, tty, clock
        self.every_s, self.tty_every_s = every_s, tty_every_s
        self.started = clock()
        self._last: float | None = None
        self._shown = False

    def update(self, read: Callable[[float], Progress | None]) -> None:
        """Show a reading if it is time to; ``read(elapsed_s)`` is only called then (``None``: nothing to show)."""
        now = self.clock()
        elapsed = now - self.started
        room = self.room() if self.tty else None
        if room is not None:
            if self._last is None or now - self._last >= self.tty_every_s:
                self._last = now
                reading = read(elapsed)
                if reading is not None:
                    self.write(f"{SAVE}{fit('  ' + progress_line(reading), room - 1)}{CLEAR_TO_END}{RESTORE}")
                    self._shown = True
            return
        if elapsed >= self.every_s and (self._last is None or now - self._last >= self.every_s):
            self._last = now
            reading = read(elapsed)
            if reading is not None:
                self.write_line(progress_line(reading))

    def clear(self) -> None:
        """Erase the in-place text (before pytest writes its own lines)."""
        if self._shown:
            self.write(CLEAR_TO_END)
            self._shown = False


@dataclass(frozen=True)
class TerminalWriters:
    """Ways to write on pytest's terminal from any thread, with output capture suspended for the write.

    Attributes:
        raw: Writes text straight to the terminal's file (pytest's record of the current line stays as it was).
        line: Writes one line as pytest does, on a fresh line (after pytest -q's dots).
        fresh_line: Ends pytest's current line if it has text (so that raw text starts at column 0).
        room: Columns left on pytest's current line (None: unknown).
        columns: The terminal's width.
        tty: Whether the terminal is one (cursor movement works).
    """

    raw: Callable[[str], None]
    line: Callable[[str], None]
    fresh_line: Callable[[], None]
    room: Callable[[], int | None]
    columns: Callable[[], int]
    tty: bool


def terminal_writers(config: Any) -> TerminalWriters | None:
    """:class:`TerminalWriters` on pytest's terminal (``None`` without a terminal reporter, e.g. ``-p no:terminal``).

    Raw text goes straight to the terminal's file, so that pytest's own record of the current
    line's width, and with it the ``[ 45%]`` column, stays right. The terminal's width is the one
    it has when this is called (a session's start).
    """
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return None
    writer = getattr(reporter, "_tw", None)  # pytest has no public name for the current line's width

    def uncaptured(write: Callable[[str], None]) -> Callable[[str], None]:
        def emit(text: str) -> None:
            with capture.global_and_fixture_disabled() if capture is not None else nullcontext():
                write(text)

        return emit

    def raw(text: str) -> None:
        if sys.__stdout__ is not None:
            sys.__stdout__.write(text)
            sys.__stdout__.flush()

    # Read now, while pytest captures nothing: under capture the output is a file, and the size would be 80.
    width = shutil.get_terminal_size().columns

    def columns() -> int:
        return width

    def room() -> int | None:
        width = getattr(writer, "width_of_current_line", None)
        return None if width is None else columns() - int(width)

    def fresh(_: str = "") -> None:
        if getattr(writer, "width_of_current_line", 0):  # after pytest's dots (-q has no file name to end the line)
            reporter.write("\n")

    def line(text: str) -> None:
        fresh()
        reporter.write_line(text)

    fresh_line = uncaptured(fresh)
    return TerminalWriters(
        uncaptured(raw), uncaptured(line), lambda: fresh_line(""), room, columns, bool(reporter.isatty())
    )


def terminal_display(config: Any) -> Display | None:
    """A :class:`Display` on pytest's terminal (``None`` without a terminal reporter, e.g. ``-p no:terminal``).

    It writes with pytest's output capture suspended (a test may be running), in place after
    pytest's own progress on a terminal, else a line every ``EVALS_PROGRESS_INTERVAL`` seconds.
    """
    writers = terminal_writers(config)
    if writers is None:
        return None
    return Display(writers.raw, writers.line, room=writers.room, tty=writers.tty, every_s=progress_interval())


def progress_interval(environ: Mapping[str, str] = os.environ) -> float:
    """Seconds between two plain progress lines: ``EVALS_PROGRESS_INTERVAL``, else :data:`EVERY_S`."""
    value = environ.get(INTERVAL_ENV, "").strip()
    if not value:
        return EVERY_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"{INTERVAL_ENV}: expected a number of seconds above 0, found {value!r}")
    return seconds
