"""Compile a program with a named optimizer configuration (:mod:`evals.config.optimizers`).

:func:`make_optimizer` turns a configuration into a dspy optimizer (or one the program registry
adds in its ``OPTIMIZERS``) and :func:`compile_program` runs
``optimizer.compile(student, trainset=..., valset=...)``, showing its progress on a sink when
given one (:mod:`evals.harness.compile_progress`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from evals.config.optimizers import USES_METRIC, OptimizerConfig, optimizer_class
from evals.errors import ConfigError

if TYPE_CHECKING:
    from evals.harness.compile_progress import CompileSink, Tracker

REFLECTION_MAX_TOKENS = 1024
"""Room for the instruction GEPA's reflection LM writes (a reflection_lm spec of its own)."""


def make_optimizer(
    config: OptimizerConfig, metric: Any, extra: Mapping[str, Any] | None = None, tracker: Tracker | None = None
) -> Any:
    """Instantiate the dspy optimizer of a configuration.

    GEPA gets the metric wrapped as a feedback metric and its reflection LM built here: the
    ``reflection_lm`` spec of its params, or the session's LM (dspy's configured one) without it.
    With a ``tracker``, the metric tells it of each call, and GEPA of its budget and scores.
    """
    params = dict(config.params)
    if tracker is not None:
        from evals.harness.compile_progress import counting_metric

        metric = counting_metric(metric, tracker)
    if config.cls == "GEPA":
        metric = feedback_metric(metric)
        params["reflection_lm"] = reflection_lm(params.get("reflection_lm"))
        if tracker is not None:
            params["gepa_kwargs"] = gepa_kwargs_with_progress(params.get("gepa_kwargs"), tracker)
    kwargs = {"metric": metric} if config.cls in USES_METRIC else {}
    return optimizer_class(config.cls, extra)(**kwargs, **params)


def gepa_kwargs_with_progress(given: Mapping[str, Any] | None, tracker: Tracker) -> dict[str, Any]:
    """GEPA's ``gepa_kwargs`` plus a callback that reports its budget and scores (when gepa takes callbacks)."""
    from evals.harness.compile_progress import GepaProgress, gepa_callbacks_supported

    kwargs = dict(given or {})
    if gepa_callbacks_supported():
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), GepaProgress(tracker)]
    return kwargs


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
            feedback = (
                f"Wrong: {answer!r} is not one of the allowed diagnoses; the answer must be exactly one "
                f"allowed label, here {gold.diagnosis!r}."
            )
        else:
            feedback = f"Wrong: answered {answer!r}, but these symptoms point to {gold.diagnosis!r}."
        return dspy.Prediction(score=score, feedback=feedback)

    return gepa_metric


def compile_program(
    config: OptimizerConfig,
    student: Any,
    trainset: Sequence[Any],
    valset: Sequence[Any],
    metric: Any,
    extra: Mapping[str, Any] | None = None,
    *,
    progress: CompileSink | None = None,
    name: str | None = None,
) -> Any:
    """Run the optimizer and return the compiled program (a new module).

    Args:
        progress: Where the compile's progress goes while it runs, and its summary at the end
            (None: nowhere, and the optimizer runs untouched).
        name: The compiled program's name in progress lines (default: the configuration's name).
    """
    from evals.harness.compile_progress import Tracker, dspy_hooks, plan, watching

    tracker = Tracker() if progress is not None else None
    optimizer = make_optimizer(config, metric, extra, tracker)
    kwargs: dict[str, Any] = {"trainset": list(trainset), **config.compile_args}
    if config.uses_valset:
        kwargs["valset"] = list(valset)
    if tracker is None:
        return optimizer.compile(student, **kwargs)
    try:
        tracker.planned(*plan(config, optimizer, student, trainset, valset))
    except Exception:  # noqa: BLE001 - progress is a display: an optimizer it cannot read still compiles
        tracker.planned("metric calls", None)
    with watching(progress, tracker, name or config.name, config.cls), dspy_hooks(tracker):
        return optimizer.compile(student, **kwargs)


def empty_shape(
    config: OptimizerConfig, student: Any, trainset: Sequence[Any], extra: Mapping[str, Any] | None = None
) -> Any:
    """The module a compiled state loads into: the student itself, or what the optimizer wraps it in.

    An optimizer that wraps the student (the registry's KNNFewShot) says how with a ``shape(student,
    trainset)`` method; dspy's optimizers return the student's own shape.
    """
    cls = optimizer_class(config.cls, extra)
    if hasattr(cls, "shape"):
        return cls(**config.params).shape(student, trainset)
    return student
