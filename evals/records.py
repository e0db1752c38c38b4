"""Plain records that travel from the tests to the controller.

One :class:`ExampleRecord` is made per (program, example) call. Tests put them on
``item.user_properties`` as dicts (xdist serialises reports), and the controller
rebuilds them with :meth:`ExampleRecord.from_dict`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from evals.calls import LMCall


@dataclass(frozen=True)
class ExampleRecord:
    """The outcome of running one program on one example.

    Attributes:
        program: Name of the evaluated program (e.g. ``"zero_shot"``, ``"knn_few_shot"``).
        example_id: Stable id of the example within its split, e.g. ``"test-0042"``.
        symptoms: The patient's text as given to the program.
        gold: The true diagnosis.
        predicted: The diagnosis returned, or ``None`` when no valid label came back.
        latency_ms: Wall time of the whole example in milliseconds: every attempt and the waits
            between them, so that latency percentiles show what a caller would have waited.
        prompt_tokens: Prompt tokens the LM reported for the call(s).
        completion_tokens: Completion tokens the LM reported for the call(s).
        error: One readable line when the call failed or answered garbage, else ``None``.
        cached: True when every LM call was served from the response cache.
        attempts: Calls made for the example (1 when the first one answered).
        lm_down: Why the LM is clearly down ("connection refused", "unknown host",
            "credentials refused") when the last attempt failed that way, else ``None``.
        rate_limited: Calls of this example that the provider turned away with HTTP 429 (each was
            retried after its ``Retry-After`` within the example budget; included in ``attempts``).
        started_at: Epoch seconds when the example started (the start of its trace).
        cost_usd: What its LM calls cost as the provider reported it (0 for cache hits and local models).
        calls: Its last LM calls (rendered messages, raw completion), bounded in size; MLflow traces.
    """

    program: str
    example_id: str
    symptoms: str
    gold: str
    predicted: str | None
    latency_ms: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    cached: bool = False
    attempts: int = 1
    lm_down: str | None = None
    rate_limited: int = 0
    started_at: float = 0.0
    cost_usd: float = 0.0
    calls: tuple[LMCall, ...] = ()

    @property
    def correct(self) -> bool:
        return self.predicted == self.gold

    @property
    def invalid(self) -> bool:
        """No valid label came back (an LM error or an answer outside the 22 labels)."""
        return self.predicted is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExampleRecord:
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        values["calls"] = tuple(c if isinstance(c, LMCall) else LMCall.from_dict(c) for c in values.get("calls", ()))
        return cls(**values)


RECORDS_PROPERTY = "evals_records"
"""Key under which a test's records travel in ``item.user_properties``."""

STABILITY_PROPERTY = "evals_stability"
"""Key under which robustness tests send ``{"record": StabilityRecord dict, "text": perturbed text}``."""

EVALUATING_FIXTURES = ("evals_evaluate", "evals_stability")
"""Fixtures whose tests make LM calls and send records: the tests a session (and a merge) counts."""


def evaluates(item: Any) -> bool:
    """Whether a pytest item uses one of :data:`EVALUATING_FIXTURES` (its session ends with a report)."""
    fixtures = getattr(item, "fixturenames", ())
    return any(name in fixtures for name in EVALUATING_FIXTURES)
