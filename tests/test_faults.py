"""Faults the harness survives, end to end: LM errors, garbage answers, LM down, worker crash, Ctrl-C."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from evals.labels import DIAGNOSES
from tests.conftest import KEYWORD_CONFTEST
from tests.test_plugin import XDIST, bundles, run

CRASHING_SUITE = """
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
"""


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


@XDIST
def test_lm_down_from_the_start_is_one_stop_line_and_what_was_gathered_is_written(
    fault_project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, xdist: str
) -> None:
    monkeypatch.setenv("EVALS_TEST_FAIL_ALL", "1")  # every call: "connection refused"

    result = run(fault_project, xdist)

    assert result.ret == pytest.ExitCode.INTERRUPTED
    output = result.stdout.str() + result.stderr.str()
    stop = (
        "*Interrupted: LM * is unavailable (connection refused): *connection refused by the fake LM; check --evals-lm *"
    )
    result.stdout.fnmatch_lines([stop])
    assert output.count("is unavailable") == 1, output
    assert "Traceback" not in output
    assert result.parseoutcomes().get("passed", 0) == 0
    # The tests that found the LM down still reported their records: the bundle holds them.
    bundle = bundles(fault_project)[-1].parent
    predictions = (bundle / "artifacts" / "predictions.csv").read_text().splitlines()
    workers = 2 if xdist else 1
    assert len(predictions) == 1 + 2 * workers, predictions  # the header, 2 examples per first test
    assert all("connection refused by the fake LM" in row for row in predictions[1:])
    session = json.loads((bundle / "session.json").read_text())
    assert session["tags"]["evals.complete"] == "false"


@XDIST
def test_an_empty_dataset_file_is_one_line_once(fault_project: pytest.Pytester, tmp_path: Path, xdist: str) -> None:
    test_file = tmp_path / "data" / "test.jsonl"
    test_file.write_text("\n   \n\t\n")

    result = run(fault_project, xdist)

    assert result.ret == pytest.ExitCode.INTERRUPTED
    output = result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines([f"*Interrupted: {test_file}: no rows !*"])
    assert output.count("no rows") == 1, output
    assert "Traceback" not in output and "TypeError" not in output
    assert not bundles(fault_project)


def test_a_label_missing_from_the_sample_is_a_skipped_test(fault_project: pytest.Pytester, tmp_path: Path) -> None:
    test_file = tmp_path / "data" / "test.jsonl"
    rows = [row for row in test_file.read_text().splitlines() if json.loads(row)["output_text"] != "migraine"]
    test_file.write_text("\n".join(rows) + "\n")

    result = run(fault_project, "-rs")

    result.assert_outcomes(passed=21, skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED *no examples of 'migraine' in the test sample"])
    session = json.loads(bundles(fault_project)[-1].read_text())
    assert session["programs"]["zero_shot"]["metrics"]["n"] == 42


# The LM hangs on the texts naming EVALS_TEST_TIMEOUT_ON and the client gives up: a time-out, not "down".
TIMING_OUT_CONFTEST = (
    KEYWORD_CONFTEST
    + """

_answer = KeywordEngine.complete


def _answer_or_time_out(self, request):
    symptoms = (request.messages[-1].text or "").lower().split("## symptoms ## ]]")[-1].split("respond with")[0]
    if os.environ.get("EVALS_TEST_TIMEOUT_ON", "\\0") in symptoms:
        raise TimeoutError("read timed out waiting for headers: no bytes for 1s")
    return _answer(self, request)


KeywordEngine.complete = _answer_or_time_out
"""
)


def test_an_lm_hanging_on_the_first_example_is_recorded_and_the_session_goes_on(
    fault_project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    fault_project.makeconftest(TIMING_OUT_CONFTEST)
    monkeypatch.setenv("EVALS_TEST_TIMEOUT_ON", DIAGNOSES[0])  # the very first test's examples

    result = run(fault_project, "--evals-timeout 1 --evals-example-budget 2")

    assert result.ret == 0, result.stdout.str()
    result.assert_outcomes(passed=22)
    bundle = bundles(fault_project)[-1].parent
    with (bundle / "artifacts" / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 44
    timed_out = [row for row in rows if row["gold"] == DIAGNOSES[0]]
    assert len(timed_out) == 2
    for row in timed_out:
        assert row["error"].endswith(
            "read timed out waiting for headers: no bytes for 1s; raise --evals-timeout if the LM needs longer per call"
        )
        # 1st attempt, 0.5 s wait, 2nd attempt; a 3rd (1 s wait + up to 1 s) could not end within 2 s.
        assert row["attempts"] == "2"
        assert float(row["latency_ms"]) >= 500
    assert {row["attempts"] for row in rows if row["gold"] != DIAGNOSES[0]} == {"1"}


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
