"""Unit tests of the progress line: the text, in place on a terminal, periodic lines elsewhere."""

from __future__ import annotations

import pytest

from evals.harness.progress import CLEAR_TO_END, RESTORE, SAVE, Display, Progress, fit, progress_line


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


class Screen:
    def __init__(self) -> None:
        self.raw: list[str] = []
        self.lines: list[str] = []


def reading(elapsed: float) -> Progress:
    return Progress(done=120, total=212, in_flight=16, elapsed_s=elapsed)


def test_progress_line() -> None:
    assert progress_line(Progress(120, 212, 16, 45.2)) == "evals: 120/212 examples, 16 calls in flight, 0:45"
    assert progress_line(Progress(3, 5, 0, 3725, rate_limited=7)) == (
        "evals: 3/5 examples, 0 calls in flight, 7 rate-limited, 62:05"
    )


def test_fit() -> None:
    assert fit("abcdef", 10) == "abcdef"
    assert fit("abcdef", 4) == "abc…"
    assert fit("abcdef", 0) == ""


def test_plain_output_waits_a_period_then_writes_a_line_per_period() -> None:
    clock, screen = Clock(), Screen()
    display = Display(screen.raw.append, screen.lines.append, clock=clock, every_s=30)
    for _ in range(29):
        clock.now += 1
        display.update(reading)
    assert screen.lines == []  # a short session prints nothing
    clock.now += 1
    display.update(reading)
    clock.now += 10
    display.update(reading)
    clock.now += 20
    display.update(reading)
    assert screen.lines == [progress_line(reading(30)), progress_line(reading(60))]
    assert screen.raw == []


def test_a_terminal_gets_the_line_in_place_after_pytests_own_output() -> None:
    clock, screen = Clock(), Screen()
    display = Display(screen.raw.append, screen.lines.append, room=lambda: 60, tty=True, clock=clock, tty_every_s=0.5)
    display.update(reading)
    clock.now += 0.2
    display.update(reading)  # too soon
    clock.now += 0.4
    display.update(reading)
    assert len(screen.raw) == 2 and screen.lines == []
    text = screen.raw[-1]
    assert text.startswith(SAVE) and text.endswith(CLEAR_TO_END + RESTORE)
    shown = text[len(SAVE) : -len(CLEAR_TO_END + RESTORE)]
    assert shown.startswith("  evals: 120/212 examples") and len(shown) <= 59
    display.clear()
    assert screen.raw[-1] == CLEAR_TO_END
    display.clear()
    assert len(screen.raw) == 3  # nothing shown, nothing to clear


def test_a_terminal_without_a_known_column_falls_back_to_periodic_lines() -> None:
    clock, screen = Clock(), Screen()
    display = Display(screen.raw.append, screen.lines.append, room=lambda: None, tty=True, clock=clock, every_s=5)
    clock.now += 6
    display.update(reading)
    assert screen.raw == [] and len(screen.lines) == 1


def test_reading_is_only_taken_when_shown() -> None:
    clock, screen = Clock(), Screen()
    calls: list[float] = []
    display = Display(screen.raw.append, screen.lines.append, clock=clock, every_s=30)
    display.update(lambda elapsed: calls.append(elapsed) or reading(elapsed))  # type: ignore[func-returns-value]
    assert calls == []


class FakeWriter:
    def __init__(self, width: int) -> None:
        self.width_of_current_line = width


class FakeReporter:
    def __init__(self, width: int, tty: bool) -> None:
        self._tw = FakeWriter(width)
        self.tty, self.out = tty, []

    def isatty(self) -> bool:
        return self.tty

    def write(self, text: str) -> None:
        self.out.append(text)

    def write_line(self, text: str) -> None:
        self.out.append(text + "\n")


class FakeConfig:
    def __init__(self, reporter: FakeReporter | None) -> None:
        self.pluginmanager = self
        self.reporter = reporter

    def get_plugin(self, name: str) -> object:
        return self.reporter if name == "terminalreporter" else None


def test_terminal_display_starts_its_periodic_lines_on_a_fresh_line() -> None:
    from evals.harness.progress import terminal_display

    reporter = FakeReporter(width=4, tty=False)  # "....": pytest -q's dots, no file name ending the line
    display = terminal_display(FakeConfig(reporter))
    assert display is not None and not display.tty
    display.started -= 31
    display.update(reading)
    assert len(reporter.out) == 2 and reporter.out[0] == "\n"
    assert reporter.out[1].startswith("evals: 120/212 examples, 16 calls in flight")
    reporter._tw.width_of_current_line = 0  # pytest ended its line: no blank line before ours
    display.clock = lambda: display.started + 100
    display.update(reading)
    assert len(reporter.out) == 3 and reporter.out[2].startswith("evals: ")
    assert terminal_display(FakeConfig(None)) is None


def test_terminal_writers_end_pytests_line_only_when_it_has_text() -> None:
    from evals.harness.progress import terminal_writers

    reporter = FakeReporter(width=4, tty=True)
    writers = terminal_writers(FakeConfig(reporter))
    assert writers is not None and writers.tty and writers.columns() > 0
    writers.fresh_line()
    assert reporter.out == ["\n"]
    reporter._tw.width_of_current_line = 0
    writers.fresh_line()
    writers.line("evals: compiled x")
    assert reporter.out == ["\n", "evals: compiled x\n"]
    assert terminal_writers(FakeConfig(None)) is None


def test_terminal_width_is_read_when_the_session_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a test's output capture the terminal size reads as 80 columns: the session's start knows better."""
    import os
    import shutil

    from evals.harness.progress import terminal_writers

    monkeypatch.setattr(shutil, "get_terminal_size", lambda *args, **kwargs: os.terminal_size((120, 40)))
    reporter = FakeReporter(width=10, tty=True)
    writers = terminal_writers(FakeConfig(reporter))
    monkeypatch.setattr(shutil, "get_terminal_size", lambda *args, **kwargs: os.terminal_size((80, 24)))
    assert writers is not None and writers.columns() == 120 and writers.room() == 110
