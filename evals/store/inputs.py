"""The examples a session evaluated (and a compiled program was trained on) as MLflow run inputs.

Each becomes an MLflow dataset on the run — the UI's "Datasets" column — with the sample's
fingerprint as digest (MLflow keeps 36 characters: the first 16 hex digits are used, as in the
compile cache), the Hub id and revision or the local directory as source, and the context
``eval`` or ``train``. The dataset manifest stays an artifact.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow import MlflowClient

DIGEST_CHARS = 16
CONTEXT_TAG = "mlflow.data.context"


@dataclass(frozen=True)
class DatasetInput:
    """One dataset a run used.

    Attributes:
        name: E.g. ``symptom_to_diagnosis.test``.
        fingerprint: The sha256 fingerprint of the rows (``evals.data.fingerprint``).
        source: A Hub id (``gretelai/symptom_to_diagnosis``) or a local directory.
        revision: The Hub revision, or None for a local directory.
        rows: Number of examples.
        context: ``eval`` or ``train``.
    """

    name: str
    fingerprint: str
    source: str
    revision: str | None
    rows: int
    context: str

    @property
    def digest(self) -> str:
        return self.fingerprint[:DIGEST_CHARS]

    @property
    def hub(self) -> bool:
        return self.revision is not None

    def source_json(self) -> tuple[str, str]:
        """MLflow's (source type, source JSON) for this dataset."""
        if self.hub:
            return "hugging_face", json.dumps({"path": self.source, "revision": self.revision, "split": self.name})
        return "local", json.dumps({"uri": self.source})


def to_entity(dataset: DatasetInput) -> object:
    """The ``mlflow.entities.DatasetInput`` for ``log_inputs``."""
    from mlflow.entities import Dataset, InputTag
    from mlflow.entities import DatasetInput as MlflowDatasetInput

    source_type, source = dataset.source_json()
    schema = {
        "mlflow_colspec": [
            {"type": "string", "name": "symptoms", "required": True},
            {"type": "string", "name": "diagnosis", "required": True},
        ]
    }
    entity = Dataset(
        name=dataset.name,
        digest=dataset.digest,
        source_type=source_type,
        source=source,
        schema=json.dumps(schema),
        profile=json.dumps({"num_rows": dataset.rows}),
    )
    return MlflowDatasetInput(entity, tags=[InputTag(CONTEXT_TAG, dataset.context)])


def log_datasets(client: MlflowClient, run_id: str, datasets: Sequence[DatasetInput]) -> None:
    """Log the datasets as inputs of ``run_id`` in one call (logging the same one twice adds nothing)."""
    if datasets:
        client.log_inputs(run_id, datasets=[to_entity(d) for d in datasets])  # type: ignore[misc]
