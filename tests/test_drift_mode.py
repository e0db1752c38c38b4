"""Nightly drift mode end to end: history builds up, an unchanged night passes, a changed one fails."""

from __future__ import annotations

import pytest

from tests.test_plugin import run


def test_drift_mode_reports_band_and_churn_and_fails_on_drift(
    eval_project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(3):
        assert run(eval_project, "--evals-drift --evals-no-regression").ret == 0

    steady = run(eval_project, "-n 2 --evals-drift --evals-no-regression")
    assert steady.ret == 0, steady.stdout.str()
    steady.stdout.fnmatch_lines(
        ["*Drift against recent sessions*", "*zero_shot*accuracy*0.5*ok*", "*zero_shot*churn*0.0*ok*"]
    )

    monkeypatch.setenv("EVALS_TEST_WEAKEN", "1")
    drifted = run(eval_project, "--evals-drift --evals-no-regression")

    assert drifted.ret == 1
    drifted.stdout.fnmatch_lines(["*zero_shot*churn*0.5*alarm*"])
    drifted.stdout.fnmatch_lines(["ERROR: zero_shot: *churn*"])
