"""The bundle parts for MLflow (traces, models, run inputs) and their upload (issue #13)."""

from __future__ import annotations

import json
from pathlib import Path

from evals.store.inputs import DatasetInput
from evals.store.models import ModelConfig
from evals.store.native import (
    delete_run_models,
    read_inputs,
    read_model,
    read_traces,
    upload_native,
    write_inputs,
    write_model,
    write_traces,
)
from tests.mlflow_native_helpers import examples, new_run

TRAIN = [(f"rash and itching {i}", "allergy") for i in range(3)] + [(f"joint pain {i}", "arthritis") for i in range(3)]


def make_bundle(root: Path) -> Path:
    import dspy

    from programs.registry import PROGRAMS

    bundle = root / "bundle"
    write_traces(bundle, "tfidf_logreg", examples(5, "tfidf_logreg"))
    trainset = [dspy.Example(symptoms=s, diagnosis=d).with_inputs("symptoms") for s, d in TRAIN]
    state = {"program": "tfidf_logreg", "state": PROGRAMS["tfidf_logreg"].build(trainset).dump_state()}
    write_model(bundle, ModelConfig(program="tfidf_logreg"), state, TRAIN)
    write_inputs(bundle, {"tfidf_logreg": [DatasetInput("s2d.test", "ab" * 32, "/data", None, 5, "eval")]})
    return bundle


def test_the_bundle_parts_read_back_as_written(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path)
    assert [e.example_id for e in read_traces(bundle)["tfidf_logreg"]] == [f"test-{i:04d}" for i in range(5)]
    assert read_traces(bundle)["tfidf_logreg"][0].calls[0].model == "openai/fake"
    config, artifacts = read_model(bundle, "tfidf_logreg")  # type: ignore[misc]
    assert config.program == "tfidf_logreg" and json.loads(Path(artifacts["state"]).read_text())["program"]
    assert read_inputs(bundle)["tfidf_logreg"][0].context == "eval"
    assert (read_traces(tmp_path), read_model(tmp_path, "x"), read_inputs(tmp_path)) == ({}, None, {})


def test_upload_native_writes_inputs_model_and_traces_once(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client, experiment, run = new_run(uri, tmp_path)
    bundle = make_bundle(tmp_path)
    done = upload_native(client, uri, experiment, bundle, "s1", {"tfidf_logreg": run}, replace=False)  # type: ignore[arg-type]
    assert done.traces.traces == 5 and "delete_traces" not in done.traces.calls
    assert len(client.search_traces(locations=[experiment], run_id=run)) == 5  # type: ignore[attr-defined]
    assert client.get_run(run).inputs.dataset_inputs[0].dataset.name == "s2d.test"  # type: ignore[attr-defined]
    assert client.get_logged_model(done.models["tfidf_logreg"]).source_run_id == run  # type: ignore[attr-defined]
    assert delete_run_models(client, experiment, [run]) == 1  # type: ignore[arg-type]
