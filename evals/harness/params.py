"""The MLflow params of a session and of each program, computed from the harness's resources."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from evals.config.optimizers import split_name
from evals.gates.drift import lm_fingerprint_of, sample_fingerprint
from evals.records import ExampleRecord
from evals.store.schema import FINGERPRINT_PARAM, SAMPLE_PARAM, SOURCE_HASH_PARAM

if TYPE_CHECKING:
    from evals.harness.resources import Harness


def session_params(harness: Harness, thresholds_sha256: str, workers: int) -> dict[str, str]:
    """LM spec, dataset, sample, thresholds file, worker count, git facts and package versions."""
    settings = harness.settings
    dataset = harness.loaded_dataset
    splits = harness.dataset_manifest["splits"]
    params = {
        **harness.lm_spec().params(),
        "dataset.source": dataset.source,
        "dataset.revision": str(dataset.revision),
        "dataset.split": settings["split"],
        "dataset.fingerprint": splits[settings["split"]]["fingerprint"],
        "dataset.train_fingerprint": splits["train"]["fingerprint"],
        "sample.per_diagnosis": str(settings["per-diagnosis"] or "all"),
        "sample.seed": str(settings["seed"]),
        "sample.examples": str(len(harness.sampled_examples)),
        "thresholds.path": str(settings.path("thresholds")),
        "thresholds.sha256": thresholds_sha256,
        "xdist.workers": str(workers),
    }
    params.update(harness.environment)
    return params


def program_params(
    harness: Harness, records: Sequence[ExampleRecord], session: Mapping[str, str], events: Sequence[Mapping[str, Any]]
) -> dict[str, dict[str, str]]:
    """Each evaluated program's params: name, source hash, sample and LM fingerprints, optimizer and compile."""
    registry, setup = harness.registry, harness.optimizer_setup
    params = {}
    for name in dict.fromkeys(r.program for r in records):
        base, optimizer = split_name(name)
        mine = [r for r in records if r.program == name]
        params[name] = {
            "program.name": name,
            "program.base": base,
            SOURCE_HASH_PARAM: registry[base].source_hash(),
            "program.description": registry[base].description,
            SAMPLE_PARAM: sample_fingerprint(mine),
            FINGERPRINT_PARAM: lm_fingerprint_of(dict(session), mine),
        }
        if optimizer is not None:
            params[name].update(setup.optimizers[optimizer].loggable())
            params[name].update(compile_params(name, events))
    return params


def compile_params(program: str, events: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Summarise the compile events of one program: who compiled it, how long, how many LM calls."""
    mine = [e for e in events if e["program"] == program]
    compiled = [e for e in mine if e["action"] == "compiled"]
    source = compiled[0] if compiled else (mine[0] if mine else None)
    if source is None:
        return {}
    return {
        "compile.key": source["key"],
        "compile.action": "compiled" if compiled else "loaded from cache",
        "compile.count": str(len(compiled)),
        "compile.duration_s": f"{source['duration_s']:.1f}",
        "compile.lm_calls": str(source["lm_calls"]),
        "compile.path": source["path"],
    }


def program_state(harness: Harness, name: str, params: Mapping[str, str]) -> dict[str, Any]:
    """The dspy JSON state of an evaluated program: the compile-cache entry, or a fresh build."""
    import json
    from pathlib import Path

    compiled = params.get("compile.path")
    if compiled and Path(compiled).is_file():
        return dict(json.loads(Path(compiled).read_text()))
    return {"program": name, "state": harness.program(name).dump_state()}
