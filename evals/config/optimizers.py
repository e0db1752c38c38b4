"""Named optimizer configurations (the optimizers file, ``programs/optimizers.yaml`` by default).

A configuration is plain data, parsed and validated here; :mod:`evals.harness.optimize` turns
it into a dspy optimizer and compiles with it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any

from evals.config.settings import OPTIONS_BY_NAME
from evals.config.validation import load_yaml_strict
from evals.errors import ConfigError

CLASSES = ("LabeledFewShot", "BootstrapFewShot", "BootstrapFewShotWithRandomSearch", "KNNFewShot", "MIPROv2", "GEPA")
USES_METRIC = {"BootstrapFewShot", "BootstrapFewShotWithRandomSearch", "MIPROv2", "GEPA"}
USES_VALSET = {"BootstrapFewShotWithRandomSearch", "MIPROv2", "GEPA"}
AUTO_LEVELS = ("light", "medium", "heavy")
GEPA_BUDGETS = ("auto", "max_metric_calls", "max_full_evals")
ENTRY_KEYS = ("class", "params", "compile", "trainset_per_diagnosis", "valset_per_diagnosis")
SEPARATOR = "+"
DEFAULT_REGISTRY = str(OPTIONS_BY_NAME["registry"].default)


@dataclass(frozen=True)
class OptimizerConfig:
    """One named optimizer configuration.

    Attributes:
        name: Its name in optimizers.yaml (used in program names like ``zero_shot+bootstrap_few_shot``).
        cls: The dspy optimizer class name.
        params: Constructor keyword arguments (the metric is added for optimizers that take one).
        compile_args: Extra keyword arguments of ``compile``.
        trainset_per_diagnosis: Training examples per diagnosis (None: the whole train split).
        valset_per_diagnosis: Validation examples per diagnosis (None: the whole val split).
    """

    name: str
    cls: str
    params: Mapping[str, Any] = field(default_factory=dict)
    compile_args: Mapping[str, Any] = field(default_factory=dict)
    trainset_per_diagnosis: int | None = None
    valset_per_diagnosis: int | None = None

    @property
    def uses_valset(self) -> bool:
        return self.cls in USES_VALSET

    def fingerprint(self) -> str:
        """Hash of the whole configuration (part of the compile-cache key)."""
        data = [
            self.cls,
            dict(self.params),
            dict(self.compile_args),
            self.trainset_per_diagnosis,
            self.valset_per_diagnosis if self.uses_valset else None,
        ]
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def loggable(self) -> dict[str, str]:
        flat = {"optimizer.name": self.name, "optimizer.class": self.cls}
        flat.update({f"optimizer.{key}": str(value) for key, value in {**self.params, **self.compile_args}.items()})
        return flat


@dataclass(frozen=True)
class OptimizerSetup:
    """The parsed optimizers.yaml: configurations and the evaluated (program, optimizer) pairs."""

    source: str
    optimizers: Mapping[str, OptimizerConfig]
    evaluate: tuple[str, ...]


def split_name(name: str) -> tuple[str, str | None]:
    """``"zero_shot+bootstrap_few_shot"`` -> ``("zero_shot", "bootstrap_few_shot")``; plain names -> (name, None)."""
    base, sep, optimizer = name.partition(SEPARATOR)
    return base, (optimizer if sep else None)


def load_setup(path: Path, programs: Collection[str], extra: Mapping[str, Any] | None = None) -> OptimizerSetup:
    """Read and validate optimizers.yaml; every problem is one ConfigError line naming file and key.

    ``extra``: the optimizer classes the program registry adds to dspy's (default: the default registry's).
    """
    where = str(path)
    if not path.is_file():
        return OptimizerSetup(where, {}, ())
    data = load_yaml_strict(path) or {}  # strict: a key twice is an error, not "last wins"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping with keys 'optimizers' and 'evaluate'")
    unknown = sorted(str(key) for key in set(data) - {"optimizers", "evaluate"})
    if unknown:
        raise ConfigError(f"{where}: {unknown[0]}: unknown key; allowed: 'optimizers', 'evaluate'")
    raw = data.get("optimizers") or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: optimizers: expected a mapping of name -> configuration")
    optimizers = {str(name): _parse_entry(str(name), entry, where, extra) for name, entry in raw.items()}
    raw_pairs = data.get("evaluate") or []
    if not isinstance(raw_pairs, list):
        raise ConfigError(f"{where}: evaluate: expected a list of program+optimizer names, found {raw_pairs!r}")
    evaluate = tuple(raw_pairs)
    for pair in evaluate:
        check_pair(str(pair), programs, optimizers, f"{where}: evaluate")
    return OptimizerSetup(where, optimizers, tuple(str(p) for p in evaluate))


def check_pair(name: str, programs: Collection[str], optimizers: Mapping[str, OptimizerConfig], where: str) -> None:
    """Raise ConfigError unless ``name`` is ``<known program>+<known optimizer>``."""
    base, optimizer = split_name(name)
    if base not in programs:
        within = f" in {name!r}" if optimizer is not None else ""
        raise ConfigError(f"{where}: unknown program {base!r}{within}; known programs: {', '.join(sorted(programs))}")
    if optimizer is not None and optimizer not in optimizers:
        known = ", ".join(sorted(optimizers)) or "(none configured)"
        raise ConfigError(f"{where}: unknown optimizer {optimizer!r} in {name!r}; known optimizers: {known}")


def _parse_entry(name: str, entry: object, where: str, extra: Mapping[str, Any] | None) -> OptimizerConfig:
    at = f"{where}: optimizers.{name}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{at}: expected a mapping with keys {', '.join(ENTRY_KEYS)}")
    unknown = sorted(set(entry) - set(ENTRY_KEYS))
    if unknown:
        raise ConfigError(f"{at}: unknown key {unknown[0]!r}; allowed: {', '.join(ENTRY_KEYS)}")
    cls = entry.get("class")
    if cls not in CLASSES:
        raise ConfigError(f"{at}.class: unknown optimizer class {cls!r}; allowed: {', '.join(CLASSES)}")
    for key in ("params", "compile"):
        if not isinstance(entry.get(key) or {}, dict):
            raise ConfigError(f"{at}.{key}: expected a mapping of keyword arguments")
    config = OptimizerConfig(
        name=name,
        cls=cls,
        params=dict(entry.get("params") or {}),
        compile_args=dict(entry.get("compile") or {}),
        trainset_per_diagnosis=_per_diagnosis(
            entry.get("trainset_per_diagnosis", "all"), f"{at}.trainset_per_diagnosis"
        ),
        valset_per_diagnosis=_per_diagnosis(entry.get("valset_per_diagnosis", "all"), f"{at}.valset_per_diagnosis"),
    )
    _check_params(config, at, extra)
    return config


def _per_diagnosis(value: object, at: str) -> int | None:
    if value == "all":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{at}: expected a positive integer or 'all', found {value!r}")
    return value


def _check_params(config: OptimizerConfig, at: str, extra: Mapping[str, Any] | None) -> None:
    """Reject keyword arguments the optimizer's constructor does not take, before any compile."""
    import inspect

    accepted = set(inspect.signature(optimizer_class(config.cls, extra).__init__).parameters) - {"self", "metric"}
    unknown = sorted(set(config.params) - accepted)
    if unknown:
        raise ConfigError(
            f"{at}.params: {config.cls} takes no argument {unknown[0]!r}; it takes: {', '.join(sorted(accepted))}"
        )
    params = config.params
    if (
        "auto" in params
        and params["auto"] not in AUTO_LEVELS
        and not (config.cls == "MIPROv2" and params["auto"] is None)
    ):
        raise ConfigError(f"{at}.params.auto: expected one of {', '.join(AUTO_LEVELS)}, found {params['auto']!r}")
    if config.cls == "GEPA":
        _check_gepa_params(params, at)


def _check_gepa_params(params: Mapping[str, Any], at: str) -> None:
    """GEPA takes exactly one budget, positive counts, and a reflection LM given as an LM spec."""
    budgets = [key for key in GEPA_BUDGETS if params.get(key) is not None]
    if len(budgets) != 1:
        found = ", ".join(budgets) or "none"
        raise ConfigError(f"{at}.params: GEPA needs exactly one budget of {', '.join(GEPA_BUDGETS)} (found: {found})")
    for key in ("max_metric_calls", "max_full_evals"):
        value = params.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{at}.params.{key}: expected a positive integer, found {value!r}")
    reflection = params.get("reflection_lm")
    if reflection is not None and (not isinstance(reflection, str) or not reflection.strip()):
        raise ConfigError(
            f"{at}.params.reflection_lm: expected an LM spec such as 'smollm2' (omit it for the "
            f"session's LM), found {reflection!r}"
        )


def registry_optimizers(module: str = DEFAULT_REGISTRY) -> dict[str, Any]:
    """The optimizer classes a program registry adds to dspy's (its ``OPTIMIZERS``, name -> class)."""
    return dict(getattr(import_module(module), "OPTIMIZERS", {}))


def optimizer_class(cls: str, extra: Mapping[str, Any] | None = None) -> Any:
    """The optimizer class named ``cls``: one the registry adds (``extra``), else dspy's."""
    classes = registry_optimizers() if extra is None else extra
    if cls in classes:
        return classes[cls]
    import dspy

    return getattr(dspy, cls)
