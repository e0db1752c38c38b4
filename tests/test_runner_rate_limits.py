"""The runner's 429 path: Retry-After honoured, retried within the budget, counted; the gate's tickets."""

from __future__ import annotations

from collections.abc import Callable

import dspy
import pytest
from dspy.utils.callback import with_callbacks

from evals.data import Example
from evals.harness.limiter import UNLIMITED, Limiter, LocalSlots
from evals.harness.runner import MAX_RATE_LIMIT_BACKOFF_S, RetryPolicy, run_one
from evals.records import ExampleRecord
from tests.test_runner import FakeClock

EXAMPLE = Example("test-0001", "itchy red rash after eating peanuts", "allergy")


class LMRateLimitError(Exception):
    """Like dspy's: ``retry_after`` from the provider's Retry-After header (None when it sent none)."""

    def __init__(self, retry_after: float | None = 2.0) -> None:
        super().__init__("[openai/fake] Rate limit reached for requests")
        self.retry_after = retry_after


class ScriptedLM(dspy.BaseLM):
    """An LM whose every call is the program's next scripted step (dspy's callbacks see it as an LM call)."""

    def __init__(self, step: Callable[[], object]) -> None:
        super().__init__(model="scripted")
        self.step = step

    @with_callbacks
    def __call__(self, prompt: str | None = None, messages: object = None, **kwargs: object) -> list[str]:
        self.step()
        return ['{"diagnosis": "allergy"}']


class Scripted:
    """Each LM call takes ``seconds`` on the fake clock and raises the next scripted error (then answers)."""

    def __init__(
        self,
        clock: FakeClock,
        errors: list[Callable[[], Exception]],
        seconds: float = 0.01,
        forever: Callable[[], Exception] | None = None,
    ) -> None:
        self.clock, self.errors, self.seconds, self.forever = clock, list(errors), seconds, forever
        self.calls = 0
        self.lm = ScriptedLM(self.step)

    def __call__(self, *, symptoms: str) -> dspy.Prediction:
        self.lm(prompt=symptoms)
        return dspy.Prediction(diagnosis="allergy")

    def step(self) -> None:
        self.calls += 1
        self.clock.now += self.seconds
        if self.errors:
            raise self.errors.pop(0)()
        if self.forever is not None:
            raise self.forever()


def run(program: Scripted, clock: FakeClock, policy: RetryPolicy, **kwargs: object) -> ExampleRecord:
    return run_one(program, "p", EXAMPLE, retry=policy, sleep=clock.sleep, clock=clock, **kwargs)  # type: ignore[arg-type]


def test_429s_wait_retry_after_and_do_not_use_up_the_attempts() -> None:
    clock = FakeClock()
    program = Scripted(clock, [LMRateLimitError] * 5)
    record = run(program, clock, RetryPolicy(attempts=2, backoff_s=0.5))
    assert (record.predicted, record.error) == ("allergy", None)
    assert (record.attempts, record.rate_limited, program.calls) == (6, 5, 6)
    assert [d for d in clock.delays if d] == [2.0] * 5
    assert record.latency_ms == pytest.approx((6 * 0.01 + 5 * 2.0) * 1000)


def test_a_429_then_other_failures_still_stop_at_the_attempts() -> None:
    clock = FakeClock()
    program = Scripted(clock, [LMRateLimitError], forever=lambda: ConnectionResetError("reset by peer"))
    record = run(program, clock, RetryPolicy(attempts=2, backoff_s=0.5))
    assert (record.attempts, record.rate_limited) == (3, 1)  # one 429, then 2 failed attempts
    assert record.error == "ConnectionResetError: reset by peer"
    assert [d for d in clock.delays if d] == [2.0, 0.5]


def test_rate_limited_forever_is_an_error_only_when_the_budget_is_spent() -> None:
    clock = FakeClock()
    program = Scripted(clock, [], forever=lambda: LMRateLimitError(5.0))
    policy = RetryPolicy(attempts=3, backoff_s=0.5, budget_s=100, call_timeout_s=10)
    record = run(program, clock, policy)
    # Another try after 5 s must be able to end within 100 s even if it took the 10 s time-out.
    assert record.latency_ms <= 100_000
    assert record.latency_ms + 5_000 + 10_000 > 100_000
    assert record.attempts == record.rate_limited == program.calls > 3
    assert record.error is not None and record.error.startswith("LMRateLimitError: [openai/fake] Rate limit")
    assert record.predicted is None and record.invalid


def test_a_429_without_retry_after_backs_off_exponentially_up_to_a_cap() -> None:
    clock = FakeClock()
    program = Scripted(clock, [lambda: LMRateLimitError(None)] * 9)
    record = run(program, clock, RetryPolicy(attempts=1, backoff_s=0.5, budget_s=10_000, call_timeout_s=10))
    assert record.error is None and record.rate_limited == 9
    assert [d for d in clock.delays if d] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert MAX_RATE_LIMIT_BACKOFF_S == 30.0


def test_each_attempt_holds_a_ticket_and_a_429_tells_the_limiter() -> None:
    clock = FakeClock()
    gate = Limiter(LocalSlots(4), clock=clock, sleep=clock.sleep)
    seen: list[int] = []

    class Watching(Scripted):
        def step(self) -> None:
            seen.append(gate.stats().in_flight)
            super().step()

    record = run(Watching(clock, [LMRateLimitError] * 2), clock, RetryPolicy(), gate=gate)
    assert record.error is None and record.rate_limited == 2
    assert seen == [1, 1, 1]  # one ticket per call, released while waiting out Retry-After
    stats = gate.stats()
    assert (stats.in_flight, stats.rate_limited) == (0, 2)
    assert gate.window.limit < 4  # halved by the first 429, then grown by one answer


def test_no_retry_when_no_slot_comes_free_within_the_budget() -> None:
    clock = FakeClock()
    busy = Limiter(LocalSlots(1), clock=clock, sleep=clock.sleep)

    class LastSlotTakenAfterTheFirstCall:
        """The first call gets a slot; meanwhile another example's call takes the only one, and never ends."""

        def __init__(self) -> None:
            self.calls = 0

        def acquire(self, timeout: float | None = None) -> object:
            self.calls += 1
            if self.calls == 1:
                return UNLIMITED.acquire()
            assert busy.try_acquire() is not None or busy.stats().in_flight == 1
            return busy.acquire(timeout)

    policy = RetryPolicy(attempts=3, backoff_s=0.5, budget_s=60, call_timeout_s=10)
    record = run(
        Scripted(clock, [lambda: ConnectionResetError("reset")]), clock, policy, gate=LastSlotTakenAfterTheFirstCall()
    )
    assert record.attempts == 1 and record.error == "ConnectionResetError: reset"
    # The wait for a slot gave up once a call started later could no longer end within the budget.
    assert 60 - 10 - 1 <= clock.now - 1000 <= 60 - 10 + 0.1
    assert record.latency_ms <= 60_000


def test_records_without_the_field_still_load() -> None:
    clock = FakeClock()
    record = run(Scripted(clock, [LMRateLimitError]), clock, RetryPolicy())
    assert ExampleRecord.from_dict(record.to_dict()) == record
    old = {k: v for k, v in record.to_dict().items() if k != "rate_limited"}
    assert ExampleRecord.from_dict(old).rate_limited == 0
