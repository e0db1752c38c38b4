"""Champion gate end to end: promote, no false alarm, a weakened program fails, refusals, rollback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from evals.tests.test_plugin import run


def cli(project: pytest.Pytester, *args: str) -> subprocess.CompletedProcess[str]:
    uri = f"sqlite:///{project.path / 'mlflow.db'}"
    return subprocess.run([sys.executable, "-m", "evals", *args, "--tracking-uri", uri], capture_output=True,
                          text=True, cwd=project.path, timeout=300)


def test_promote_compare_weaken_refuse_and_rollback(eval_project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
                                                    ) -> None:
    first = run(eval_project, "-n 2 --evals-promote")
    assert first.ret == 0, first.stdout.str()
    first.stdout.fnmatch_lines(["*zero_shot: promoted symptom-diagnosis.zero_shot version none -> 1*"])

    unchanged = run(eval_project, "--evals-promote")
    assert unchanged.ret == 0, unchanged.stdout.str()
    unchanged.stdout.fnmatch_lines(["*Regression against the champion*", "*zero_shot*accuracy*0.500*0.500*ok*",
                                    "*promoted symptom-diagnosis.zero_shot version 1 -> 2*"])

    monkeypatch.setenv("EVALS_TEST_WEAKEN", "1")
    weakened = run(eval_project, "-n 2 --evals-promote")
    assert weakened.ret == 1
    weakened.stdout.fnmatch_lines(["ERROR: zero_shot: accuracy 0.500 → 0.000 (Δ −0.500, 95% CI *McNemar p<0.001) "
                                   "is a regression"])
    weakened.stdout.fnmatch_lines(["*promotion refused*a gate failed*"])
    monkeypatch.delenv("EVALS_TEST_WEAKEN")

    partial = run(eval_project, "-k migraine --evals-promote")
    assert partial.ret == 1, partial.stdout.str()  # the champion saw other examples: comparison refused
    partial.stdout.fnmatch_lines(["*promotion refused*the session is incomplete*"])
    partial.stdout.fnmatch_lines(["ERROR: zero_shot: cannot compare*"])

    rolled = cli(eval_project, "rollback", "zero_shot")
    assert rolled.returncode == 0, rolled.stderr
    assert "rolled back symptom-diagnosis.zero_shot version 2 -> 1" in rolled.stdout


def test_baseline_run_with_other_examples_is_refused(eval_project: pytest.Pytester) -> None:
    assert run(eval_project, "--evals-promote").ret == 0
    other_sample = run(eval_project, "--evals-per-diagnosis 1")

    assert other_sample.ret == 1
    other_sample.stdout.fnmatch_lines(["ERROR: zero_shot: *only in*"])
