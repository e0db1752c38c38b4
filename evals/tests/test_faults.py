"""Faults the harness survives, end to end: LM errors, garbage answers, LM down, worker crash, Ctrl-C."""

from __future__ import annotations

import json

import pytest

from evals.tests.conftest import KEYWORD_CONFTEST
from evals.tests.test_plugin import bundles, run

CRASHING_SUITE = '''
import os
import pytest

def test_diagnosis(evals_program, diagnosis, evals_evaluate):
    if diagnosis == os.environ.get("EVALS_TEST_CRASH_ON"):
        os._exit(3)  # the xdist worker dies mid-session
    if diagnosis == os.environ.get("EVALS_TEST_INTERRUPT_ON"):
        raise KeyboardInterrupt
    outcome = evals_evaluate(evals_program, diagnosis)
    if outcome.failure:
        pytest.fail(outcome.failure, pytrace=False)
'''


@pytest.fixture
def fault_project(eval_project: pytest.Pytester) -> pytest.Pytester:
    eval_project.makeconftest(KEYWORD_CONFTEST)
    eval_project.makepyfile(test_suite=CRASHING_SUITE)
    return eval_project


def program_metrics(project: pytest.Pytester) -> dict[str, float]:
    return json.loads(bundles(project)[-1].read_text())["programs"]["zero_shot"]["metrics"]


def test_lm_errors_are_retried_recorded_and_the_session_completes(
    fault_project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVALS_TEST_FAIL_ON", "migraine")
    monkeypatch.setenv("EVALS_TEST_NONSENSE_ON", "dengue")

    result = run(fault_project, "-n 2")

    assert result.ret == 0, result.stdout.str()  # max_invalid_rate is 0.5 in this project
    result.assert_outcomes(passed=22)
    metrics = program_metrics(fault_project)
    assert metrics["n"] == 44
    assert metrics["error_rate"] == pytest.approx(4 / 44)
    assert metrics["invalid_rate"] == pytest.approx(4 / 44)
    assert metrics["accuracy"] == pytest.approx(40 / 44)
    predictions = (bundles(fault_project)[-1].parent / "artifacts" / "predictions.csv").read_text()
    assert "connection refused by the fake LM" in predictions
    assert "AdapterParseError" in predictions


def test_invalid_rate_over_its_threshold_fails_the_session(
    fault_project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    thresholds = fault_project.path / "thresholds.yaml"
    thresholds.write_text(thresholds.read_text().replace("max_invalid_rate: 0.5", "max_invalid_rate: 0.05"))
    monkeypatch.setenv("EVALS_TEST_NONSENSE_ON", "dengue")

    result = run(fault_project, "-k dengue")

    result.stdout.fnmatch_lines(["ERROR: zero_shot: invalid_rate 1.00 > max 0.05"])
    assert result.ret == 1


def test_lm_down_from_the_start_is_one_line_and_stops(
    fault_project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVALS_TEST_FAIL_ALL", "1")

    result = run(fault_project, "-n 2")

    assert result.ret != 0
    result.stdout.fnmatch_lines(["*Interrupted: LM * is unavailable: *connection refused by the fake LM*"])
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) + outcomes.get("error", 0) <= 2
    assert "Traceback" not in result.stdout.str()


def test_crashed_worker_keeps_the_other_results_and_marks_the_session_incomplete(
    fault_project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVALS_TEST_CRASH_ON", "migraine")

    result = run(fault_project, "-n 2 --evals-promote")

    assert result.ret == 1
    result.stdout.fnmatch_lines(["*incomplete: *worker*crashed*"])
    result.stdout.fnmatch_lines(["*promotion refused*incomplete*"])
    session = json.loads(bundles(fault_project)[-1].read_text())
    assert session["tags"]["evals.complete"] == "false"
    assert session["programs"]["zero_shot"]["metrics"]["n"] == 42


def test_interrupt_spools_what_was_gathered(fault_project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVALS_TEST_INTERRUPT_ON", "migraine")

    result = run(fault_project)

    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*session interrupted: what was gathered is kept in *spool*"])
    spooled = list((fault_project.path / ".evals" / "spool").glob("*/session.json"))
    assert len(spooled) == 1
    session = json.loads(spooled[0].read_text())
    assert session["status"] == "KILLED"
    assert 0 < session["programs"]["zero_shot"]["metrics"]["n"] < 44
