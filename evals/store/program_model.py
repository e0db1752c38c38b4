"""The pyfunc "models from code" file of an evaluated DSPy program (see :mod:`evals.store.models`).

MLflow copies this file into every logged program model and runs it on load: it defines no
weights and unpickles nothing. ``load_context`` rebuilds the program from the registry and
its dspy JSON state; ``predict`` takes a frame with a ``symptoms`` column.
"""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel


class DSPyProgramModel(PythonModel):
    """Answer ``diagnosis`` for each ``symptoms`` text (None when no valid label came back)."""

    # The input schema is the signature logged with the model, not type hints on predict. MLflow checks
    # the hints when the class is defined, under its own "once" warning filter (a filter here cannot
    # silence its "add type hints" advice), and skips that check for classes that set this attribute.
    _skip_type_hint_validation = True

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
