"""Each LM call, not each example, holds a call slot: formatting and parsing around it hold none."""

from __future__ import annotations

import threading
import time

import dspy
import pytest

from evals.data import Example
from evals.harness.admission import Admissions, SlotTimeout, outcome
from evals.harness.evaluations import prefetch_threads
from evals.harness.limiter import UNLIMITED, Limiter, LocalSlots, Outcome
from evals.harness.runner import RetryPolicy, run_one
from tests.test_runner import FakeClock
from tests.test_runner_rate_limits import LMRateLimitError, ScriptedLM

EXAMPLE = Example("test-0001", "itchy red rash after eating peanuts", "allergy")


class TwoCalls:
    """A program that works before, between and after two LM calls, noting the slots held at each step."""

    def __init__(self, gate: Limiter) -> None:
        self.gate = gate
        self.seen: list[tuple[str, int]] = []
        self.lm = ScriptedLM(lambda: self.note("in a call"))

    def note(self, where: str) -> None:
        self.seen.append((where, self.gate.stats().in_flight))

    def __call__(self, *, symptoms: str) -> dspy.Prediction:
        self.note("before")
        self.lm(prompt=symptoms)
        self.note("between")
        self.lm(prompt=symptoms)
        self.note("after")
        return dspy.Prediction(diagnosis="allergy")


def test_a_slot_is_held_only_while_an_lm_call_is_in_flight() -> None:
    gate = Limiter(LocalSlots(2))
    program = TwoCalls(gate)
    record = run_one(program, "p", EXAMPLE, gate=gate)
    assert record.error is None and record.predicted == "allergy"
    assert program.seen == [("before", 0), ("in a call", 1), ("between", 0), ("in a call", 1), ("after", 0)]
    stats = gate.stats()
    assert (stats.in_flight, stats.peak_in_flight) == (0, 1)


def test_without_a_cap_no_callback_is_added() -> None:
    with Admissions(UNLIMITED).scope():
        assert not any(type(c).__name__ == "Admit" for c in dspy.settings.callbacks)
    gate = Limiter(LocalSlots(1))
    with Admissions(gate).scope():
        assert type(dspy.settings.callbacks[0]).__name__ == "Admit"  # first: a waiting call has not started


def call_on_a_thread(lm: ScriptedLM) -> threading.Thread:
    """Call ``lm`` on a started thread in this thread's dspy callbacks (as dspy.Parallel hands them on)."""
    callbacks = dspy.settings.callbacks

    def call() -> None:
        with dspy.context(callbacks=callbacks):
            lm(prompt="x")

    thread = threading.Thread(target=call)
    thread.start()
    return thread


def test_waits_for_slots_are_not_latency_and_the_programs_own_time_is() -> None:
    clock = FakeClock()

    class Queued:
        """Every ticket comes after 30 s (each call waits behind other examples' calls)."""

        def acquire(self, timeout: float | None = None) -> object:
            clock.now += 30
            return Limiter(LocalSlots(1)).try_acquire()

    class Formats:
        """Formatting takes 2 s, then two LM calls of 1.5 s each."""

        def __init__(self) -> None:
            self.lm = ScriptedLM(lambda: setattr(clock, "now", clock.now + 1.5))

        def __call__(self, *, symptoms: str) -> dspy.Prediction:
            clock.now += 2
            self.lm(prompt=symptoms)
            self.lm(prompt=symptoms)
            return dspy.Prediction(diagnosis="allergy")

    record = run_one(Formats(), "p", EXAMPLE, gate=Queued(), clock=clock, sleep=clock.sleep)  # type: ignore[arg-type]
    assert record.latency_ms == pytest.approx(5_000)  # as a sequential run measures it; the 60 s of queue left out


def test_a_long_wait_for_the_first_slot_does_not_use_up_the_budget_of_a_retry() -> None:
    clock = FakeClock()
    calls: list[float] = []

    class SlowQueue:
        """The first ticket comes after 200 s, the next at once."""

        def acquire(self, timeout: float | None = None) -> object:
            if not calls:
                clock.now += 200
            return Limiter(LocalSlots(1)).try_acquire()

    def call() -> None:
        calls.append(clock.now)
        clock.now += 60
        if len(calls) == 1:
            raise ConnectionResetError("reset")

    class Program:
        lm = ScriptedLM(call)

        def __call__(self, *, symptoms: str) -> dspy.Prediction:
            self.lm(prompt=symptoms)
            return dspy.Prediction(diagnosis="allergy")

    policy = RetryPolicy(attempts=3, backoff_s=0.5, budget_s=300, call_timeout_s=120)
    record = run_one(Program(), "p", EXAMPLE, gate=SlowQueue(), retry=policy, clock=clock, sleep=clock.sleep)  # type: ignore[arg-type]
    # 60 s of a failed call + 0.5 s + a 120 s time-out fit in 300 s: the 200 s in the queue are not the example's.
    assert (record.attempts, record.error, record.predicted) == (2, None, "allergy")
    assert record.latency_ms == pytest.approx(120_500)


def test_a_call_past_the_deadline_is_stopped_before_it_is_sent() -> None:
    gate = Limiter(LocalSlots(1))
    held = gate.try_acquire()  # another example's call holds the only slot
    assert held is not None
    sent: list[str] = []
    lm = ScriptedLM(lambda: sent.append("sent"))
    admissions = Admissions(gate, deadline=0.0, clock=lambda: 1.0)
    with pytest.raises(SlotTimeout), admissions.scope():
        lm(prompt="x")
    assert sent == [] and admissions.waited_s == 0.0
    held.release(Outcome.ANSWERED)
    assert gate.stats().in_flight == 0


def test_a_broken_gate_fails_the_example_instead_of_sending_the_call_uncapped() -> None:
    class Broken:
        def acquire(self, timeout: float | None = None) -> object:
            raise FileNotFoundError("slot-0.lock: the session's slot directory went away")

    sent: list[str] = []

    class Program:
        lm = ScriptedLM(lambda: sent.append("sent"))

        def __call__(self, *, symptoms: str) -> dspy.Prediction:
            self.lm(prompt=symptoms)
            return dspy.Prediction(diagnosis="allergy")

    with pytest.raises(FileNotFoundError, match="slot directory went away"):
        run_one(Program(), "p", EXAMPLE, gate=Broken())  # type: ignore[arg-type]
    assert sent == []


def test_calls_from_threads_of_one_attempt_each_take_a_slot() -> None:
    gate = Limiter(LocalSlots(4))
    barrier = threading.Barrier(3, timeout=5)
    lm = ScriptedLM(barrier.wait)  # three calls in flight at once, or the barrier never opens
    with Admissions(gate).scope():
        threads = [call_on_a_thread(lm) for _ in range(3)]
        for thread in threads:
            thread.join(5)
    assert gate.stats().peak_in_flight == 3 and gate.stats().in_flight == 0


def test_a_429_from_the_lm_reaches_the_window_and_other_outcomes_do_not_shrink_it() -> None:
    assert outcome(None) is Outcome.ANSWERED
    assert outcome(LMRateLimitError(1.0)) is Outcome.RATE_LIMITED
    assert outcome(ConnectionResetError("reset")) is Outcome.FAILED
    gate = Limiter(LocalSlots(4))

    def limited() -> None:
        raise LMRateLimitError(0.0)

    with pytest.raises(LMRateLimitError), Admissions(gate).scope():
        ScriptedLM(limited)(prompt="x")
    assert gate.window.limit == 2 and gate.stats().rate_limited == 1


def test_admissions_left_behind_are_given_back() -> None:
    gate = Limiter(LocalSlots(2))
    admissions = Admissions(gate)
    with admissions.scope():
        admissions.start("a call whose end is never reported")
        assert gate.stats().in_flight == 1
    assert gate.stats().in_flight == 0


def test_a_call_still_running_on_another_thread_keeps_its_slot_until_it_ends() -> None:
    gate = Limiter(LocalSlots(2))
    release = threading.Event()
    lm = ScriptedLM(lambda: release.wait(5))
    with Admissions(gate).scope():
        thread = call_on_a_thread(lm)
        while gate.stats().in_flight == 0 and thread.is_alive():
            time.sleep(0.01)
    assert gate.stats().in_flight == 1  # the program returned; its straggling call is still in flight
    release.set()
    thread.join(5)
    assert gate.stats().in_flight == 0


def test_more_threads_than_slots_prepare_the_next_calls() -> None:
    assert prefetch_threads(16) == 24
    assert prefetch_threads(1) == 3
    assert all(prefetch_threads(n) > n for n in range(1, 64))
