"""Named optimizer configurations (programs/optimizers.yaml) and how each one compiles.

A configuration is plain data; :func:`make_optimizer` turns it into a dspy optimizer
and :func:`compile_program` runs ``optimizer.compile(student, trainset=..., valset=...)``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evals.errors import ConfigError
from evals.config.validation import load_yaml_strict

CONFIG_FILE = Path(__file__).with_name("optimizers.yaml")
CLASSES = ("LabeledFewShot", "BootstrapFewShot", "BootstrapFewShotWithRandomSearch", "KNNFewShot", "MIPROv2", "GEPA")
USES_METRIC = {"BootstrapFewShot", "BootstrapFewShotWithRandomSearch", "MIPROv2", "GEPA"}
USES_VALSET = {"BootstrapFewShotWithRandomSearch", "MIPROv2", "GEPA"}
AUTO_LEVELS = ("light", "medium", "heavy")
GEPA_BUDGETS = ("auto", "max_metric_calls", "max_full_evals")
REFLECTION_MAX_TOKENS = 1024
"""Room for the instruction GEPA's reflection LM writes (a reflection_lm spec of its own)."""
ENTRY_KEYS = ("class", "params", "compile", "trainset_per_diagnosis", "valset_per_diagnosis")
SEPARATOR = "+"


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
        data = [self.cls, dict(self.params), dict(self.compile_args), self.trainset_per_diagnosis,
                self.valset_per_diagnosis if self.uses_valset else None]
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


def load_setup(path: Path, programs: Collection[str]) -> OptimizerSetup:
    """Read and validate optimizers.yaml; every problem is one ConfigError line naming file and key."""
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
    optimizers = {str(name): _parse_entry(str(name), entry, where) for name, entry in raw.items()}
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


def _parse_entry(name: str, entry: object, where: str) -> OptimizerConfig:
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
        name=name, cls=cls, params=dict(entry.get("params") or {}), compile_args=dict(entry.get("compile") or {}),
        trainset_per_diagnosis=_per_diagnosis(entry.get("trainset_per_diagnosis", "all"), f"{at}.trainset_per_diagnosis"),
        valset_per_diagnosis=_per_diagnosis(entry.get("valset_per_diagnosis", "all"), f"{at}.valset_per_diagnosis"),
    )
    _check_params(config, at)
    return config


def _per_diagnosis(value: object, at: str) -> int | None:
    if value == "all":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{at}: expected a positive integer or 'all', found {value!r}")
    return value


def _check_params(config: OptimizerConfig, at: str) -> None:
    """Reject keyword arguments the optimizer's constructor does not take, before any compile."""
    import inspect

    accepted = set(inspect.signature(_optimizer_class(config.cls).__init__).parameters) - {"self", "metric"}
    unknown = sorted(set(config.params) - accepted)
    if unknown:
        raise ConfigError(f"{at}.params: {config.cls} takes no argument {unknown[0]!r}; it takes: {', '.join(sorted(accepted))}")
    params = config.params
    if "auto" in params and params["auto"] not in AUTO_LEVELS and not (config.cls == "MIPROv2" and params["auto"] is None):
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
        raise ConfigError(f"{at}.params.reflection_lm: expected an LM spec such as 'smollm2' (omit it for the "
                          f"session's LM), found {reflection!r}")


def _optimizer_class(cls: str) -> Any:
    if cls == "KNNFewShot":
        from programs.knn import KNNFewShot

        return KNNFewShot
    import dspy

    return getattr(dspy, cls)


def make_optimizer(config: OptimizerConfig, metric: Any) -> Any:
    """Instantiate the dspy optimizer of a configuration.

    GEPA gets the metric wrapped as a feedback metric and its reflection LM built here: the
    ``reflection_lm`` spec of its params, or the session's LM (dspy's configured one) without it.
    """
    params = dict(config.params)
    if config.cls == "GEPA":
        metric = feedback_metric(metric)
        params["reflection_lm"] = reflection_lm(params.get("reflection_lm"))
    extra = {"metric": metric} if config.cls in USES_METRIC else {}
    return _optimizer_class(config.cls)(**extra, **params)


def reflection_lm(spec: str | None) -> Any:
    """GEPA's reflection LM: the session's LM when ``spec`` is None, else the LM the spec names."""
    import dspy

    if spec is None:
        if dspy.settings.lm is None:
            raise ConfigError("GEPA: no reflection_lm configured and no session LM to reflect with")
        return dspy.settings.lm
    from evals.lm.spec import build_lm, parse_lm_spec

    return build_lm(parse_lm_spec(spec, max_tokens=REFLECTION_MAX_TOKENS))


def feedback_metric(metric: Any) -> Any:
    """Wrap a ``metric(example, pred, trace)`` as GEPA's ``metric(gold, pred, trace, pred_name, pred_trace)``.

    The score is the metric's (as a float); the feedback says what was answered, what was right,
    and whether the answer was a known diagnosis at all.
    """
    import dspy

    from evals.labels import DIAGNOSIS_SET

    def gepa_metric(gold: Any, pred: Any, trace: Any = None, pred_name: Any = None, pred_trace: Any = None) -> Any:
        score = float(metric(gold, pred, trace))
        answer = str(getattr(pred, "diagnosis", "") or "").strip()
        if score >= 1.0:
            feedback = f"Correct: the diagnosis is {gold.diagnosis!r}."
        elif answer.lower() not in DIAGNOSIS_SET:
            feedback = (f"Wrong: {answer!r} is not one of the allowed diagnoses; the answer must be exactly one "
                        f"allowed label, here {gold.diagnosis!r}.")
        else:
            feedback = f"Wrong: answered {answer!r}, but these symptoms point to {gold.diagnosis!r}."
        return dspy.Prediction(score=score, feedback=feedback)

    return gepa_metric


def compile_program(
    config: OptimizerConfig, student: Any, trainset: Sequence[Any], valset: Sequence[Any], metric: Any
) -> Any:
    """Run the optimizer and return the compiled program (a new module)."""
    optimizer = make_optimizer(config, metric)
    kwargs: dict[str, Any] = {"trainset": list(trainset), **config.compile_args}
    if config.uses_valset:
        kwargs["valset"] = list(valset)
    return optimizer.compile(student, **kwargs)


def empty_shape(config: OptimizerConfig, student: Any, trainset: Sequence[Any]) -> Any:
    """The module a compiled state loads into: the student itself, or its KNN wrapper."""
    if config.cls == "KNNFewShot":
        from programs.knn import KNNFewShotProgram

        return KNNFewShotProgram(student, trainset, k=int(config.params.get("k", 3)))
    return student
