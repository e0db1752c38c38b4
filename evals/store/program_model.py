"""The pyfunc "models from code" file of an evaluated DSPy program (see :mod:`evals.store.models`).

MLflow copies this file into every logged program model and runs it on load: it defines no
weights and unpickles nothing. ``load_context`` rebuilds the program from the registry and
its dspy JSON state; ``predict`` takes a frame with a ``symptoms`` column.
"""

from __future__ import annotations

import warnings
from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel

# The input schema is the signature logged with the model, not type hints on predict: MLflow's advice is noise.
warnings.filterwarnings("ignore", message=".*type hints to the `predict` method", category=UserWarning)


class DSPyProgramModel(PythonModel):
    """Answer ``diagnosis`` for each ``symptoms`` text (None when no valid label came back)."""

    def load_context(self, context: Any) -> None:
        import json
        from pathlib import Path

        from evals.store.models import ModelConfig, build_lm, build_program, read_train

        self.config = ModelConfig.from_mapping(context.model_config or {})
        state = json.loads(Path(context.artifacts["state"]).read_text("utf-8"))
        shape = context.artifacts.get("shape_train")
        self.program = build_program(
            self.config, state, read_train(context.artifacts["train"]), read_train(shape) if shape else None
        )
        self.lm = build_lm(self.config)

    # No annotations: MLflow reads them as the input schema (the signature logged with the model is the schema).
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        import pandas as pd

        from evals.store.models import predict_labels

        if isinstance(model_input, pd.DataFrame):
            texts = model_input["symptoms"].astype(str).tolist()
        elif isinstance(model_input, dict):
            texts = [
                str(t)
                for t in (
                    model_input["symptoms"] if isinstance(model_input["symptoms"], list) else [model_input["symptoms"]]
                )
            ]
        else:
            texts = [str(t) for t in model_input]
        return pd.DataFrame({"diagnosis": predict_labels(self.program, self.lm, texts)})


mlflow.models.set_model(DSPyProgramModel())
