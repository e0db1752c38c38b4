"""What the bundle carries for MLflow's GenAI pages, and how the upload writes it.

Beside ``session.json``, ``artifacts/`` and ``programs/`` (the run layout), a bundle holds::

    <bundle>/traces/<program>.jsonl     one cleaned example per line, with its LM calls
    <bundle>/models/<program>/          model.json (ModelConfig), program.json (dspy state), train.jsonl
    <bundle>/inputs.json                program -> the datasets its run used (eval sample, train set)

None of these is logged as a run artifact: the upload turns them into traces, logged models
(registered later) and run inputs. A bundle without them (older spools) uploads as before.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evals.calls import LMCall
from evals.store.inputs import DatasetInput, log_datasets
from evals.store.models import ModelConfig, log_program_model
from evals.store.traces import TracedExample, UploadStats, log_traces

if TYPE_CHECKING:
    from mlflow import MlflowClient

TRACES_DIR = "traces"
MODELS_DIR = "models"
INPUTS_FILE = "inputs.json"
MODEL_CONFIG_FILE = "model.json"


@dataclass(frozen=True)
class NativeUpload:
    """What the upload wrote beside the runs.

    Attributes:
        traces: Trace upload stats (count, assessed, MLflow calls by kind).
        models: Program -> logged model id.
    """

    traces: UploadStats
    models: dict[str, str]


def write_traces(bundle: Path, program: str, examples: Iterable[TracedExample]) -> None:
    directory = bundle / TRACES_DIR
    directory.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(asdict(example), ensure_ascii=False) for example in examples]
    (directory / f"{program}.jsonl").write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")


def read_traces(bundle: Path) -> dict[str, list[TracedExample]]:
    """Program -> its traced examples (a bundle without traces gives {})."""
    found: dict[str, list[TracedExample]] = {}
    for path in sorted((bundle / TRACES_DIR).glob("*.jsonl")):
        rows = [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]
        found[path.stem] = [_traced(row) for row in rows]
    return found


def _traced(row: dict[str, Any]) -> TracedExample:
    calls = tuple(LMCall.from_dict(call) for call in row.pop("calls", []))
    return TracedExample(**row, calls=calls)


def write_model(
    bundle: Path,
    config: ModelConfig,
    state: Mapping[str, Any],
    train: Sequence[tuple[str, str]],
    shape_train: Sequence[tuple[str, str]] | None = None,
) -> None:
    from evals.store.models import write_model_files

    directory = bundle / MODELS_DIR / config.program
    write_model_files(directory, state, train, shape_train)
    (directory / MODEL_CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=1))


def read_model(bundle: Path, program: str) -> tuple[ModelConfig, dict[str, str]] | None:
    from evals.store.models import model_artifacts

    directory = bundle / MODELS_DIR / program
    if not (directory / MODEL_CONFIG_FILE).is_file():
        return None
    config = ModelConfig.from_mapping(json.loads((directory / MODEL_CONFIG_FILE).read_text()), environ={})
    return config, model_artifacts(directory)


def write_inputs(bundle: Path, inputs: Mapping[str, Sequence[DatasetInput]]) -> None:
    data = {program: [asdict(d) for d in datasets] for program, datasets in inputs.items()}
    (bundle / INPUTS_FILE).write_text(json.dumps(data, indent=1))


def read_inputs(bundle: Path) -> dict[str, list[DatasetInput]]:
    path = bundle / INPUTS_FILE
    if not path.is_file():
        return {}
    return {
        program: [DatasetInput(**d) for d in datasets] for program, datasets in json.loads(path.read_text()).items()
    }


def upload_native(
    client: MlflowClient,
    tracking_uri: str,
    experiment_id: str,
    bundle: Path,
    session_id: str,
    run_ids: Mapping[str, str],
    *,
    replace: bool,
    code_paths: Sequence[str] = (),
) -> NativeUpload:
    """Log the run inputs, the program models and the traces of a bundle's programs.

    Args:
        client: MlflowClient on ``tracking_uri``.
        tracking_uri: Where the runs are.
        experiment_id: The session's experiment.
        bundle: The bundle directory.
        session_id: The session id (part of each trace id).
        run_ids: Program -> its nested run (metrics already logged: they get linked to the model).
        replace: True when an earlier, interrupted upload of this session may have written traces.
        code_paths: Extra code files for the model (prototype only).
    """
    inputs = read_inputs(bundle)
    models: dict[str, str] = {}
    for program, run_id in run_ids.items():
        log_datasets(client, run_id, inputs.get(program, []))
        found = read_model(bundle, program)
        if found is not None:
            models[program] = log_program_model(tracking_uri, run_id, found[0], found[1], code_paths=code_paths)
    traced = read_traces(bundle)
    by_run = {run_ids[program]: examples for program, examples in traced.items() if program in run_ids}
    stats = log_traces(client, experiment_id, session_id, by_run, replace=replace)
    return NativeUpload(stats, models)


def delete_run_models(client: MlflowClient, experiment_id: str, run_ids: Iterable[str]) -> int:
    """Delete the logged models of runs an interrupted upload left (they are about to be deleted)."""
    deleted = 0
    for run_id in run_ids:
        for model in client.search_logged_models([experiment_id], filter_string=f"source_run_id = '{run_id}'"):
            client.delete_logged_model(model.model_id)
            deleted += 1
    return deleted
