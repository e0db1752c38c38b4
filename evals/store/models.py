"""Evaluated programs as MLflow models: a pyfunc "models from code" wrapper, never a pickle.

The logged model holds the program's dspy JSON state (``program.json``), the training
examples the program is built from (``train.jsonl``: knn_few_shot retrieves its demos
from them, tfidf_logreg refits on them) and a flat ``model_config``: the program name, the
registry module, the optimizer shape and the LM (spec and decoding parameters, never a
key). Loading rebuilds the program from the registry and loads the state. The LM can be
replaced at load time: ``model_config={"lm_spec": ...}`` in ``mlflow.pyfunc.load_model``,
or the environment (``EVALS_LM``, ``EVALS_LM_API_BASE``, which win).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

WRAPPER_FILE = Path(__file__).with_name("program_model.py")
STATE_ARTIFACT = "program.json"
TRAIN_ARTIFACT = "train.jsonl"
SHAPE_TRAIN_ARTIFACT = "shape_train.jsonl"
REGISTRY_MODULE = "programs.registry"
INPUT_EXAMPLE = "Severe throbbing headache on one side with nausea and sensitivity to light."
FAST_FAIL_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
}
"""Set while the champion loads unless the user set them: an unreachable registry falls back in seconds."""
MODEL_VERSIONS_TAG = "mlflow.modelVersions"
ENV_OVERRIDES = {"lm_spec": "EVALS_LM", "lm_api_base": "EVALS_LM_API_BASE"}


class ChampionFallbackWarning(UserWarning):
    """The registry could not give the champion; the fallback program is used."""


@dataclass(frozen=True)
class ModelConfig:
    """What the wrapper needs besides the artifacts (flat: MLflow overrides top-level keys only).

    Attributes:
        program: The evaluated program, ``base`` or ``base+optimizer``.
        registry: The module holding ``PROGRAMS`` (ProgramSpec by name).
        optimizer_cls: The optimizer's class when the program is compiled ("" otherwise);
            ``KNNFewShot`` programs are rebuilt around their training examples.
        optimizer_params: The optimizer's parameters as JSON.
        lm_spec: The LM spec (``openai/gpt-4o-mini``, ``smollm2``...); "" for programs without LM.
        lm_temperature: Sampling temperature.
        lm_max_tokens: Completion budget per call.
        lm_api_base: Base URL of an OpenAI-compatible server ("" for none), without credentials.
        lm_timeout_s: Per-call timeout.
    """

    program: str
    registry: str = REGISTRY_MODULE
    optimizer_cls: str = ""
    optimizer_params: str = "{}"
    lm_spec: str = ""
    lm_temperature: float = 0.0
    lm_max_tokens: int = 384
    lm_api_base: str = ""
    lm_timeout_s: float = 120.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> ModelConfig:
        """The config logged with the model, with load-time overrides; the environment wins."""
        values = {key: data[key] for key in cls.__dataclass_fields__ if key in data}
        env = os.environ if environ is None else environ
        for key, variable in ENV_OVERRIDES.items():
            if env.get(variable):
                values[key] = env[variable]
        if "program" not in values:
            raise ValueError("model_config has no 'program'")
        return cls(**values)


def build_program(
    config: ModelConfig,
    state: Mapping[str, Any],
    train: Sequence[tuple[str, str]],
    shape_train: Sequence[tuple[str, str]] | None = None,
) -> Any:
    """Rebuild the program from the registry and load its dspy JSON state (never unpickled).

    A compiled program whose optimizer wraps the student (the registry's KNNFewShot has a
    ``shape``) is wrapped the same way, around ``shape_train`` (the optimizer's train set).
    """
    import importlib

    import dspy

    from evals.config.optimizers import optimizer_class

    registry = importlib.import_module(config.registry)
    base = config.program.partition("+")[0]
    examples = [dspy.Example(symptoms=s, diagnosis=d).with_inputs("symptoms") for s, d in train]
    module = registry.PROGRAMS[base].build(examples)
    if config.optimizer_cls:
        cls = optimizer_class(config.optimizer_cls, getattr(registry, "OPTIMIZERS", {}))
        if hasattr(cls, "shape"):
            pairs = shape_train if shape_train is not None else train
            shaped = [dspy.Example(symptoms=s, diagnosis=d).with_inputs("symptoms") for s, d in pairs]
            module = cls(**json.loads(config.optimizer_params or "{}")).shape(module, shaped)
    module.load_state(dict(state.get("state", state)))
    return module


def build_lm(config: ModelConfig) -> Any:
    """The program's LM from the config, or None for programs without one."""
    if not config.lm_spec:
        return None
    from evals.lm.spec import build_lm as build
    from evals.lm.spec import parse_lm_spec

    spec = parse_lm_spec(
        config.lm_spec,
        temperature=float(config.lm_temperature),
        max_tokens=int(config.lm_max_tokens),
        api_base=config.lm_api_base or None,
        timeout_s=float(config.lm_timeout_s),
    )
    return build(spec, cache=False)


def predict_labels(program: Any, lm: Any, texts: Sequence[str]) -> list[str | None]:
    """Run the program on each text; an answer outside the 22 labels (or an LM error) is None."""
    import dspy

    from evals.labels import DIAGNOSIS_SET

    labels: list[str | None] = []
    with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
        for text in texts:
            try:
                answer = getattr(program(symptoms=str(text)), "diagnosis", None)
            except Exception:  # one failed example must not fail the batch
                answer = None
            label = str(answer).strip().lower() if answer is not None else None
            labels.append(label if label in DIAGNOSIS_SET else None)
    return labels


def read_train(path: str | Path) -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in Path(path).read_text("utf-8").splitlines() if line.strip()]
    return [(str(row["symptoms"]), str(row["diagnosis"])) for row in rows]


def write_model_files(
    directory: Path,
    state: Mapping[str, Any],
    train: Sequence[tuple[str, str]],
    shape_train: Sequence[tuple[str, str]] | None = None,
) -> dict[str, str]:
    """Write the artifacts of a program model; returns MLflow's ``artifacts`` mapping."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / STATE_ARTIFACT).write_text(json.dumps(dict(state), ensure_ascii=False))
    artifacts = {"state": str(directory / STATE_ARTIFACT)}
    for key, name, pairs in (("train", TRAIN_ARTIFACT, train), ("shape_train", SHAPE_TRAIN_ARTIFACT, shape_train)):
        if pairs is not None:
            lines = (json.dumps({"symptoms": s, "diagnosis": d}, ensure_ascii=False) for s, d in pairs)
            (directory / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
            artifacts[key] = str(directory / name)
    return artifacts


def model_artifacts(directory: Path) -> dict[str, str]:
    """The ``artifacts`` mapping of model files written by :func:`write_model_files`."""
    names = {"state": STATE_ARTIFACT, "train": TRAIN_ARTIFACT, "shape_train": SHAPE_TRAIN_ARTIFACT}
    return {key: str(directory / name) for key, name in names.items() if (directory / name).is_file()}


def log_program_model(
    tracking_uri: str,
    run_id: str,
    config: ModelConfig,
    artifacts: Mapping[str, str],
    *,
    code_paths: Sequence[str] = (),
) -> str:
    """Log the program as a pyfunc model on ``run_id`` (metrics of the run get linked); returns the model id.

    The input example is stored, not run: validating it would call the LM during an upload.
    """
    import pandas as pd
    from mlflow.models import Model, ModelSignature
    from mlflow.types import ColSpec, Schema

    signature = ModelSignature(
        inputs=Schema([ColSpec("string", "symptoms")]), outputs=Schema([ColSpec("string", "diagnosis")])
    )
    from mlflow import MlflowClient

    # The logged model belongs to the run's experiment (Model.log would take the global one).
    experiment_id = MlflowClient(tracking_uri).get_run(run_id).info.experiment_id
    with using_tracking_uri(tracking_uri, experiment_id), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info = Model.log(
            artifact_path=None,
            name=config.program,  # the Models page names the program (no "." allowed there; "+" is)
            flavor=_PYFUNC_UNVALIDATED,
            flavor_name="pyfunc.ModelFromCode",
            run_id=run_id,
            python_model=str(WRAPPER_FILE),
            artifacts=dict(artifacts),
            model_config=config.to_dict(),
            signature=signature,
            input_example=pd.DataFrame({"symptoms": [INPUT_EXAMPLE]}),
            pip_requirements=_requirements(),
            code_paths=list(code_paths) or None,
            validate_serving_input=False,
            tags={"evals.program": config.program},
        )
    return str(info.model_id)


@contextmanager
def using_tracking_uri(uri: str | None, experiment_id: str | None = None) -> Iterator[None]:
    """MLflow's global tracking URI (and experiment) set for the block: some MLflow paths read only those."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    previous_experiment = os.environ.get("MLFLOW_EXPERIMENT_ID")
    if uri:
        mlflow.set_tracking_uri(uri)
    if experiment_id is not None:
        os.environ["MLFLOW_EXPERIMENT_ID"] = experiment_id
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
        if experiment_id is not None:
            if previous_experiment is None:
                os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
            else:
                os.environ["MLFLOW_EXPERIMENT_ID"] = previous_experiment


def _save_unvalidated(*, validate_serving_input: bool = False, **kwargs: Any) -> Any:
    import mlflow.pyfunc

    return mlflow.pyfunc.save_model(**kwargs)


# Model.log runs the input example through the model (an LM call) unless its flavor accepts
# validate_serving_input=False, which mlflow.pyfunc.save_model does not: this shim does.
_PYFUNC_UNVALIDATED = SimpleNamespace(__name__="mlflow.pyfunc", save_model=_save_unvalidated)


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("mlflow", "dspy", "scikit-learn", "pandas")]


def logged_model_of(client: Any, experiment_id: str, run_id: str) -> str | None:
    """The id of the program model logged on ``run_id``, or None."""
    models = client.search_logged_models([experiment_id], filter_string=f"source_run_id = '{run_id}'")
    return str(models[0].model_id) if models else None


def create_model_version(
    client: Any, tracking_uri: str, name: str, model_id: str, run_id: str, tags: Mapping[str, str] | None = None
) -> str:
    """A new version of ``name`` pointing to the logged model, listed on the model's page."""
    with using_tracking_uri(tracking_uri):  # the registry resolves models:/<id> through the global URI
        version = str(
            client.create_model_version(
                name, f"models:/{model_id}", run_id=run_id, tags=dict(tags or {}), model_id=model_id
            ).version
        )
    # What mlflow.register_model does too: the logged model's page lists its registered versions.
    linked = json.loads(client.get_logged_model(model_id).tags.get(MODEL_VERSIONS_TAG) or "[]")
    client.set_logged_model_tags(
        model_id, {MODEL_VERSIONS_TAG: json.dumps([*linked, {"name": name, "version": version}])}
    )
    return version


def load_champion(
    program: str, fallback: Any = None, *, tracking_uri: str | None = None, alias: str = "champion"
) -> Any:
    """The champion of ``program`` from the registry as a pyfunc model, or ``fallback`` when unreachable.

    Args:
        program: The evaluated program's name (``knn_few_shot``, ``zero_shot+bootstrap_few_shot``).
        fallback: Returned as it is, with a :class:`ChampionFallbackWarning`, when the registry
            cannot be reached or has no champion (e.g. the uncompiled program).
        tracking_uri: The registry; MLflow's default (``MLFLOW_TRACKING_URI``) when None.
        alias: The alias to load.

    Raises:
        Exception: What MLflow raised, when there is no fallback.
    """
    import mlflow

    uri = f"models:/symptom-diagnosis.{program.replace('+', '.')}@{alias}"
    saved = {key: os.environ.get(key) for key in FAST_FAIL_ENV}
    os.environ.update({key: value for key, value in FAST_FAIL_ENV.items() if saved[key] is None})
    try:
        with using_tracking_uri(tracking_uri):
            return mlflow.pyfunc.load_model(uri)
    except Exception as exc:
        if fallback is None:
            raise
        reason = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)[:200]
        warnings.warn(
            f"{uri} could not be loaded ({reason}); using the fallback", ChampionFallbackWarning, stacklevel=2
        )
        return fallback
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
