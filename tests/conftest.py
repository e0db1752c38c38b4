"""Fixtures for the harness's own tests: tiny datasets and scripted eval projects.

The eval projects that ``pytester`` runs here use dspy's ``DummyLM`` (through an
``evals_lm`` fixture override written into the project's conftest), never a real LM:
the harness is under test, not the model.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from evals.labels import DIAGNOSES

SHARED_DATA = Path(
    os.environ.get("EVALS_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data" / "symptom_to_diagnosis"
)
"""The offline copy of the real dataset (CI and the README point EVALS_DATA_DIR at it)."""


@pytest.fixture(autouse=True)
def _isolated_from_user_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Harness tests configure their eval projects themselves: no EVALS_* or MLflow variable leaks in."""
    for name in list(os.environ):
        # CI picks the default trigger (and with it how strict the regression gate is).
        if name.startswith("EVALS_") or name in ("MLFLOW_TRACKING_URI", "GITHUB_STEP_SUMMARY", "CI"):
            monkeypatch.delenv(name)


SYMPTOM_WORDS = ("itchy", "burning", "sore", "swollen", "aching", "dizzy", "tired", "feverish")


def write_tiny_dataset(directory: Path, train_per_label: int = 5, test_per_label: int = 2) -> Path:
    """Write train.jsonl / test.jsonl with distinct synthetic texts for every diagnosis."""
    directory.mkdir(parents=True, exist_ok=True)
    for split, per_label in (("train", train_per_label), ("test", test_per_label)):
        lines = []
        for label_index, label in enumerate(DIAGNOSES):
            for i in range(per_label):
                word = SYMPTOM_WORDS[(label_index + i) % len(SYMPTOM_WORDS)]
                text = f"Patient {split} {label_index}-{i}: I feel {word} and it points to {label} somehow."
                lines.append(json.dumps({"output_text": label, "input_text": text}))
        (directory / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return directory


@pytest.fixture
def tiny_data_dir(tmp_path: Path) -> Path:
    return write_tiny_dataset(tmp_path / "data")


SUITE = """
import pytest

def test_diagnosis(evals_program, diagnosis, evals_evaluate):
    outcome = evals_evaluate(evals_program, diagnosis)
    if outcome.failure:
        pytest.fail(outcome.failure, pytrace=False)
"""

# The scripted LM answers the gold label for the first example of each diagnosis (by id)
# and a wrong label for the others, so accuracy is known in advance: 0.5 with 2 per label.
DUMMY_CONFTEST = """
import os

import pytest

from evals.labels import DIAGNOSES


def scripted_answer(example, rank):
    # EVALS_TEST_WEAKEN=1 plays a weakened program: every answer wrong.
    if rank == 0 and not os.environ.get("EVALS_TEST_WEAKEN"):
        return example.diagnosis
    return DIAGNOSES[(DIAGNOSES.index(example.diagnosis) + 1) % len(DIAGNOSES)]


@pytest.fixture(scope="session")
def evals_lm(evals_session):
    import dspy
    from dspy.utils.dummies import DummyLM

    answers, seen = {}, {}
    for example in evals_session.examples():
        rank = seen.get(example.diagnosis, 0)
        seen[example.diagnosis] = rank + 1
        answers[example.symptoms] = {"reasoning": "scripted", "diagnosis": scripted_answer(example, rank)}
    lm = DummyLM(answers, adapter=dspy.JSONAdapter())
    dspy.configure(lm=lm, adapter=dspy.JSONAdapter())
    return lm
"""

# A fake LM engine: answers the first diagnosis named in the symptoms, case-insensitively. Faults on
# demand, by environment variable: EVALS_TEST_GARBAGE=1 answers a valid JSON non-label for everything;
# EVALS_TEST_FAIL_ON=<label> raises a connection error and EVALS_TEST_NONSENSE_ON=<label> answers text
# that is no JSON for texts naming that label; EVALS_TEST_FAIL_ALL=1 raises for everything.
KEYWORD_CONFTEST = """
import json
import os

import pytest

from evals.labels import DIAGNOSES


class KeywordEngine:
    supports_response_schema = True
    supported_params = frozenset({"temperature", "max_tokens", "response_format"})

    def complete(self, request):
        from dspy.lm15 import Message, Response, TextPart, Usage

        # The symptoms sit between the field header and JSONAdapter's "Respond with ..." instructions.
        text = (request.messages[-1].text or "").lower().split("## symptoms ## ]]")[-1].split("respond with")[0]
        found = next((label for label in DIAGNOSES if label in text), "allergy")
        if os.environ.get("EVALS_TEST_FAIL_ALL") or os.environ.get("EVALS_TEST_FAIL_ON") == found:
            raise ConnectionError("connection refused by the fake LM")
        answer = "i think it is a cold" if os.environ.get("EVALS_TEST_GARBAGE") else found
        body = json.dumps({"diagnosis": answer})
        if os.environ.get("EVALS_TEST_NONSENSE_ON") == found:
            body = "Sorry, I cannot help with medical questions."
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
"""


THRESHOLDS = """
version: 1
programs:
  default:
    min_accuracy: 0.0
    max_invalid_rate: 0.5
    recall:
      default: 0.0
      min_support: 1
"""


@pytest.fixture
def eval_project(pytester: pytest.Pytester, tmp_path: Path) -> pytest.Pytester:
    """A pytester project with the suite, a DummyLM conftest, thresholds and a tiny dataset."""
    data = write_tiny_dataset(tmp_path / "data")
    pytester.makepyfile(test_suite=SUITE)
    pytester.makeconftest(DUMMY_CONFTEST)
    pytester.path.joinpath("thresholds.yaml").write_text(textwrap.dedent(THRESHOLDS))
    pytester.makeini(
        f"""
        [pytest]
        evals_data_dir = {data}
        evals_programs = zero_shot
        evals_tracking_uri = sqlite:///{pytester.path / "mlflow.db"}
        """
    )
    return pytester
