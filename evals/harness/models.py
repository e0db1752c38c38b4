"""What a program needs to become an MLflow model: its build inputs and LM configuration (plain data).

The controller puts one entry per evaluated program on the session context; the bundle writes
it under ``models/<program>/`` and the upload logs it as a pyfunc model
(:mod:`evals.store.models`). Keys never enter it: the LM is its spec and decoding parameters,
and a server URL loses any ``user:password@``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from evals import secrets
from evals.config.optimizers import split_name

if TYPE_CHECKING:
    from evals.harness.resources import Harness


def program_model(harness: Harness, name: str) -> dict[str, Any]:
    """``{"config": ModelConfig fields, "train": [[symptoms, diagnosis], ...], "shape_train": ... or None}``."""
    base, optimizer = split_name(name)
    spec = harness.registry[base]
    lm = harness.lm_spec()
    settings = harness.settings
    config: dict[str, Any] = {"program": name, "registry": settings["registry"]}
    if not getattr(spec, "reference", False):
        config.update(
            lm_spec=settings["lm"],
            lm_temperature=lm.temperature,
            lm_max_tokens=lm.max_tokens,
            lm_api_base=secrets.mask_url_credentials(settings["lm-api-base"] or ""),
            lm_timeout_s=lm.timeout_s,
        )
    shape_train = None
    if optimizer is not None:
        optimizer_config = harness.optimizer_setup.optimizers[optimizer]
        config.update(optimizer_cls=optimizer_config.cls, optimizer_params=json.dumps(dict(optimizer_config.params)))
        if optimizer_config.trainset_per_diagnosis is not None:
            shape_train = _pairs(harness.dspy_examples("train", optimizer_config.trainset_per_diagnosis))
    return {"config": config, "train": _pairs(harness.dspy_examples("train")), "shape_train": shape_train}


def _pairs(examples: list[Any]) -> list[list[str]]:
    return [[str(e.symptoms), str(e.diagnosis)] for e in examples]
