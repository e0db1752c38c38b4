"""Unit tests of evals.harness.runner: records, retries with backoff, invalid answers and one_line."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import dspy
import pytest
from dspy.utils.dummies import DummyLM

from evals.data import Example
from evals.harness.runner import (
    MAX_ERROR_CHARS,
    RetryPolicy,
    lm_down_reason,
    one_line,
    run_examples,
    run_one,
)
from evals.records import ExampleRecord
from programs.signatures import Diagnose

EXAMPLES = (
    Example("test-0001", "itchy red rash after eating peanuts", "allergy"),
    Example("test-0002", "throbbing headache and light hurts my eyes", "migraine"),
    Example("test-0003", "fever with chills every other day", "malaria"),
)


class Sleeps:
    """A fake ``sleep`` that records the delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)

    @property
    def waits(self) -> list[float]:
        return [d for d in self.delays if d > 0]


class Flaky:
    """A program that raises ``failures`` times per example, then answers ``answer``."""

    def __init__(
        self,
        failures: int,
        answer: str | None = "allergy",
        error: Callable[[], Exception] = lambda: RuntimeError("LM exploded\nTraceback line two"),
    ) -> None:
        self.failures, self.answer, self.error = failures, answer, error
        self.calls: dict[str, int] = {}

    def __call__(self, *, symptoms: str) -> dspy.Prediction:
        self.calls[symptoms] = self.calls.get(symptoms, 0) + 1
        if self.calls[symptoms] <= self.failures:
            raise self.error()
        return dspy.Prediction(diagnosis=self.answer)


def test_records_from_dummy_lm() -> None:
    answers = {
        EXAMPLES[0].symptoms: {"diagnosis": "allergy"},
        EXAMPLES[1].symptoms: {"diagnosis": "migraine"},
        EXAMPLES[2].symptoms: {"diagnosis": "dengue"},
    }
    lm = DummyLM(answers, adapter=dspy.JSONAdapter())
    with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
        records = run_examples(dspy.Predict(Diagnose), "zero_shot", EXAMPLES, sleep=Sleeps())
    assert [(r.program, r.example_id, r.gold) for r in records] == [("zero_shot", e.id, e.diagnosis) for e in EXAMPLES]
    assert [r.predicted for r in records] == ["allergy", "migraine", "dengue"]
    assert [r.correct for r in records] == [True, True, False]
    assert all(r.error is None and not r.invalid and r.latency_ms >= 0 for r in records)
    assert [r.symptoms for r in records] == [e.symptoms for e in EXAMPLES]
    assert len(lm.history) == 3


@pytest.mark.parametrize("attempts", [1, 2, 4])
def test_a_failing_program_gives_one_error_record_per_example(attempts: int) -> None:
    program, sleeps = Flaky(failures=10), Sleeps()
    policy = RetryPolicy(attempts=attempts, backoff_s=0.25)
    records = run_examples(program, "zero_shot", EXAMPLES, retry=policy, sleep=sleeps)
    assert len(records) == len(EXAMPLES)
    assert program.calls == {e.symptoms: attempts for e in EXAMPLES}
    for record, example in zip(records, EXAMPLES, strict=True):
        assert record.example_id == example.id
        assert record.predicted is None and record.invalid and not record.correct
        assert record.error == "RuntimeError: LM exploded"
    expected_waits = [0.25 * 2**i for i in range(attempts - 1)]
    assert sleeps.waits == expected_waits * len(EXAMPLES)


def test_default_policy_retries() -> None:
    program, sleeps = Flaky(failures=10), Sleeps()
    record = run_one(program, "zero_shot", EXAMPLES[0], sleep=sleeps)
    assert program.calls[EXAMPLES[0].symptoms] == RetryPolicy().attempts >= 2
    assert record.error == "RuntimeError: LM exploded"
    assert len(sleeps.waits) == RetryPolicy().attempts - 1


def test_fails_once_then_succeeds() -> None:
    program, sleeps = Flaky(failures=1, answer="allergy"), Sleeps()
    record = run_one(program, "zero_shot", EXAMPLES[0], retry=RetryPolicy(attempts=3, backoff_s=2.0), sleep=sleeps)
    assert program.calls[EXAMPLES[0].symptoms] == 2
    assert (record.predicted, record.error, record.correct) == ("allergy", None, True)
    assert sleeps.waits == [2.0]


def test_error_from_the_last_attempt_is_kept() -> None:
    errors = iter([TimeoutError("first try timed out"), ValueError("second: bad json")])
    program = Flaky(failures=2, error=lambda: next(errors))
    record = run_one(program, "p", EXAMPLES[0], retry=RetryPolicy(attempts=2, backoff_s=0), sleep=Sleeps())
    assert record.error == "ValueError: second: bad json"


@pytest.mark.parametrize("answer", ["the flu", "Allergy and migraine", ""])
def test_answer_outside_the_labels(answer: str) -> None:
    program = Flaky(failures=0, answer=answer)
    record = run_one(program, "zero_shot", EXAMPLES[0], sleep=Sleeps())
    assert record.predicted is None and record.invalid
    assert record.error is not None and repr(answer) in record.error
    assert program.calls[EXAMPLES[0].symptoms] == 1, "a wrong answer is recorded, not retried"


def test_missing_answer_is_invalid() -> None:
    record = run_one(lambda symptoms: dspy.Prediction(reasoning="no answer"), "p", EXAMPLES[0], sleep=Sleeps())
    assert record.predicted is None and record.error


def test_answer_is_normalised_to_a_label() -> None:
    record = run_one(Flaky(failures=0, answer="  Allergy "), "p", EXAMPLES[0], sleep=Sleeps())
    assert (record.predicted, record.error, record.correct) == ("allergy", None, True)


def test_long_garbage_answer_is_cut_in_the_error() -> None:
    record = run_one(Flaky(failures=0, answer="x" * 5000), "p", EXAMPLES[0], sleep=Sleeps())
    assert record.error is not None and len(record.error) < 200


def test_zero_attempts_is_refused_or_recorded() -> None:
    try:
        record = run_one(Flaky(failures=0), "p", EXAMPLES[0], retry=RetryPolicy(attempts=0), sleep=Sleeps())
    except ValueError:
        return  # refusing the policy up front is fine
    assert record.invalid and record.error


# --- one_line --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ValueError("bad value"), "ValueError: bad value"),
        (RuntimeError("first line\nsecond line\nthird"), "RuntimeError: first line"),
        (KeyError("diagnosis"), "KeyError: 'diagnosis'"),
        (TimeoutError(), "TimeoutError"),
        (ValueError("\n  \nreal message"), "ValueError: real message"),
    ],
)
def test_one_line(exc: BaseException, expected: str) -> None:
    assert one_line(exc) == expected


def test_one_line_truncates() -> None:
    text = one_line(ValueError("x" * 10_000))
    assert text.startswith("ValueError: xxx")
    assert len(text) == MAX_ERROR_CHARS
    assert "\n" not in one_line(ValueError("x" * 10_000 + "\nmore"))


def test_retry_policy_delays() -> None:
    assert list(RetryPolicy(attempts=4, backoff_s=0.5).delays()) == [0.0, 0.5, 1.0, 2.0]
    assert list(RetryPolicy(attempts=1).delays()) == [0.0]


def test_records_round_trip() -> None:
    from evals.records import ExampleRecord

    record = run_one(Flaky(failures=1), "p", EXAMPLES[0], retry=RetryPolicy(attempts=2, backoff_s=0), sleep=Sleeps())
    assert ExampleRecord.from_dict(record.to_dict()) == record


# --- the example budget, attempts and total latency --------------------------------------------


class FakeClock:
    """A clock that only moves when the program or ``sleep`` says time passed (no real waiting)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.delays: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.now += seconds


class Slow:
    """A program whose every call takes ``seconds`` on the fake clock, then raises (or answers)."""

    def __init__(
        self,
        clock: FakeClock,
        seconds: float,
        failures: int = 10**6,
        error: Callable[[], Exception] = lambda: TimeoutError("the LM did not answer in time"),
    ) -> None:
        self.clock, self.seconds, self.failures, self.error = clock, seconds, failures, error
        self.calls = 0

    def __call__(self, *, symptoms: str) -> dspy.Prediction:
        self.calls += 1
        self.clock.now += self.seconds
        if self.calls <= self.failures:
            raise self.error()
        return dspy.Prediction(diagnosis="allergy")


def run_timed(program: Slow, clock: FakeClock, policy: RetryPolicy) -> ExampleRecord:
    return run_one(program, "p", EXAMPLES[0], retry=policy, sleep=clock.sleep, clock=clock)


def test_budget_bounds_the_total_time_of_an_always_timing_out_lm() -> None:
    clock = FakeClock()
    program = Slow(clock, seconds=40)  # each call runs into a 40 s per-call timeout
    record = run_timed(program, clock, RetryPolicy(attempts=10, backoff_s=0.5, budget_s=100, call_timeout_s=40))
    # 40 s, wait 0.5 s, 40 s: a third attempt (after 1 s more) could end at 121.5 s > 100 s.
    assert program.calls == record.attempts == 2
    assert record.latency_ms == pytest.approx(80_500)
    assert record.latency_ms <= 100_000
    assert record.error is not None and record.invalid
    assert record.error.startswith("TimeoutError: the LM did not answer in time")


@pytest.mark.parametrize(
    ("budget", "timeout", "seconds"), [(300, 120, 120), (50, 10, 3), (1000, 60, 59.9), (30, 30, 30)]
)
def test_total_time_never_exceeds_the_budget(budget: float, timeout: float, seconds: float) -> None:
    clock = FakeClock()
    record = run_timed(Slow(clock, seconds), clock, RetryPolicy(attempts=50, budget_s=budget, call_timeout_s=timeout))
    assert record.latency_ms <= budget * 1000
    assert record.attempts >= 1


def test_a_slow_call_without_a_timeout_stops_the_retries_by_its_own_duration() -> None:
    clock = FakeClock()
    program = Slow(clock, seconds=70)  # an in-process engine that ignores the per-call timeout
    record = run_timed(program, clock, RetryPolicy(attempts=5, backoff_s=0.5, budget_s=100, call_timeout_s=10))
    assert program.calls == record.attempts == 1
    assert record.latency_ms == pytest.approx(70_000)


def test_fast_failures_use_every_attempt_within_the_budget() -> None:
    clock = FakeClock()
    program = Slow(clock, seconds=0.01, error=lambda: ConnectionResetError("reset by peer"))
    record = run_timed(program, clock, RetryPolicy(attempts=3, backoff_s=0.5, budget_s=300, call_timeout_s=120))
    assert program.calls == record.attempts == 3
    assert clock.delays == [0.0, 0.5, 1.0]


def test_latency_is_the_total_of_every_attempt_and_wait() -> None:
    clock = FakeClock()
    program = Slow(clock, seconds=2.0, failures=1)
    record = run_timed(program, clock, RetryPolicy(attempts=3, backoff_s=0.5, budget_s=300, call_timeout_s=10))
    assert (record.predicted, record.error, record.attempts) == ("allergy", None, 2)
    assert record.latency_ms == pytest.approx(4_500)  # 2 s + 0.5 s + 2 s, not the last attempt's 2 s


def test_an_answer_at_once_is_one_attempt() -> None:
    clock = FakeClock()
    record = run_timed(Slow(clock, seconds=1.5, failures=0), clock, RetryPolicy())
    assert (record.attempts, record.latency_ms) == (1, pytest.approx(1_500))


def test_the_default_policy_bounds_an_example_by_the_default_budget() -> None:
    from evals.config.settings import OPTIONS_BY_NAME

    policy = RetryPolicy()
    assert policy.budget_s == float(OPTIONS_BY_NAME["example-budget"].default or 0)
    assert policy.call_timeout_s == float(OPTIONS_BY_NAME["timeout"].default or 0)


def test_attempts_and_lm_down_round_trip() -> None:
    from evals.records import ExampleRecord

    clock = FakeClock()
    record = run_timed(
        Slow(clock, 0.1, error=lambda: ConnectionRefusedError(111, "Connection refused")),
        clock,
        RetryPolicy(attempts=2, backoff_s=0),
    )
    assert (record.attempts, record.lm_down) == (2, "connection refused")
    assert ExampleRecord.from_dict(record.to_dict()) == record
    old = {k: v for k, v in record.to_dict().items() if k not in ("attempts", "lm_down")}
    assert ExampleRecord.from_dict(old).attempts == 1  # records written before the field still load


# --- when is the LM clearly down --------------------------------------------------------------


def chained(outer: Exception, inner: BaseException) -> Exception:
    """``outer`` as if raised ``from inner`` (how the LM clients wrap socket errors)."""
    outer.__cause__ = inner
    return outer


class AuthenticationError(Exception):
    """Named like litellm's and openai's."""


class APIStatusError(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"status {status_code}")
        self.status_code = status_code


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (ConnectionRefusedError(111, "Connection refused"), "connection refused"),
        (
            chained(RuntimeError("Connection error."), ConnectionRefusedError(111, "Connection refused")),
            "connection refused",
        ),
        (OSError("[Errno 111] Connection refused"), "connection refused"),
        (socket.gaierror(-2, "Name or service not known"), "unknown host"),
        (
            chained(
                RuntimeError("APIConnectionError: Connection error."),
                OSError("[Errno -3] Temporary failure in name resolution"),
            ),
            "unknown host",
        ),
        (AuthenticationError("Incorrect API key provided"), "credentials refused"),
        (APIStatusError(401), "credentials refused"),
        (APIStatusError(403), "credentials refused"),
        (APIStatusError(500), None),
        (TimeoutError("timed out"), None),
        (chained(RuntimeError("Connection error."), TimeoutError("read timed out")), None),
        (ConnectionResetError("reset by peer"), None),
        (ValueError("Expecting value"), None),
    ],
)
def test_lm_down_reason(exc: BaseException, reason: str | None) -> None:
    assert lm_down_reason(exc) == reason


def test_a_timing_out_lm_is_not_marked_down() -> None:
    clock = FakeClock()
    record = run_timed(Slow(clock, 5), clock, RetryPolicy(attempts=2, budget_s=60, call_timeout_s=10))
    assert record.error is not None and record.lm_down is None


def test_a_time_out_names_the_cli_option_not_the_clients_setting() -> None:
    from evals.harness.runner import TIMEOUT_HINT, error_line

    class LMTransportError(Exception):
        pass

    exc = chained(
        LMTransportError(
            "[openai/m] read timed out waiting for headers: no bytes for 2s; this is lm15's "
            "read timeout, not a server failure — raise it with Timeouts(read=...) if the "
            "model needs longer"
        ),
        TimeoutError("timed out"),
    )
    assert (
        error_line(exc)
        == f"LMTransportError: [openai/m] read timed out waiting for headers: no bytes for 2s{TIMEOUT_HINT}"
    )
    assert "--evals-timeout" in TIMEOUT_HINT
    assert error_line(ValueError("bad json")) == "ValueError: bad json"
    assert len(error_line(TimeoutError("x" * 5000))) == MAX_ERROR_CHARS


def test_stability_runs_within_the_users_timeout_and_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The robustness path honours --evals-timeout and --evals-example-budget, as evaluate does."""
    import evals.harness.runner as runner_module
    from evals.config.settings import resolve
    from evals.harness.resources import Harness

    settings = resolve({}, {}, {"EVALS_TIMEOUT": "7", "EVALS_EXAMPLE_BUDGET": "9"}, tmp_path)
    harness = Harness(settings)
    monkeypatch.setattr(Harness, "program", lambda self, name: object())
    policies: list[RetryPolicy] = []

    def fake_run_one(module: object, program: str, example: Example, **kwargs: object) -> ExampleRecord:
        policies.append(kwargs["retry"])  # type: ignore[arg-type]
        return ExampleRecord(program, example.id, example.symptoms, example.diagnosis, example.diagnosis, 1.0)

    monkeypatch.setattr(runner_module, "run_one", fake_run_one)
    harness.stability("zero_shot", Example("test-0001", "itchy rash", "allergy"), "itchy  rash", ("whitespace",))

    assert policies == [harness.retry, harness.retry]
    assert (policies[0].budget_s, policies[0].call_timeout_s) == (9.0, 7.0)
