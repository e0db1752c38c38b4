"""Run a DSPy program over examples and turn every call into an ExampleRecord.

A call that raises (LM error, time-out, unparseable answer) is retried with backoff
while the example's wall-clock budget allows another attempt, then recorded as an
error for that example; the run goes on. This is the only retry layer: the LM is built
with ``num_retries=0`` (:func:`evals.lm.spec.build_lm`). An answer outside the 22 labels is
recorded as invalid. A failure that says the LM is clearly down (connection refused,
unknown host, credentials refused) is marked on the record so that the session can stop.
An HTTP 429 (rate limited) is waited out as the provider asks and retried within the budget.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from evals.calls import CallRecorder, total_cost
from evals.data import Example
from evals.harness.admission import Admissions, GateFailed, SlotTimeout
from evals.harness.limiter import UNLIMITED, Gate, rate_limit_delay
from evals.labels import DIAGNOSIS_SET
from evals.records import ExampleRecord

MAX_ERROR_CHARS = 300
DEFAULT_BUDGET_S = 300.0
DEFAULT_CALL_TIMEOUT_S = 120.0
MAX_RATE_LIMIT_BACKOFF_S = 30.0
"""The longest wait after a 429 that named no Retry-After (the waits double from ``backoff_s``)."""

_REFUSED = ("connection refused", "actively refused")
_UNKNOWN_HOST = (
    "name or service not known",
    "nodename nor servname",
    "temporary failure in name resolution",
    "getaddrinfo failed",
    "no address associated with hostname",
)
TIMEOUT_HINT = "; raise --evals-timeout if the LM needs longer per call"
_CLIENT_TIMEOUT_ADVICE = re.compile(r"\s*;[^;]*\bTimeouts\(.*$")
_AUTH_TYPES = ("AuthenticationError", "PermissionDeniedError", "AuthError", "LMAuthError")


@dataclass(frozen=True)
class RetryPolicy:
    """Retries with exponential backoff, bounded in number and by a wall-clock budget per example.

    Attributes:
        attempts: The most calls made for one example.
        backoff_s: Wait before the second attempt; it doubles for each later one.
        budget_s: Wall-clock seconds for one example, every attempt and wait included.
        call_timeout_s: The longest one call may take (the LM's per-call timeout). Another attempt
            starts only if it could finish within the budget even if it took that long (or as long
            as the slowest attempt so far, when that was longer).
    """

    attempts: int = 3
    backoff_s: float = 0.5
    budget_s: float = DEFAULT_BUDGET_S
    call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be at least 1, found {self.attempts}")
        if not self.budget_s > 0:
            raise ValueError(f"RetryPolicy.budget_s must be positive, found {self.budget_s}")

    def delays(self) -> Iterator[float]:
        for attempt in range(self.attempts):
            yield 0.0 if attempt == 0 else self.backoff_s * 2 ** (attempt - 1)

    def allows(self, elapsed_s: float, delay_s: float, slowest_s: float = 0.0) -> bool:
        """Whether an attempt started after ``delay_s`` more seconds could still end within the budget."""
        worst = max(self.call_timeout_s, slowest_s)
        return elapsed_s + delay_s + worst <= self.budget_s

    def slot_wait_s(self, elapsed_s: float, slowest_s: float = 0.0) -> float:
        """The longest wait for a call slot after which an attempt could still end within the budget."""
        return max(0.0, self.budget_s - elapsed_s - max(self.call_timeout_s, slowest_s))


def run_examples(
    program: Callable[..., Any],
    program_name: str,
    examples: Iterable[Example],
    *,
    retry: RetryPolicy = RetryPolicy(),
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.perf_counter,
) -> list[ExampleRecord]:
    """Run ``program(symptoms=...)`` on every example and record the outcome of each."""
    return [run_one(program, program_name, example, retry=retry, sleep=sleep, clock=clock) for example in examples]


def run_one(
    program: Callable[..., Any],
    program_name: str,
    example: Example,
    *,
    retry: RetryPolicy = RetryPolicy(),
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.perf_counter,
    gate: Gate = UNLIMITED,
) -> ExampleRecord:
    """Run one example with retries within the budget; never raises for LM or parse failures.

    Each LM call of an attempt holds one admission of ``gate`` (the session's cap on LM calls in
    flight, :mod:`evals.harness.admission`): formatting the prompt and parsing the answer hold
    none. An HTTP 429 is retried after the ``Retry-After`` the provider asked for, without using
    up one of ``retry.attempts``, for as long as the budget allows; it is counted on the record
    (``rate_limited``). The record's ``latency_ms`` is the wall time of the whole example, every
    attempt and backoff wait included, less the waits for call slots (the session's queue, not
    the program); the budget counts the same time.
    """
    import dspy

    error: str | None = None
    down: str | None = None
    attempts = failures = rate_limited = 0
    slowest = delay = waited = 0.0
    started: float | None = None
    recorder, wall_start = CallRecorder(), time.time()  # this example's LM calls, for its MLflow trace

    def elapsed() -> float:
        return 0.0 if started is None else clock() - started - waited

    while True:
        if started is not None and not retry.allows(elapsed(), delay, slowest):
            break
        sleep(delay)
        deadline = None if started is None else clock() + retry.slot_wait_s(elapsed(), slowest)
        admissions = Admissions(gate, deadline, clock)
        attempt_started = clock()
        if started is None:
            started = attempt_started
        try:
            with admissions.scope(), dspy.track_usage() as usage, recorder.recording():
                prediction = program(symptoms=example.symptoms)
        except SlotTimeout:  # no slot came free early enough for the attempt to end within the budget
            waited += admissions.waited_s
            attempts += 1 if admissions.admitted else 0  # a later call of the attempt: its first ones were sent
            break
        except GateFailed as broken:  # not the LM's failure: the session's cap could not be kept
            raise broken.__cause__ or broken from None
        except Exception as exc:  # any LM/adapter failure becomes a recorded error
            attempts += 1
            waited += admissions.waited_s
            slowest = max(slowest, clock() - attempt_started - admissions.waited_s)
            after = rate_limit_delay(exc)
            error, down = error_line(exc), lm_down_reason(exc)
            if after is not None:
                rate_limited += 1
                delay = after or min(retry.backoff_s * 2 ** (rate_limited - 1), MAX_RATE_LIMIT_BACKOFF_S)
                continue
            failures += 1
            if failures >= retry.attempts:
                break
            delay = retry.backoff_s * 2 ** (failures - 1)
            continue
        attempts += 1
        waited += admissions.waited_s
        record = _record(program_name, example, prediction, elapsed() * 1000, _tokens(usage), attempts)
        return with_calls(replace(record, rate_limited=rate_limited), recorder, wall_start)
    failed = ExampleRecord(
        program_name,
        example.id,
        example.symptoms,
        example.diagnosis,
        None,
        elapsed() * 1000,
        error=error,
        attempts=attempts,
        lm_down=down,
        rate_limited=rate_limited,
    )
    return with_calls(failed, recorder, wall_start)


def with_calls(record: ExampleRecord, recorder: CallRecorder, started_at: float) -> ExampleRecord:
    """The record with its start time, its LM calls and what they cost (for its MLflow trace)."""
    calls = recorder.result()
    return replace(record, started_at=started_at, calls=calls, cost_usd=total_cost(calls))


def _record(
    program_name: str, example: Example, prediction: Any, latency_ms: float, tokens: tuple[int, int], attempts: int
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
        attempts=attempts,
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


def error_line(exc: BaseException) -> str:
    """:func:`one_line` for a record; a time-out names the option that sets the limit.

    The LM client's own advice names its internal setting (``Timeouts(read=...)``), which a
    user of the harness cannot set: that clause is replaced by the CLI option.
    """
    if not any(isinstance(link, TimeoutError) or "Timeout" in type(link).__name__ for link in _chain(exc)):
        return one_line(exc)
    lines = str(exc).strip().splitlines()
    message = _CLIENT_TIMEOUT_ADVICE.sub("", lines[0]) if lines else ""
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return f"{text[: MAX_ERROR_CHARS - len(TIMEOUT_HINT)]}{TIMEOUT_HINT}"


def lm_down_reason(exc: BaseException) -> str | None:
    """Why ``exc`` says the LM is clearly down, or ``None`` (a time-out or any other error is not).

    Clearly down: connection refused, unknown host (DNS), credentials refused (HTTP 401/403).
    The whole chain is read: litellm and the HTTP clients wrap the socket error.
    """
    for link in _chain(exc):
        text = str(link).lower()
        if isinstance(link, ConnectionRefusedError) or any(words in text for words in _REFUSED):
            return "connection refused"
        if isinstance(link, socket.gaierror) or any(words in text for words in _UNKNOWN_HOST):
            return "unknown host"
        if type(link).__name__ in _AUTH_TYPES or getattr(link, "status_code", None) in (401, 403):
            return "credentials refused"
    return None


def _chain(exc: BaseException, limit: int = 10) -> Iterator[BaseException]:
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen and len(seen) < limit:
        seen.add(id(link))
        yield link
        link = link.__cause__ or link.__context__
