"""The session gates as pure functions: a hand-built context and store view in, an outcome out."""

from __future__ import annotations

from pathlib import Path

from evals.gates.champion import check_regressions
from evals.gates.drift import check_drift
from evals.gates.robustness import check_robustness, save_counterexamples
from evals.labels import DIAGNOSES
from evals.stats.robustness import StabilityRecord
from evals.store.champions import HistoryEntry
from evals.store.view import StoreView, Unavailable
from tests.contexts import champion, make_context, records


def test_no_champion_is_a_plain_line_and_no_failure(tmp_path: Path) -> None:
    context = make_context(tmp_path, records("zero_shot", 10))

    outcome = check_regressions(context, StoreView(baselines={"zero_shot": None}))

    assert outcome.programs["zero_shot"].status == "no champion"
    assert outcome.status == "none" and outcome.error_lines == []
    assert outcome.info[0].startswith("No champion yet for zero_shot (registered as symptom-diagnosis.zero_shot)")


def test_same_answers_as_the_champion_pass(tmp_path: Path) -> None:
    mine = records("knn", 15)
    context = make_context(tmp_path, mine)

    outcome = check_regressions(context, StoreView(baselines={"knn": champion("knn", mine)}))

    assert outcome.programs["knn"].status == "pass" and outcome.status == "pass"
    assert outcome.baselines["knn"] == "version 3 (run run-3)"
    assert outcome.error_lines == []


def test_a_large_drop_against_the_champion_fails(tmp_path: Path) -> None:
    context = make_context(tmp_path, records("knn", 0, n=110))

    outcome = check_regressions(context, StoreView(baselines={"knn": champion("knn", records("knn", 110, n=110))}))

    assert outcome.programs["knn"].status == "fail"
    assert any("knn: accuracy" in line and "is a regression" in line for line in outcome.error_lines)


def test_an_unavailable_lookup_fails_in_ci_and_warns_locally(tmp_path: Path) -> None:
    view = StoreView(baselines={"knn": Unavailable("MLflow at http://x unreachable: connection refused")})
    in_ci = check_regressions(make_context(tmp_path, records("knn", 5), cli={"evals_trigger": "ci"}), view)
    local = check_regressions(make_context(tmp_path, records("knn", 5), cli={"evals_trigger": "local"}), view)

    assert in_ci.status == local.status == "unavailable"
    assert in_ci.on_unavailable == "fail" and local.on_unavailable == "warn"
    assert in_ci.error_lines == [
        "regression gate could not run: MLflow at http://x unreachable: connection refused "
        "(knn; regression.on_unavailable: fail)"
    ]
    assert local.error_lines == [] and local.notes[0].endswith("the session cannot be promoted")


def test_the_gate_is_skipped_with_no_regression(tmp_path: Path) -> None:
    context = make_context(tmp_path, records("knn", 5), cli={"evals_no_regression": True})

    outcome = check_regressions(context, StoreView())

    assert outcome.programs["knn"].status == "skipped"
    assert outcome.tags()["evals.regression"] == "none"


def test_drift_runs_only_in_drift_mode(tmp_path: Path) -> None:
    assert check_drift(make_context(tmp_path, records("knn", 5)), StoreView()).reports == {}


def test_drift_with_unavailable_history_is_a_warning(tmp_path: Path) -> None:
    context = make_context(tmp_path, records("knn", 5), cli={"evals_drift": True})

    outcome = check_drift(context, StoreView(history={"knn": Unavailable("MLflow at x unreachable: timed out")}))

    assert outcome.reports == {} and outcome.error_lines == []
    assert outcome.notes == ["drift check skipped for knn: MLflow at x unreachable: timed out"]


def test_drift_against_a_history_that_answered_otherwise(tmp_path: Path) -> None:
    mine = records("knn", 22)
    before = records("knn", 0)
    history = [HistoryEntry(0.0, "lm", "hash", tuple(before)), HistoryEntry(0.0, "lm", "hash")]
    context = make_context(tmp_path, mine, cli={"evals_drift": True})

    outcome = check_drift(context, StoreView(history={"knn": history}))

    report = outcome.reports["knn"]
    assert report.churn == 1.0
    assert any(line.startswith("knn: ") and "churn" in line for line in outcome.error_lines)


def _stability_item(program: str, stable: bool) -> dict:
    gold = DIAGNOSES[0]
    record = StabilityRecord(program, "test-0001", gold, ("case",), gold, gold if stable else DIAGNOSES[1])
    return {"record": record.to_dict(), "text": "PERTURBED TEXT"}


def test_robustness_floors_are_checked_without_writing_anything(tmp_path: Path) -> None:
    items = (_stability_item("knn", True), _stability_item("knn", False))
    context = make_context(
        tmp_path, [], stability=items, thresholds={"version": 1, "robustness": {"min_stability": 0.9}}
    )

    outcome = check_robustness(context)

    assert outcome.metrics["knn"]["stability"] == 0.5
    assert outcome.error_lines == ["knn: stability 0.50 < min 0.90 (n=2 perturbed examples)"]
    assert not (tmp_path / "suites").exists()
    assert save_counterexamples(tmp_path / "regressions.json", items) == 1
