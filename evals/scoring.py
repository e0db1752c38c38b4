"""Scoring one example: the metric optimizers maximise (dspy's ``metric(example, pred, trace)``).

Aggregating many scores is :mod:`evals.stats.metrics`; this is the per-example half.
"""

from __future__ import annotations

from typing import Any


def diagnosis_match(example: Any, prediction: Any, trace: Any = None) -> bool:
    """True when the predicted diagnosis equals the gold one (case and spaces ignored)."""
    predicted = str(getattr(prediction, "diagnosis", "") or "").strip().lower()
    return predicted == str(example.diagnosis).strip().lower()
