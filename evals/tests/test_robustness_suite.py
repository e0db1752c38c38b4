"""The robustness suite end to end, with a keyword-matching fake LM (no real model)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from evals.tests.test_plugin import bundles, run

SUITE = Path(__file__).parents[2] / "suites" / "test_robustness.py"

# A fake LM engine: answers the first diagnosis named in the symptoms, case-insensitively, else
# (with EVALS_TEST_GARBAGE=1) free text that is no label.
KEYWORD_CONFTEST = '''
import json
import os

import pytest

from evals.labels import DIAGNOSES


class KeywordEngine:
    supports_response_schema = True
    supported_params = frozenset({"temperature", "max_tokens", "response_format"})

    def complete(self, request):
        from dspy.lm15 import Message, Response, TextPart, Usage

        text = (request.messages[-1].text or "").lower()
        found = next((label for label in DIAGNOSES if label in text.split("symptoms")[-1]), "allergy")
        answer = "i think it is a cold" if os.environ.get("EVALS_TEST_GARBAGE") else found
        body = json.dumps({"diagnosis": answer})
        return Response(id=None, model="keyword", message=Message.assistant([TextPart(body)]),
                        finish_reason="stop", usage=Usage(input_tokens=1, output_tokens=1, total_tokens=2))

    def stream(self, request):
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def close(self):
        pass


@pytest.fixture(scope="session")
def evals_lm():
    import dspy

    lm = dspy.LM("keyword/fake", engine=KeywordEngine(), cache=False, num_retries=0)
    dspy.configure(lm=lm, adapter=dspy.JSONAdapter())
    return lm
'''


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
    result.stdout.fnmatch_lines(["*Robustness (meaning-preserving*", "*zero_shot*1.000*1.000*66*"])
    session = json.loads(bundles(robustness_project)[-1].read_text())
    assert session["programs"]["zero_shot"]["metrics"]["stability"] == 1.0
    assert "stability.by.change_case" in session["programs"]["zero_shot"]["metrics"]


def test_garbage_answers_fail_and_are_saved_and_replayed(robustness_project: pytest.Pytester,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
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
