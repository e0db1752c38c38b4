"""Run a DSPy program over examples and turn every call into an ExampleRecord.

A call that raises (LM error, time-out, unparseable answer) is retried a bounded
number of times with backoff, then recorded as an error for that example; the run
goes on. An answer outside the 22 labels is recorded as invalid.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from evals.data import Example
from evals.labels import DIAGNOSIS_SET
from evals.records import ExampleRecord

MAX_ERROR_CHARS = 300


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff."""

    attempts: int = 2
    backoff_s: float = 0.5

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be at least 1, found {self.attempts}")

    def delays(self) -> Iterator[float]:
        for attempt in range(self.attempts):
            yield 0.0 if attempt == 0 else self.backoff_s * 2 ** (attempt - 1)


def run_examples(
    program: Callable[..., Any],
    program_name: str,
    examples: Iterable[Example],
    *,
    retry: RetryPolicy = RetryPolicy(),
    sleep: Callable[[float], None] = time.sleep,
) -> list[ExampleRecord]:
    """Run ``program(symptoms=...)`` on every example and record the outcome of each."""
    return [run_one(program, program_name, example, retry=retry, sleep=sleep) for example in examples]


def run_one(
    program: Callable[..., Any],
    program_name: str,
    example: Example,
    *,
    retry: RetryPolicy = RetryPolicy(),
    sleep: Callable[[float], None] = time.sleep,
) -> ExampleRecord:
    """Run one example with retries; never raises for LM or parse failures."""
    import dspy

    error: str | None = None
    for delay in retry.delays():
        sleep(delay)
        started = time.perf_counter()
        try:
            with dspy.track_usage() as usage:
                prediction = program(symptoms=example.symptoms)
        except Exception as exc:  # any LM/adapter failure becomes a recorded error
            error = one_line(exc)
            latency_ms = (time.perf_counter() - started) * 1000
            continue
        latency_ms = (time.perf_counter() - started) * 1000
        return _record(program_name, example, prediction, latency_ms, _tokens(usage))
    return ExampleRecord(program_name, example.id, example.symptoms, example.diagnosis, None, latency_ms, error=error)


def _record(
    program_name: str, example: Example, prediction: Any, latency_ms: float, tokens: tuple[int, int]
) -> ExampleRecord:
    answer = getattr(prediction, "diagnosis", None)
    label = str(answer).strip().lower() if answer is not None else None
    valid = label in DIAGNOSIS_SET
    return ExampleRecord(
        program=program_name,
        example_id=example.id,
        symptoms=example.symptoms,
        gold=example.diagnosis,
        predicted=label if valid else None,
        latency_ms=latency_ms,
        prompt_tokens=tokens[0],
        completion_tokens=tokens[1],
        error=None if valid else f"answer outside the 22 labels: {str(answer)[:80]!r}",
        cached=tokens == (0, 0),
    )


def _tokens(usage: Any) -> tuple[int, int]:
    prompt = completion = 0
    for entry in usage.get_total_tokens().values():
        prompt += int(entry.get("prompt_tokens") or 0)
        completion += int(entry.get("completion_tokens") or 0)
    return prompt, completion


def one_line(exc: BaseException) -> str:
    """Return ``Type: first line of the message``, bounded in length."""
    text = str(exc).strip().splitlines()
    message = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    return message[:MAX_ERROR_CHARS]
