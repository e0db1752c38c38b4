"""Sample session results for the HTML report tests, built from the project's own types."""

from __future__ import annotations

import random

from evals.config.thresholds import parse_thresholds
from evals.gates.champion import ProgramGate, RegressionOutcome
from evals.gates.thresholds import check_program
from evals.labels import DIAGNOSES
from evals.records import ExampleRecord
from evals.results.html_build import build_report_data
from evals.results.html_data import ReportData, TrendPoint
from evals.stats.metrics import aggregate
from evals.stats.regression import RegressionPolicy, compare

HOSTILE = 'chest pain </script><script>alert("x")</script> & <b>bold</b> <!-- call 555-0100'


def sample_records(programs: dict[str, float], per_diagnosis: int = 2, seed: int = 0) -> list[ExampleRecord]:
    """Records of ``programs`` (name -> chance of a right answer) over the 22 diagnoses."""
    rng = random.Random(seed)
    records = []
    for program, skill in programs.items():
        for d, diagnosis in enumerate(DIAGNOSES):
            for k in range(per_diagnosis):
                example = f"test-{d * per_diagnosis + k:04d}"
                right = rng.random() < skill
                predicted = diagnosis if right else (None if rng.random() < 0.1 else rng.choice(DIAGNOSES))
                text = HOSTILE if (d, k) == (0, 0) else f"I have symptoms typical of {diagnosis}, case {k}."
                records.append(
                    ExampleRecord(
                        program,
                        example,
                        text,
                        diagnosis,
                        predicted,
                        latency_ms=rng.uniform(300, 3000),
                        prompt_tokens=120,
                        completion_tokens=8,
                        error=None if predicted else "no valid label",
                    )
                )
    return records


def sample_data(programs: dict[str, float] | None = None, with_gate: bool = True, history: int = 6) -> ReportData:

    programs = programs or {
        "zero_shot": 0.1,
        "knn_few_shot": 0.8,
        "tfidf_logreg": 0.93,
        "zero_shot+bootstrap_few_shot_with_a_long_name": 0.2,
    }
    records = sample_records(programs)
    metrics = aggregate(records)
    raw = {
        "version": 1,
        "programs": {
            "default": {"min_accuracy": 0.0, "recall": {"default": 0.0, "min_support": 2}},
            "knn_few_shot": {"min_accuracy": 0.9, "recall": {"default": 0.75}},
        },
    }
    thresholds = parse_thresholds(raw, "thresholds.yaml", list(programs))
    checks = {name: check_program(m, thresholds.for_program(name)) for name, m in metrics.items()}
    regression = _gate(records) if with_gate else None
    now = 1_796_000_000.0
    trends = {
        name: tuple(
            TrendPoint(now - 3600 * (history - i), min(1.0, max(0.0, skill + 0.05 * ((i % 3) - 1))))
            for i in range(history)
        )
        for name, skill in programs.items()
    }
    error_lines = [f"knn_few_shot: accuracy {metrics['knn_few_shot'].accuracy:.3f} < min 0.900"]
    return build_report_data(
        title="Symptom-diagnosis eval session 1a2b3c4d",
        metrics=metrics,
        checks=checks,
        records=records,
        redact=lambda text: text.replace("555-0100", "<PHONE>"),
        error_lines=error_lines,
        notes=["incomplete: worker gw1 crashed"],
        regression=regression,
        references=["tfidf_logreg"],
        trends=trends,
        params={f"param.{i}": f"value {i}" for i in range(28)},
        mlflow_hint="mlflow ui (run abc)",
    )


def _gate(records: list[ExampleRecord]) -> RegressionOutcome:

    outcome = RegressionOutcome()
    champion = [r.__class__(**{**r.to_dict(), "predicted": r.gold}) for r in records if r.program == "knn_few_shot"]
    mine = [r for r in records if r.program == "knn_few_shot"]
    comparison = compare(mine, champion, RegressionPolicy())
    outcome.comparisons["knn_few_shot"] = comparison
    outcome.baselines["knn_few_shot"] = "version 3 (run 0123abcd)"
    outcome.programs["knn_few_shot"] = ProgramGate(
        "fail" if comparison.regressions() else "pass", "; ".join(comparison.regressions())
    )
    outcome.programs["zero_shot"] = ProgramGate("no champion", "No champion yet for zero_shot")
    return outcome
