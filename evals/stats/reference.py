"""How much each LM program beats the reference program (no LM) on the same examples (pure functions).

The registry marks its reference programs (``ProgramSpec.reference``, e.g. ``tfidf_logreg``); the
first one evaluated in a session is the baseline. A program with an LM that does not beat it is
not worth its cost, so every other program's accuracy gain over it is reported (terminal, HTML,
MLflow metric ``gain_over_reference``) and may be gated (``min_gain_over_reference``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from evals.stats.metrics import ProgramMetrics

GAIN_METRIC = "gain_over_reference"
"""Metric name of the gain, in checks, MLflow and the reports."""


def base_program(name: str) -> str:
    """``zero_shot+bootstrap_few_shot`` -> ``zero_shot``."""
    return name.split("+", 1)[0]


def reference_of(programs: Iterable[str], references: Sequence[str]) -> str | None:
    """The reference program the gains are measured against: the first of ``references`` evaluated."""
    evaluated = set(programs)
    return next((name for name in references if name in evaluated), None)


def gains_over_reference(metrics: Mapping[str, ProgramMetrics], references: Sequence[str]) -> dict[str, float]:
    """Accuracy gain of every LM program over the reference program.

    Args:
        metrics: Metrics per evaluated program (``program`` or ``program+optimizer``), all on the
            same examples.
        references: Names of the registry's reference programs (no LM), in registry order.

    Returns:
        Program -> its accuracy minus the reference's; empty when no reference ran. Reference
        programs themselves (and their compiled pairs) get no entry.
    """
    reference = reference_of(metrics, references)
    if reference is None:
        return {}
    base = metrics[reference].accuracy
    return {name: m.accuracy - base for name, m in metrics.items() if base_program(name) not in references}
