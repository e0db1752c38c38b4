"""The robustness suite end to end, with a keyword-matching fake LM (no real model)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import KEYWORD_CONFTEST
from tests.test_plugin import bundles, run

SUITE = Path(__file__).parents[1] / "suites" / "test_robustness.py"


@pytest.fixture
def robustness_project(eval_project: pytest.Pytester) -> pytest.Pytester:
    eval_project.makeconftest(KEYWORD_CONFTEST)
    (eval_project.path / "suites").mkdir()
    shutil.copy(SUITE, eval_project.path / "suites" / "test_robustness.py")
    (eval_project.path / "test_suite.py").unlink()
    thresholds = eval_project.path / "thresholds.yaml"
    thresholds.write_text(thresholds.read_text() + "robustness:\n  min_valid_rate: 0.9\n")
    return eval_project


@pytest.mark.parametrize("xdist", ["", "-n 2"], ids=["no-xdist", "xdist-2"])
def test_stability_is_measured_and_logged(robustness_project: pytest.Pytester, xdist: str) -> None:
    result = run(robustness_project, xdist, "suites -m robustness")

    assert result.ret == 0, result.stdout.str()
    result.assert_outcomes(passed=22, skipped=1)  # the empty saved-counterexample set is skipped
    result.stdout.fnmatch_lines(["*Robustness (meaning-preserving*", "*zero_shot*1.000*66*"])
    session = json.loads(bundles(robustness_project)[-1].read_text())
    metrics = session["programs"]["zero_shot"]["metrics"]
    # The keyword LM is fooled by some perturbations (e.g. a doubled space inside "chicken pox"), never invalid.
    assert 0.5 <= metrics["stability"] <= 1.0 and metrics["robust_valid_rate"] == 1.0
    assert metrics["robust_n"] == 66
    assert "stability.by.change_case" in session["programs"]["zero_shot"]["metrics"]


def test_garbage_answers_fail_and_are_saved_and_replayed(
    robustness_project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVALS_TEST_GARBAGE", "1")
    result = run(robustness_project, "suites -m robustness -k migraine")

    assert result.ret == 1
    result.stdout.fnmatch_lines(["*no valid label for a perturbed text*"])
    result.stdout.fnmatch_lines(["ERROR: zero_shot: robust valid rate 0.00 < min 0.90"])
    saved = json.loads((robustness_project.path / "suites" / "robustness_regressions.json").read_text())
    assert saved and saved[0]["program"] == "zero_shot" and saved[0]["perturbed_prediction"] is None

    monkeypatch.delenv("EVALS_TEST_GARBAGE")
    replay = run(robustness_project, "suites -m robustness -k saved_counterexample")
    assert replay.ret == 0, replay.stdout.str()
    replay.assert_outcomes(passed=len(saved))
