"""Programs as MLflow models: pyfunc from code, registry, load_champion, models serve (issue #13)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from evals.store import models
from evals.store.models import (
    ChampionFallbackWarning,
    ModelConfig,
    create_model_version,
    load_champion,
    log_program_model,
)
from tests.mlflow_native_helpers import QUIET, new_run

TEXTS = ["itchy skin rash with red patches", "stiff and painful joints every morning, arthritis"]


def train_pairs() -> list[tuple[str, str]]:
    from evals.labels import DIAGNOSES

    words = ("itchy red rash", "swollen aching joints", "pounding headache")
    return [(f"{word} {i} with {label}", label) for i, label in enumerate(DIAGNOSES) for word in words]


OPTIMIZER_OF = {"zero_shot+knn_few_shot": ("KNNFewShot", '{"k": 2}'), "zero_shot+labeled": ("LabeledFewShot", "{}")}


def state_of(program: str, train: list[tuple[str, str]]) -> dict:
    import dspy

    from programs.registry import OPTIMIZERS, PROGRAMS

    examples = [dspy.Example(symptoms=s, diagnosis=d).with_inputs("symptoms") for s, d in train]
    module = PROGRAMS[program.partition("+")[0]].build(examples)
    if program == "zero_shot+knn_few_shot":
        module = OPTIMIZERS["KNNFewShot"](k=2).shape(module, examples)
    elif program == "zero_shot+labeled":
        module = dspy.LabeledFewShot(k=3).compile(module, trainset=examples)  # demos in the state
    return {"program": program, "state": module.dump_state()}


def publish(uri: str, root: Path, program: str, lm_spec: str, api_base: str) -> tuple[str, str]:
    from mlflow.entities import Metric

    client, _, run = new_run(uri, root)
    client.log_batch(run, metrics=[Metric("accuracy", 0.75, int(time.time() * 1000), 0)])
    train = train_pairs()
    artifacts = models.write_model_files(root / "model-files", state_of(program, train), train)
    optimizer_cls, optimizer_params = OPTIMIZER_OF.get(program, ("", "{}"))
    config = ModelConfig(
        program=program,
        lm_spec=lm_spec,
        lm_api_base=api_base,
        optimizer_cls=optimizer_cls,
        optimizer_params=optimizer_params,
    )
    model_id = log_program_model(uri, run, config, artifacts)
    name = "symptom-diagnosis." + program.replace("+", ".")
    client.create_registered_model(name)
    client.set_registered_model_alias(name, "champion", create_model_version(client, uri, name, model_id, run))
    return run, model_id


@pytest.fixture
def fake():
    from tests.fake_openai import FakeOpenAI

    with FakeOpenAI() as server:
        yield server


@pytest.mark.parametrize(
    "program", ["zero_shot", "knn_few_shot", "tfidf_logreg", "zero_shot+knn_few_shot", "zero_shot+labeled"]
)
def test_the_champion_loads_from_the_registry_and_predicts_valid_labels(tmp_path: Path, fake, program: str) -> None:
    import mlflow

    from evals.labels import DIAGNOSIS_SET

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run, model_id = publish(uri, tmp_path, program, "" if program == "tfidf_logreg" else "openai/fake", fake.base_url)
    client = mlflow.MlflowClient(uri)
    version = client.get_model_version_by_alias("symptom-diagnosis." + program.replace("+", "."), "champion")
    assert (version.run_id, version.source) == (run, f"models:/{model_id}")
    logged = client.get_logged_model(model_id)
    assert logged.experiment_id == client.get_run(run).info.experiment_id
    assert [m.model_id for m in client.search_logged_models([logged.experiment_id])] == [model_id]
    assert json.loads(logged.tags["mlflow.modelVersions"]) == [
        {"name": "symptom-diagnosis." + program.replace("+", "."), "version": str(version.version)}
    ]
    assert [(m.key, m.value) for m in logged.metrics or []] == [("accuracy", 0.75)]  # eval metrics on the model
    files = {p.name for p in Path(logged.artifact_location.removeprefix("file://")).rglob("*")}
    assert {"program_model.py", "program.json", "train.jsonl", "input_example.json"} <= files
    assert not any(name.endswith((".pkl", ".pickle", ".cloudpickle")) for name in files)  # never a pickle
    with models.using_tracking_uri(uri):
        predicted = mlflow.pyfunc.load_model(
            "models:/symptom-diagnosis." + program.replace("+", ".") + "@champion"
        ).predict(pd.DataFrame({"symptoms": TEXTS}))
    assert list(predicted.columns) == ["diagnosis"]
    assert set(predicted["diagnosis"]) <= DIAGNOSIS_SET and len(predicted) == 2
    assert fake.stats.snapshot()["total"] == (0 if program == "tfidf_logreg" else 2)


def test_the_lm_is_overridable_at_load_time(tmp_path: Path, fake, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    publish(uri, tmp_path, "zero_shot", "openai/fake", "http://127.0.0.1:9/v1")  # logged with a dead server
    target = "models:/symptom-diagnosis.zero_shot@champion"
    with models.using_tracking_uri(uri):
        dead = mlflow.pyfunc.load_model(target).predict(pd.DataFrame({"symptoms": TEXTS}))
        assert dead["diagnosis"].isna().all() and fake.stats.snapshot()["total"] == 0
        fixed = mlflow.pyfunc.load_model(target, model_config={"lm_api_base": fake.base_url})
        assert fixed.predict(pd.DataFrame({"symptoms": TEXTS}))["diagnosis"].notna().all()
        monkeypatch.setenv("EVALS_LM_API_BASE", fake.base_url)
        assert mlflow.pyfunc.load_model(target).predict(pd.DataFrame({"symptoms": TEXTS}))["diagnosis"].notna().all()


def test_load_champion_falls_back_with_a_warning_when_the_registry_is_unreachable(tmp_path: Path) -> None:
    fallback = object()
    started = time.monotonic()
    with pytest.warns(ChampionFallbackWarning, match="knn_few_shot@champion could not be loaded"):
        assert load_champion("knn_few_shot", fallback, tracking_uri="http://127.0.0.1:9") is fallback
    assert time.monotonic() - started < 30
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException):
        load_champion("knn_few_shot", tracking_uri=f"sqlite:///{tmp_path / 'empty.db'}")


def test_load_champion_returns_the_registered_model(tmp_path: Path, fake) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    publish(uri, tmp_path, "tfidf_logreg", "", "")
    model = load_champion("tfidf_logreg", fallback="unused", tracking_uri=uri)
    assert model.predict(pd.DataFrame({"symptoms": TEXTS}))["diagnosis"].notna().all()


def test_mlflow_models_serve_answers_a_request(tmp_path: Path, fake) -> None:
    from tests.mlflow_server import free_port

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    publish(uri, tmp_path, "zero_shot", "openai/fake", fake.base_url)
    port = free_port()
    env = {**os.environ, **QUIET, "MLFLOW_TRACKING_URI": uri}
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            "models:/symptom-diagnosis.zero_shot@champion",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=tmp_path,
    )
    try:
        body = json.dumps({"dataframe_split": {"columns": ["symptoms"], "data": [[t] for t in TEXTS]}}).encode()
        answer = None
        deadline = time.monotonic() + 120
        while answer is None and time.monotonic() < deadline and process.poll() is None:
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/invocations", body, {"Content-Type": "application/json"}
                )
                answer = json.loads(urllib.request.urlopen(request, timeout=30).read())
            except OSError:
                time.sleep(1)
        assert answer is not None, (tmp_path / "serve.log").read_text()[-2000:]
        from evals.labels import DIAGNOSIS_SET

        labels = [row["diagnosis"] for row in answer["predictions"]]
        assert len(labels) == 2 and set(labels) <= DIAGNOSIS_SET
    finally:
        os.killpg(process.pid, 15)
        process.wait(30)
