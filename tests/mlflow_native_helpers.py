"""Shared helpers of the MLflow-native tests (issue #13)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from evals.calls import LMCall
from evals.store.traces import TracedExample

QUIET = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


def new_run(uri: str, root: Path) -> tuple[Any, str, str]:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment = client.create_experiment(f"exp-{time.time_ns()}", artifact_location=(root / "artifacts").as_uri())
    return client, experiment, client.create_run(experiment).info.run_id


def examples(n: int, program: str = "zero_shot") -> list[TracedExample]:
    """n examples: every third invalid, every fifth (not invalid) wrong, the rest correct; one LM call each."""
    made = []
    for i in range(n):
        call = LMCall(
            "openai/fake",
            f'[{{"role": "user", "content": "symptoms: text {i}"}}]',
            '{"diagnosis": "migraine"}',
            40,
            6,
            0.001,
        )
        predicted: str | None = "migraine"
        error = None
        if i % 3 == 0:
            predicted, error = None, "answer outside the 22 labels: 'flu'"
        elif i % 5 == 0:
            predicted = "allergy"
        made.append(
            TracedExample(
                program, f"test-{i:04d}", f"text {i}", "migraine", predicted, error, 25.0, time.time(), (call,)
            )
        )
    return made
