"""Unit tests of evals.runner: records, retries with backoff, invalid answers and one_line."""

from __future__ import annotations

from collections.abc import Callable
import dspy
import pytest
from dspy.utils.dummies import DummyLM

from evals.data import Example
from evals.runner import MAX_ERROR_CHARS, RetryPolicy, one_line, run_examples, run_one
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

    def __init__(self, failures: int, answer: str | None = "allergy",
                 error: Callable[[], Exception] = lambda: RuntimeError("LM exploded\nTraceback line two")) -> None:
        self.failures, self.answer, self.error = failures, answer, error
        self.calls: dict[str, int] = {}

    def __call__(self, *, symptoms: str) -> dspy.Prediction:
        self.calls[symptoms] = self.calls.get(symptoms, 0) + 1
        if self.calls[symptoms] <= self.failures:
            raise self.error()
        return dspy.Prediction(diagnosis=self.answer)


def test_records_from_dummy_lm() -> None:
    answers = {EXAMPLES[0].symptoms: {"diagnosis": "allergy"},
               EXAMPLES[1].symptoms: {"diagnosis": "migraine"},
               EXAMPLES[2].symptoms: {"diagnosis": "dengue"}}
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
