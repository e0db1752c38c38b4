"""Aggregate per-example records into per-program metrics (pure functions).

Scoring one example (``ExampleRecord.correct``) and aggregating many (this module)
are separate, as in inspect_ai. All values are on a 0-1 scale.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from itertools import groupby
from typing import Any

import numpy as np

from evals.labels import DIAGNOSES, slug, unknown_label_message
from evals.records import ExampleRecord

INVALID = "(invalid)"
"""Column name of the confusion matrix for answers that were no valid label."""


@dataclass(frozen=True)
class DiagnosisMetrics:
    """Per-diagnosis scores of one program."""

    diagnosis: str
    support: int
    predicted: int
    precision: float
    recall: float
    f1: float


@dataclass(frozen=True)
class ProgramMetrics:
    """Everything aggregated for one program over its records.

    ``confusion[i][j]`` counts examples of gold ``DIAGNOSES[i]`` predicted as
    ``DIAGNOSES[j]``; the last column (index 22) counts invalid answers.
    """

    program: str
    n: int
    accuracy: float
    macro_f1: float
    invalid_rate: float
    error_rate: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_max_ms: float
    prompt_tokens: int
    completion_tokens: int
    per_diagnosis: dict[str, DiagnosisMetrics]
    confusion: tuple[tuple[int, ...], ...]
    cost_usd: float = 0.0  # what the LM calls cost, as the provider reported it (0 for cache hits, local models)
    rate_limited: int = 0  # calls turned away with HTTP 429 (then retried)

    @property
    def confusion_columns(self) -> tuple[str, ...]:
        return (*DIAGNOSES, INVALID)


def aggregate(records: Iterable[ExampleRecord]) -> dict[str, ProgramMetrics]:
    """Aggregate records into one :class:`ProgramMetrics` per program.

    Records are sorted by ``(program, example_id)`` first, so the result is identical
    whatever order they arrived in (``-n 0`` and ``-n 2`` give the same metrics).

    Args:
        records: Any number of records, of any programs, in any order.

    Returns:
        Metrics keyed by program name, in sorted order. A program without records has
        no entry.

    Raises:
        ValueError: When a ``(program, example_id)`` pair occurs twice, or a gold or
            predicted label is not one of the 22 diagnoses.
    """
    ordered = sorted(records, key=lambda r: (r.program, r.example_id))
    for before, after in zip(ordered, ordered[1:]):
        if (before.program, before.example_id) == (after.program, after.example_id):
            raise ValueError(f"duplicate record for program {after.program!r}, example {after.example_id!r}")
    return {
        program: _program_metrics(program, list(group)) for program, group in groupby(ordered, key=lambda r: r.program)
    }


def _confusion(records: Sequence[ExampleRecord]) -> tuple[tuple[int, ...], ...]:
    """Count gold x predicted; an invalid answer goes to the last column."""
    index = {diagnosis: i for i, diagnosis in enumerate(DIAGNOSES)}
    counts = [[0] * (len(DIAGNOSES) + 1) for _ in DIAGNOSES]
    for record in records:
        if record.gold not in index:
            raise ValueError(f"example {record.example_id!r}: {unknown_label_message(record.gold)}")
        if record.predicted is not None and record.predicted not in index:
            raise ValueError(f"example {record.example_id!r}: {unknown_label_message(record.predicted)}")
        column = len(DIAGNOSES) if record.predicted is None else index[record.predicted]
        counts[index[record.gold]][column] += 1
    return tuple(tuple(row) for row in counts)


def _per_diagnosis(confusion: tuple[tuple[int, ...], ...]) -> dict[str, DiagnosisMetrics]:
    """Precision, recall and F1 of every diagnosis, in ``DIAGNOSES`` order."""
    result: dict[str, DiagnosisMetrics] = {}
    for i, diagnosis in enumerate(DIAGNOSES):
        hits = confusion[i][i]
        support = sum(confusion[i])  # includes invalid answers: they count as misses
        predicted = sum(row[i] for row in confusion)
        precision = hits / predicted if predicted else 0.0
        recall = hits / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        result[diagnosis] = DiagnosisMetrics(diagnosis, support, predicted, precision, recall, f1)
    return result


def _program_metrics(program: str, records: Sequence[ExampleRecord]) -> ProgramMetrics:
    """Aggregate the (sorted, non-empty) records of one program.

    ``macro_f1`` is the mean F1 over the diagnoses with support > 0 only: a diagnosis
    absent from the evaluated split says nothing about the program, so it neither
    drags the mean down (as a 0.0 would) nor is it guessed.
    """
    n = len(records)
    confusion = _confusion(records)
    per_diagnosis = _per_diagnosis(confusion)
    supported = [m.f1 for m in per_diagnosis.values() if m.support > 0]
    latencies = np.asarray([r.latency_ms for r in records], dtype=float)
    p50, p95 = np.percentile(latencies, [50, 95], method="linear")
    return ProgramMetrics(
        program=program,
        n=n,
        accuracy=sum(r.correct for r in records) / n,
        macro_f1=sum(supported) / len(supported) if supported else 0.0,
        invalid_rate=sum(r.invalid for r in records) / n,
        error_rate=sum(r.error is not None for r in records) / n,
        latency_p50_ms=float(p50),
        latency_p95_ms=float(p95),
        latency_max_ms=float(latencies.max()),
        prompt_tokens=sum(r.prompt_tokens for r in records),
        completion_tokens=sum(r.completion_tokens for r in records),
        per_diagnosis=per_diagnosis,
        confusion=confusion,
        cost_usd=sum(r.cost_usd for r in records),
        rate_limited=sum(r.rate_limited for r in records),
    )


def flat_metrics(m: ProgramMetrics) -> dict[str, float]:
    """Return MLflow-ready ``name -> value`` pairs of one program.

    Per-diagnosis values (``recall.<slug>``, ``precision.<slug>``, ``f1.<slug>``,
    ``support.<slug>``) are given only for diagnoses with support > 0.
    """
    flat: dict[str, float] = {
        "n": float(m.n),
        "accuracy": m.accuracy,
        "macro_f1": m.macro_f1,
        "invalid_rate": m.invalid_rate,
        "error_rate": m.error_rate,
        "latency_p50_ms": m.latency_p50_ms,
        "latency_p95_ms": m.latency_p95_ms,
        "latency_max_ms": m.latency_max_ms,
        "prompt_tokens": float(m.prompt_tokens),
        "completion_tokens": float(m.completion_tokens),
        "cost_usd": m.cost_usd,
        "cost_per_example_usd": m.cost_usd / m.n if m.n else 0.0,
        "rate_limited": float(m.rate_limited),
    }
    for d in m.per_diagnosis.values():
        if d.support > 0:
            name = slug(d.diagnosis)
            flat[f"recall.{name}"] = d.recall
            flat[f"precision.{name}"] = d.precision
            flat[f"f1.{name}"] = d.f1
            flat[f"support.{name}"] = float(d.support)
    return flat


def worst_diagnoses(m: ProgramMetrics, k: int = 5) -> list[DiagnosisMetrics]:
    """Return up to ``k`` diagnoses with support > 0, lowest recall first (ties by name)."""
    supported = [d for d in m.per_diagnosis.values() if d.support > 0]
    return sorted(supported, key=lambda d: (d.recall, d.diagnosis))[:k]


def metrics_to_dict(m: ProgramMetrics) -> dict[str, Any]:
    """Return a JSON-serialisable dict of ``m`` (tuples become lists)."""
    data = asdict(m)
    data["confusion"] = [list(row) for row in m.confusion]
    return data


def metrics_from_dict(d: Mapping[str, Any]) -> ProgramMetrics:
    """Rebuild :class:`ProgramMetrics` from :func:`metrics_to_dict` output (or its JSON).

    Raises:
        ValueError: When the confusion matrix is not 22 rows of 23 counts.
    """
    confusion = tuple(tuple(int(c) for c in row) for row in d["confusion"])
    if len(confusion) != len(DIAGNOSES) or any(len(r) != len(DIAGNOSES) + 1 for r in confusion):
        raise ValueError(f"confusion must be {len(DIAGNOSES)} rows of {len(DIAGNOSES) + 1} counts")
    # Bundles written before a scalar existed lack it: its default stands.
    skip = ("per_diagnosis", "confusion")
    scalars = {f.name: d[f.name] for f in fields(ProgramMetrics) if f.name not in skip and f.name in d}
    per_diagnosis = {name: DiagnosisMetrics(**dict(item)) for name, item in d["per_diagnosis"].items()}
    return ProgramMetrics(**scalars, per_diagnosis=per_diagnosis, confusion=confusion)
