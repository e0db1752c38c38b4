"""Datasets as run inputs (issue #13)."""

from __future__ import annotations

import json
from pathlib import Path

from evals.store.inputs import DatasetInput, log_datasets
from tests.mlflow_native_helpers import new_run

FINGERPRINT = "ab" * 32


def test_hub_and_local_sources() -> None:
    hub = DatasetInput("symptom_to_diagnosis.test", FINGERPRINT, "gretelai/symptom_to_diagnosis", "722cfb0", 44, "eval")
    assert hub.source_json()[0] == "hugging_face"
    assert json.loads(hub.source_json()[1])["revision"] == "722cfb0"
    local = DatasetInput("symptom_to_diagnosis.train", FINGERPRINT, "/data/s2d", None, 800, "train")
    assert local.source_json() == ("local", '{"uri": "/data/s2d"}')
    assert hub.digest == FINGERPRINT[:16]


def test_datasets_are_run_inputs_with_digest_source_and_context(tmp_path: Path) -> None:
    client, _, run = new_run(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path)
    inputs = [
        DatasetInput("symptom_to_diagnosis.test", FINGERPRINT, "gretelai/symptom_to_diagnosis", "722cfb0", 44, "eval"),
        DatasetInput("symptom_to_diagnosis.train", "cd" * 32, "/data/s2d", None, 800, "train"),
    ]
    log_datasets(client, run, inputs)  # type: ignore[arg-type]
    log_datasets(client, run, inputs)  # type: ignore[arg-type]  # a re-upload adds nothing
    logged = client.get_run(run).inputs.dataset_inputs  # type: ignore[attr-defined]
    seen = {(d.dataset.name, d.dataset.digest, d.dataset.source_type, d.tags[0].value) for d in logged}
    assert seen == {
        ("symptom_to_diagnosis.test", FINGERPRINT[:16], "hugging_face", "eval"),
        ("symptom_to_diagnosis.train", "cd" * 8, "local", "train"),
    }
    assert json.loads(next(d for d in logged if d.tags[0].value == "eval").dataset.profile) == {"num_rows": 44}
