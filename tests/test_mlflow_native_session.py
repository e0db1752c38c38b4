"""A session's MLflow GenAI side: traces with assessments, run inputs, loadable program models (issue #13)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.mlflow_server import MlflowServer
from tests.test_champion import cli
from tests.test_plugin import run

XDIST = pytest.mark.parametrize("xdist", ["", "-n 2"])

NATIVE_DUMP = """
import json, sys
import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient
uri = sys.argv[1]
client = MlflowClient(uri)
experiment = client.get_experiment_by_name("symptom-diagnosis-evals")
runs = [r for r in client.search_runs([experiment.experiment_id]) if "evals.program" in r.data.tags]
out = {"programs": {}, "all_traces": len(client.search_traces(locations=[experiment.experiment_id], max_results=500))}
for r in runs:
    program = r.data.tags["evals.program"]
    traces = client.search_traces(locations=[experiment.experiment_id], run_id=r.info.run_id, max_results=500)
    first = sorted(traces, key=lambda t: t.info.tags["evals.example_id"])[0] if traces else None
    models = client.search_logged_models([experiment.experiment_id], filter_string=f"source_run_id = '{r.info.run_id}'")
    out["programs"][program] = {
        "traces": len(traces),
        "assessed": sum(1 for t in traces if {a.name for a in t.info.assessments} >= {"expected_diagnosis", "correct"}),
        "wrong": sum(1 for t in traces if t.info.tags.get("evals.outcome") != "correct"),
        "spans": [s.name for s in first.data.spans] if first else [],
        "lm_input": json.dumps(first.data.spans[-1].inputs) if first else "",
        "windows": [[s.start_time_ns, s.end_time_ns] for s in first.data.spans] if first else [],
        "inputs": sorted((d.dataset.name, d.dataset.digest, d.tags[0].value) for d in r.inputs.dataset_inputs),
        "sample_fingerprint": r.data.params.get("sample.fingerprint", ""),
        "models": [m.model_id for m in models],
        "model_metrics": sorted({m.key for m in (models[0].metrics or [])}) if models else [],
    }
    name = "symptom-diagnosis." + program.replace("+", ".")
    versions = client.search_model_versions(f"name = '{name}'")
    out["programs"][program]["versions"] = sorted(v.source for v in versions)
if len(sys.argv) > 2:
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(sys.argv[2])
    frame = pd.DataFrame({"symptoms": ["itchy red rash", "swollen aching joints"]})
    out["predicted"] = model.predict(frame)["diagnosis"].tolist()
print(json.dumps(out))
"""


def native(uri: str, load: str | None = None) -> dict:
    """What the store holds for each program run (read in a subprocess: pytester and SQLAlchemy do not mix)."""
    args = [sys.executable, "-c", NATIVE_DUMP, uri, *([load] if load else [])]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@XDIST
def test_every_example_is_a_trace_with_assessments_and_programs_are_loadable_models(
    eval_project: pytest.Pytester, xdist: str
) -> None:
    result = run(eval_project, xdist, "--evals-programs zero_shot,tfidf_logreg")
    assert result.ret == 0, result.stdout.str()
    uri = f"sqlite:///{eval_project.path / 'mlflow.db'}"
    store = native(uri, "models:/symptom-diagnosis.tfidf_logreg@candidate")
    zero = store["programs"]["zero_shot"]
    assert zero["traces"] == zero["assessed"] == 44  # one per example, each with its assessments
    assert zero["wrong"] == 22  # the scripted LM is right on half: the run's Traces tab filters to them
    assert zero["spans"][0] == "zero_shot" and zero["spans"][1].startswith("LM ")
    assert len(zero["spans"]) == 2 and "symptoms" in zero["lm_input"]  # the rendered prompt
    (program_start, program_end), (lm_start, lm_end) = zero["windows"]
    # The LM span is the call's own start and end (an even split of the example would start it 1 ns in).
    assert program_start + 1 < lm_start <= lm_end <= program_end
    assert store["programs"]["tfidf_logreg"]["spans"] == ["tfidf_logreg"]  # no LM call
    assert store["all_traces"] == 88
    assert zero["inputs"] == [["symptom_to_diagnosis.test", zero["sample_fingerprint"][:16], "eval"]]
    for program in ("zero_shot", "tfidf_logreg"):
        entry = store["programs"][program]
        assert len(entry["models"]) == 1 and entry["versions"] == [f"models:/{entry['models'][0]}"]
        assert "accuracy" in entry["model_metrics"]  # the eval metrics are on the model's page
    from evals.labels import DIAGNOSIS_SET

    assert len(store["predicted"]) == 2 and set(store["predicted"]) <= DIAGNOSIS_SET


def test_a_spooled_session_syncs_its_traces_exactly_once(eval_project: pytest.Pytester) -> None:
    blocker = eval_project.path / "mlartifacts"  # artifacts cannot be written: the upload fails mid-way
    blocker.write_text("not a directory")
    assert run(eval_project, "-n 2").ret == 0
    blocker.unlink()
    uri = f"sqlite:///{eval_project.path / 'mlflow.db'}"
    assert native(uri)["all_traces"] == 0
    synced = cli(eval_project, "sync", "--spool", ".evals/spool")
    assert synced.returncode == 0, synced.stdout + synced.stderr
    store = native(uri)
    assert store["programs"]["zero_shot"]["traces"] == store["programs"]["zero_shot"]["assessed"] == 44
    assert cli(eval_project, "sync", "--spool", ".evals/spool").returncode == 0
    assert native(uri)["all_traces"] == 44


def test_traces_go_through_a_real_mlflow_server(eval_project: pytest.Pytester) -> None:
    server = MlflowServer(eval_project.path / "server").start()
    try:
        result = run(eval_project, "-n 2", f"--evals-tracking-uri {server.uri}")
        assert result.ret == 0, result.stdout.str()
        store = native(server.uri)
        assert store["programs"]["zero_shot"]["traces"] == store["programs"]["zero_shot"]["assessed"] == 44
        assert len(store["programs"]["zero_shot"]["models"]) == 1
    finally:
        server.kill()
