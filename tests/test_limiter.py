"""Unit tests of the limiter: slots, the AIMD window, waiting, deadlines and the 429 reading."""

from __future__ import annotations

import math
import multiprocessing
import threading
import time
from pathlib import Path

import pytest

from evals.harness.limiter import (
    UNLIMITED,
    FileSlots,
    Limiter,
    LocalSlots,
    Outcome,
    Window,
    rate_limit_delay,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def limiter(size: int, clock: FakeClock | None = None) -> Limiter:
    clock = clock or FakeClock()
    return Limiter(LocalSlots(size), clock=clock, sleep=clock.sleep)


# --- the window ---------------------------------------------------------------------------------


def test_window_halves_on_a_429_and_not_below_one() -> None:
    window = Window.full(8)
    window = window.rate_limited(call_started=1.0, now=2.0)
    assert (window.limit, window.allowed) == (4.0, 4)
    for step in range(3, 10):
        window = window.rate_limited(call_started=float(step), now=float(step) + 0.5)
    assert window.allowed == 1 and window.limit == 1.0


def test_calls_of_the_same_round_decrease_the_window_once() -> None:
    window = Window.full(8).rate_limited(call_started=1.0, now=5.0)
    # Three more 429s of calls that started before the decrease (at 5.0): the same congestion.
    for started in (1.5, 2.0, 4.9):
        window = window.rate_limited(call_started=started, now=6.0)
    assert window.allowed == 4
    assert window.rate_limited(call_started=5.0, now=7.0).allowed == 2  # a call started after it


def test_window_recovers_additively_up_to_the_ceiling() -> None:
    window = Window.full(8).rate_limited(0.0, 1.0)  # 4
    answers = 0
    while window.allowed < 8:
        window = window.answered()
        answers += 1
    assert 22 <= answers <= 26  # about one step per round of calls: 4 + 5 + 6 + 7 answers
    for _ in range(100):
        window = window.answered()
    assert window.limit == 8.0


# --- the limiter ------------------------------------------------------------------------------


def test_no_more_than_the_slots_at_once() -> None:
    gate = limiter(3)
    tickets = [gate.try_acquire() for _ in range(5)]
    assert [t is not None for t in tickets] == [True, True, True, False, False]
    assert gate.stats().in_flight == gate.stats().peak_in_flight == 3
    tickets[0].release(Outcome.ANSWERED)  # type: ignore[union-attr]
    assert gate.try_acquire() is not None


def test_a_429_lowers_the_calls_admitted_and_answers_raise_them_again() -> None:
    clock = FakeClock()
    gate = limiter(8, clock)
    tickets = [gate.try_acquire() for _ in range(8)]
    clock.now += 1
    tickets[0].release(Outcome.RATE_LIMITED)  # type: ignore[union-attr]
    for ticket in tickets[1:]:
        ticket.release(Outcome.RATE_LIMITED)  # type: ignore[union-attr]  # same round: one halving
    stats = gate.stats()
    assert (stats.allowed, stats.rate_limited, stats.in_flight) == (4, 8, 0)
    held = [gate.try_acquire() for _ in range(5)]
    assert sum(t is not None for t in held) == 4
    for _ in range(40):
        for ticket in [t for t in held if t is not None]:
            ticket.release(Outcome.ANSWERED)
        held = [gate.try_acquire() for _ in range(8)]
    assert gate.stats().allowed == 8


def test_failed_calls_leave_the_window_alone() -> None:
    gate = limiter(4)
    for _ in range(10):
        ticket = gate.try_acquire()
        assert ticket is not None
        ticket.release(Outcome.FAILED)
    assert gate.window == Window.full(4)


def test_release_twice_counts_once() -> None:
    gate = limiter(2)
    ticket = gate.try_acquire()
    assert ticket is not None
    ticket.release(Outcome.ANSWERED)
    ticket.release(Outcome.ANSWERED)
    assert gate.stats().in_flight == 0
    assert gate.try_acquire() and gate.try_acquire() and not gate.try_acquire()


def test_acquire_gives_up_at_its_timeout_on_the_fake_clock() -> None:
    clock = FakeClock()
    gate = limiter(1, clock)
    assert gate.try_acquire() is not None
    assert gate.acquire(timeout=2.0) is None
    assert clock.now == pytest.approx(102.0)
    assert clock.sleeps and max(clock.sleeps) <= 0.05  # polls, never one long sleep


def test_acquire_waits_for_a_release_from_another_thread() -> None:
    gate = Limiter(LocalSlots(1))
    first = gate.try_acquire()
    assert first is not None
    threading.Timer(0.2, first.release, args=(Outcome.ANSWERED,)).start()
    started = time.monotonic()
    second = gate.acquire(timeout=5)
    assert second is not None and 0.15 < time.monotonic() - started < 2


def test_hold_takes_one_slot() -> None:
    gate = limiter(2)
    with gate.hold():
        assert gate.stats().in_flight == 1
    assert gate.stats().in_flight == 0


def test_threads_never_exceed_the_cap() -> None:
    gate = Limiter(LocalSlots(3))
    lock, now, peak = threading.Lock(), [0], [0]

    def call() -> None:
        ticket = gate.acquire()
        assert ticket is not None
        with lock:
            now[0] += 1
            peak[0] = max(peak[0], now[0])
        time.sleep(0.01)
        with lock:
            now[0] -= 1
        ticket.release(Outcome.ANSWERED)

    threads = [threading.Thread(target=lambda: [call() for _ in range(10)]) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak[0] == 3 and gate.stats().peak_in_flight == 3


def test_unlimited_admits_everything() -> None:
    admissions = [UNLIMITED.acquire() for _ in range(100)]
    assert all(admissions)
    admissions[0].release(Outcome.ANSWERED)  # type: ignore[union-attr]


# --- slots shared by processes ------------------------------------------------------------------


def test_file_slots_exclude_each_other_within_a_process(tmp_path: Path) -> None:
    a, b = FileSlots(tmp_path, 2, start=0), FileSlots(tmp_path, 2, start=0)
    assert a.try_take() == 0
    assert b.try_take() == 1  # slot 0 is locked by a
    assert b.try_take() is None and a.try_take() is None
    a.give_back(0)
    assert b.try_take() == 0
    a.close(), b.close()


def _hammer(directory: str, size: int, calls: int, log: str) -> None:
    gate = Limiter(FileSlots(Path(directory), size))
    for _ in range(calls):
        ticket = gate.acquire()
        assert ticket is not None
        with open(log, "a") as handle:
            handle.write(f"+ {time.time():.6f}\n")
        time.sleep(0.02)
        with open(log, "a") as handle:
            handle.write(f"- {time.time():.6f}\n")
        ticket.release(Outcome.ANSWERED)


def test_file_slots_cap_the_calls_of_several_processes(tmp_path: Path) -> None:
    """Three processes with 4 threads each, 2 shared slots: never more than 2 in their critical section."""
    logs = [tmp_path / f"log-{i}" for i in range(3)]
    slots = tmp_path / "slots"
    slots.mkdir()
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_threads_hammer, args=(str(slots), 2, str(log))) for log in logs]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    events = sorted(
        (float(t), +1 if sign == "+" else -1)
        for log in logs
        for sign, t in (line.split() for line in log.read_text().splitlines())
    )
    assert len(events) == 3 * 4 * 5 * 2
    # An end and a start at the same microsecond count the end first.
    level = peak = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):
        level += step
        peak = max(peak, level)
    assert peak == 2


def _threads_hammer(directory: str, size: int, log: str) -> None:
    threads = [threading.Thread(target=_hammer, args=(directory, size, 5, log)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


# --- reading a 429 ----------------------------------------------------------------------------


class LMRateLimitError(Exception):
    def __init__(self, retry_after: float | None) -> None:
        super().__init__("rate limited")
        self.retry_after = retry_after


class HTTPError(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"status {status_code}")
        self.status_code = status_code


def chained(outer: Exception, inner: Exception) -> Exception:
    outer.__cause__ = inner
    return outer


@pytest.mark.parametrize(
    ("exc", "delay"),
    [
        (LMRateLimitError(2.0), 2.0),
        (LMRateLimitError(None), 0.0),
        (LMRateLimitError(math.inf), 0.0),
        (HTTPError(429), 0.0),
        (chained(RuntimeError("wrapped"), LMRateLimitError(0.5)), 0.5),
        (HTTPError(500), None),
        (TimeoutError("slow"), None),
        (ValueError("bad json"), None),
    ],
)
def test_rate_limit_delay(exc: Exception, delay: float | None) -> None:
    assert rate_limit_delay(exc) == delay
