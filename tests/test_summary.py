"""summarize() over hand-built session contexts: aggregates, checks, gate lines, incomplete reasons."""

from __future__ import annotations

from pathlib import Path

from evals.config.policies import parse_policies
from evals.config.thresholds import parse_thresholds
from evals.results.summary import summarize
from evals.store.view import StoreView
from tests.contexts import make_context, records


def test_a_session_within_its_thresholds_passes(tmp_path: Path) -> None:
    summary = summarize(make_context(tmp_path, records("knn", 22)), StoreView())

    assert summary.passed and summary.error_lines == []
    assert summary.metrics["knn"].accuracy == 1.0
    assert summary.incomplete == []
    assert summary.regression is not None and summary.regression.status == "none"


def test_an_aggregate_below_its_floor_is_a_red_line(tmp_path: Path) -> None:
    thresholds = {"version": 1, "programs": {"default": {"min_accuracy": 0.5}}}
    summary = summarize(make_context(tmp_path, records("knn", 5), thresholds=thresholds), StoreView())

    assert not summary.passed
    assert any(line.startswith("knn: accuracy") for line in summary.error_lines)


def test_unreadable_thresholds_keep_the_results_and_skip_the_gates(tmp_path: Path) -> None:
    defaults = parse_policies(parse_thresholds({"version": 1}, "<defaults>", ["knn"]))
    problem = "thresholds.yaml: programs.knn.min_accuracy: expected a number between 0 and 1, found 1.5"
    context = make_context(tmp_path, records("knn", 5), policies=defaults, policies_problem=problem)

    summary = summarize(context, StoreView())

    assert summary.error_lines == [problem]
    assert summary.checks == {"knn": []} and summary.regression is None
    assert summary.metrics["knn"].n == 22


def test_incomplete_reasons_name_crashes_interruptions_and_missing_diagnoses(tmp_path: Path) -> None:
    context = make_context(tmp_path, records("knn", 3, n=20), crashed_workers=("gw1",), interrupted=True)

    summary = summarize(context, StoreView())

    assert summary.incomplete == ["worker gw1 crashed", "session interrupted", "diagnoses not evaluated: knn 2/22"]


def test_gate_notes_and_lines_are_gathered_in_order(tmp_path: Path) -> None:
    context = make_context(tmp_path, records("knn", 5), cli={"evals_trigger": "ci"})

    summary = summarize(context, StoreView(baselines={"knn": None}))

    assert summary.notes and "local file" in summary.notes[0]  # the ephemeral-store warning
    assert summary.params["git.branch"] == "main"
