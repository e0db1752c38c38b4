"""Every LM program's gain over the reference program: thresholds key, gate, summary, bundle, terminal."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from evals.config.thresholds import parse_thresholds
from evals.errors import ConfigError
from evals.results.bundle import write_bundle
from evals.results.summary import summarize
from evals.stats.reference import GAIN_METRIC
from evals.store.view import StoreView
from tests.contexts import make_context, records

# The reference answers 20 of 22, zero_shot 2, knn 21: gains -18/22 and +1/22.
SESSION = records("tfidf_logreg", 20) + records("zero_shot", 2) + records("knn", 21)


def _context(
    tmp_path: Path,
    limits: dict[str, object] | None = None,
    references: tuple[str, ...] = ("tfidf_logreg",),
    recs: list | None = None,
) -> object:
    thresholds = {"version": 1, "programs": limits or {"default": {"min_accuracy": 0.0}}}
    return make_context(tmp_path, recs or SESSION, thresholds=thresholds, references=references)


def test_the_key_is_optional_and_bounded() -> None:
    names = ["zero_shot"]
    assert parse_thresholds({"version": 1}, "t.yaml", names).default.min_gain_over_reference is None
    parsed = parse_thresholds(
        {"version": 1, "programs": {"default": {"min_gain_over_reference": -0.1}, "zero_shot": {}}}, "t.yaml", names
    )
    assert parsed.for_program("zero_shot").min_gain_over_reference == -0.1
    with pytest.raises(
        ConfigError,
        match=r"programs.zero_shot.min_gain_over_reference: expected an accuracy gain "
        r"between -1 and 1, found 2",
    ):
        parse_thresholds({"version": 1, "programs": {"zero_shot": {"min_gain_over_reference": 2}}}, "t.yaml", names)


def test_gains_are_reported_without_a_limit(tmp_path: Path) -> None:
    summary = summarize(_context(tmp_path), StoreView())
    assert summary.reference == "tfidf_logreg"
    assert summary.gains == pytest.approx({"zero_shot": -18 / 22, "knn": 1 / 22})
    assert summary.passed
    assert not any(c.metric == GAIN_METRIC for cs in summary.checks.values() for c in cs)


def test_a_program_below_its_minimum_gain_fails_the_session(tmp_path: Path) -> None:
    limits = {"default": {"min_gain_over_reference": 0.0}}
    summary = summarize(_context(tmp_path, limits), StoreView())
    assert not summary.passed
    assert summary.error_lines == ["zero_shot: gain_over_reference -0.82 < min 0.00"]
    knn = next(c for c in summary.checks["knn"] if c.metric == GAIN_METRIC)
    assert knn.passed and knn.value == pytest.approx(1 / 22)
    # The reference is never checked against itself.
    assert not any(c.metric == GAIN_METRIC for c in summary.checks["tfidf_logreg"])


def test_a_limit_without_the_reference_fails_closed(tmp_path: Path) -> None:
    limits = {"zero_shot": {"min_gain_over_reference": 0.05}}
    context = _context(tmp_path, limits, recs=records("zero_shot", 2))
    summary = summarize(context, StoreView())
    assert summary.gains == {} and not summary.passed
    assert summary.error_lines == [
        "zero_shot: min_gain_over_reference 0.05 cannot be checked: no reference program was evaluated "
        "(reference programs: tfidf_logreg); add one to --evals-programs"
    ]


def test_the_gain_is_an_mlflow_metric_and_in_the_html(tmp_path: Path) -> None:
    context = _context(tmp_path)
    bundle = tmp_path / "bundle"
    write_bundle(bundle, context, summarize(context, StoreView()), str)
    session = json.loads((bundle / "session.json").read_text())
    assert session["programs"]["zero_shot"]["metrics"][GAIN_METRIC] == pytest.approx(-18 / 22)
    assert session["metrics"]["knn.gain_over_reference"] == pytest.approx(1 / 22)
    assert GAIN_METRIC not in session["programs"]["tfidf_logreg"]["metrics"]
    page = (bundle / "artifacts" / "report.html").read_text()
    assert "gain over tfidf_logreg" in page and f"{-18 / 22:+.3f}" in page


def test_the_terminal_shows_the_gain(tmp_path: Path) -> None:
    from rich.console import Console

    from evals.results.report import ReportContext, render_terminal

    summary = summarize(_context(tmp_path, {"default": {"min_gain_over_reference": 0.0}}), StoreView())
    console = Console(width=100, record=True, color_system=None)
    context = ReportContext(
        "t", {}, summary.metrics, summary.checks, summary.records, {}, gains=summary.gains, reference=summary.reference
    )
    render_terminal(context, console)
    text = console.export_text()
    assert re.search(r"gain over tfidf_logreg\s+│\s+-0\.818\s+│\s+≥ \+0\.000\s+│ FAIL", text)
    assert re.search(r"gain over tfidf_logreg\s+│\s+\+0\.045\s+│\s+≥ \+0\.000\s+│ PASS", text)
