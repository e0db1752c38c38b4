"""What a program cost: per-example costs from the LM calls, per-program metrics, max_cost_usd (issue #13)."""

from __future__ import annotations

import dataclasses
import io
import math

import pytest

from evals.calls import LMCall
from evals.config.thresholds import ProgramThresholds, parse_thresholds
from evals.errors import ConfigError
from evals.gates.thresholds import check_program
from evals.records import ExampleRecord
from evals.stats.metrics import aggregate, flat_metrics, metrics_from_dict


def record(i: int, cost: float, program: str = "zero_shot") -> ExampleRecord:
    call = LMCall("openai/gpt-4o-mini", "[]", "{}", 10, 2, cost)
    return ExampleRecord(program, f"test-{i}", "text", "migraine", "migraine", 10.0, cost_usd=cost, calls=(call,))


def test_program_cost_is_the_sum_of_its_examples_and_is_logged_per_example_too() -> None:
    metrics = aggregate([record(0, 0.002), record(1, 0.004), record(2, 0.0), record(0, 9.0, "tfidf_logreg")])
    assert metrics["zero_shot"].cost_usd == pytest.approx(0.006)
    flat = flat_metrics(metrics["zero_shot"])
    assert flat["cost_usd"] == pytest.approx(0.006) and flat["cost_per_example_usd"] == pytest.approx(0.002)
    assert metrics["tfidf_logreg"].cost_usd == pytest.approx(9.0)


def test_metrics_written_before_cost_existed_read_back_as_zero_cost() -> None:
    stored = dataclasses.asdict(aggregate([record(0, 0.5)])["zero_shot"])
    del stored["cost_usd"]
    assert metrics_from_dict(stored).cost_usd == 0.0


def test_max_cost_usd_is_read_strictly_and_gates_the_total() -> None:
    limits = parse_thresholds(
        {"version": 1, "programs": {"zero_shot": {"max_cost_usd": 0.005}}}, "t.yaml", ["zero_shot"]
    )
    assert limits.for_program("zero_shot").max_cost_usd == 0.005
    assert math.isinf(ProgramThresholds().max_cost_usd)  # no limit: no cost check
    metrics = aggregate([record(0, 0.002), record(1, 0.004)])["zero_shot"]
    cost = {c.metric: c for c in check_program(metrics, limits.for_program("zero_shot"))}["cost_usd"]
    assert cost.failed and cost.value == pytest.approx(0.006)
    assert "cost_usd" not in {c.metric for c in check_program(metrics, ProgramThresholds())}
    with pytest.raises(ConfigError, match=r"max_cost_usd: expected a cost in USD >= 0, found -1"):
        parse_thresholds({"version": 1, "programs": {"zero_shot": {"max_cost_usd": -1}}}, "t.yaml", ["zero_shot"])


def test_the_terminal_table_has_a_cost_row() -> None:
    from rich.console import Console

    from evals.results.report import ReportContext, render_terminal

    metrics = aggregate([record(0, 0.0123)])
    out = io.StringIO()
    context = ReportContext(title="t", params={}, metrics=metrics, checks={}, records=[], confusion_pngs={})
    render_terminal(context, Console(file=out, width=100))
    assert "cost_usd" in out.getvalue() and "$0.0123" in out.getvalue()
