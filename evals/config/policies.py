"""The policies of thresholds.yaml's ``regression:``, ``drift:`` and ``robustness:`` sections.

:func:`parse_policies` turns a parsed :class:`~evals.config.thresholds.Thresholds` into typed
:class:`Policies`, once per session; the gates and the promotion command read them from there.
Every problem is one :class:`~evals.errors.ConfigError` line naming the file, key, value found
and what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from evals.config.thresholds import Thresholds
from evals.config.validation import Location, Rule, found, is_int, is_number, parse_section
from evals.errors import ConfigError

MismatchMode = Literal["refuse", "intersect"]
UnavailableMode = Literal["fail", "warn"]
MISMATCH_MODES: tuple[str, ...] = ("refuse", "intersect")
UNAVAILABLE_MODES: tuple[str, ...] = ("fail", "warn")
MIN_BOOTSTRAP_SAMPLES = 100
PROMOTION_KEY = "promote_requires"
"""Key of ``regression:`` in thresholds.yaml: params a session must match to be promoted."""
ROBUSTNESS_KEYS = ("min_stability", "min_valid_rate")


@dataclass(frozen=True)
class RegressionPolicy:
    """How a candidate is judged against the champion (the ``regression:`` section).

    Attributes:
        alpha: Significance level; intervals are ``1 - alpha`` two-sided.
        max_drop: Largest accuracy or macro-F1 drop tolerated (0-1 scale).
        max_diagnosis_drop: Largest per-diagnosis recall drop tolerated.
        min_diagnosis_support: Diagnoses with fewer examples are reported, never flagged.
        bootstrap_samples: Resamples of the paired bootstrap.
        seed: Seed of the bootstrap, so that a comparison is reproducible.
        on_mismatch: ``"refuse"`` when the example ids differ, or ``"intersect"``.
        on_unavailable: What a champion lookup that failed does to the session: ``"fail"``
            it or ``"warn"``; None picks ``"fail"`` under CI or ``--evals-promote``
            (:meth:`unavailable_mode`).
        max_detectable_drop: When set, promotion refuses a comparison whose minimum
            detectable accuracy drop (80% power) is larger.
    """

    alpha: float = 0.05
    max_drop: float = 0.02
    max_diagnosis_drop: float = 0.20
    min_diagnosis_support: int = 5
    bootstrap_samples: int = 2000
    seed: int = 0
    on_mismatch: MismatchMode = "refuse"
    on_unavailable: UnavailableMode | None = None
    max_detectable_drop: float | None = None

    @property
    def confidence(self) -> str:
        """The interval level as people write it, e.g. ``"95%"``."""
        return f"{(1 - self.alpha) * 100:g}%"

    def unavailable_mode(self, trigger: str, promote: bool) -> UnavailableMode:
        """``on_unavailable``, or its default: ``"fail"`` when the trigger is ci or promoting, else ``"warn"``."""
        if self.on_unavailable is not None:
            return self.on_unavailable
        return "fail" if trigger == "ci" or promote else "warn"


_FRACTION: Rule = (lambda v: is_number(v) and 0 <= v <= 1, "a number between 0 and 1")
_REGRESSION_RULES: dict[str, Rule] = {
    "alpha": (lambda v: is_number(v) and 0 < v < 1, "a number strictly between 0 and 1"),
    "max_drop": _FRACTION,
    "max_diagnosis_drop": _FRACTION,
    "min_diagnosis_support": (lambda v: is_int(v) and v >= 0, "a whole number >= 0"),
    "bootstrap_samples": (
        lambda v: is_int(v) and v >= MIN_BOOTSTRAP_SAMPLES,
        f"a whole number >= {MIN_BOOTSTRAP_SAMPLES}",
    ),
    "seed": (lambda v: is_int(v) and v >= 0, "a whole number >= 0"),
    "on_mismatch": (lambda v: v in MISMATCH_MODES, " or ".join(map(repr, MISMATCH_MODES))),
    "on_unavailable": (lambda v: v in UNAVAILABLE_MODES, " or ".join(map(repr, UNAVAILABLE_MODES))),
    "max_detectable_drop": (lambda v: is_number(v) and 0 < v <= 1, "a number above 0 and at most 1"),
}


def parse_regression_policy(raw: Mapping[str, object] | None, source: str) -> RegressionPolicy:
    """Validate the ``regression:`` section (``Thresholds.regression``) of ``source``.

    Raises:
        ConfigError: An unknown key or a value out of range, naming the file, key path,
            value found and what is allowed; None or ``{}`` gives the defaults.
    """
    policy = RegressionPolicy(**parse_section(raw, source, "regression", _REGRESSION_RULES, RegressionPolicy()))
    limit = policy.max_detectable_drop
    if limit is not None and limit <= policy.max_drop:
        # A true drop of max_drop is flagged at most half the time: every comparison would be too weak.
        raise (
            Location(source, "regression")
            .child("max_detectable_drop")
            .error(f"expected a number above max_drop ({policy.max_drop:g}) and at most 1, found {found(limit)}")
        )
    return policy


@dataclass(frozen=True)
class DriftPolicy:
    """When a nightly run counts as drifted (the ``drift:`` section).

    Attributes:
        band_k: Half-width of the control band in sample standard deviations.
        min_history: Nights of history needed before the band gives a verdict (>= 2).
        max_churn: Largest share of changed predictions tolerated between two nights.
        alpha: Significance level of the label-shift test.
        window: How many of the most recent nights the band is computed from.
    """

    band_k: float = 3.0
    min_history: int = 3
    max_churn: float = 0.15
    alpha: float = 0.01
    window: int = 10


_DRIFT_RULES: dict[str, Rule] = {
    "band_k": (lambda v: is_number(v) and 0 < v < math.inf, "a positive number"),
    "min_history": (lambda v: is_int(v) and v >= 2, "a whole number >= 2"),
    "max_churn": (lambda v: is_number(v) and 0 <= v <= 1, "a number between 0 and 1"),
    "alpha": (lambda v: is_number(v) and 0 < v < 1, "a number strictly between 0 and 1"),
    "window": (lambda v: is_int(v) and v >= 2, "a whole number >= 2"),
}


def parse_drift_policy(raw: Mapping[str, object] | None, source: str) -> DriftPolicy:
    """Validate the ``drift:`` section (``Thresholds.drift``) of ``source``.

    Raises:
        ConfigError: An unknown key, a value out of range, or a ``window`` shorter than
            ``min_history`` (the band could never give a verdict), naming the file, key
            path, value found and what is allowed; None or ``{}`` gives the defaults.
    """
    policy = DriftPolicy(**parse_section(raw, source, "drift", _DRIFT_RULES, DriftPolicy()))
    if policy.window < policy.min_history:
        where = Location(source, "drift").child("window")
        raise where.error(f"expected a whole number >= min_history ({policy.min_history}), found {policy.window}")
    return policy


@dataclass(frozen=True)
class RobustnessPolicy:
    """The ``robustness:`` section of thresholds.yaml."""

    min_stability: float = 0.0
    min_valid_rate: float = 0.0


def parse_robustness_policy(raw: Mapping[str, object] | None, source: str) -> RobustnessPolicy:
    """Validate the ``robustness:`` section; one ConfigError line naming file, key and value."""
    values = {}
    for key, value in dict(raw or {}).items():
        if key not in ROBUSTNESS_KEYS:
            raise ConfigError(f"{source}: robustness.{key}: unknown key {key!r}; allowed: {', '.join(ROBUSTNESS_KEYS)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ConfigError(f"{source}: robustness.{key}: expected a number between 0 and 1, found {value!r}")
        values[str(key)] = float(value)
    return RobustnessPolicy(**values)


def split_policy(raw: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """Separate the promotion requirements from the statistical policy of ``regression:``."""
    section = dict(raw or {})
    required = section.pop(PROMOTION_KEY, None) or {}
    return section, {str(k): str(v) for k, v in dict(required).items()}


@dataclass(frozen=True)
class Policies:
    """thresholds.yaml, parsed once: program limits and the policies of the session gates.

    Attributes:
        thresholds: Program limits (``programs:``), with the file's source and hash.
        regression: The regression gate's statistical policy.
        promote_requires: Params a session must match to be promoted.
        drift: The nightly drift policy.
        robustness: The stability floors.
    """

    thresholds: Thresholds
    regression: RegressionPolicy = field(default_factory=lambda: RegressionPolicy())
    promote_requires: Mapping[str, str] = field(default_factory=dict)
    drift: DriftPolicy = field(default_factory=lambda: DriftPolicy())
    robustness: RobustnessPolicy = field(default_factory=lambda: RobustnessPolicy())


def parse_policies(thresholds: Thresholds) -> Policies:
    """Validate the gate sections of ``thresholds`` into typed policies.

    Raises:
        ConfigError: The first problem in ``regression:``, ``drift:`` or ``robustness:``.
    """
    statistical, required = split_policy(thresholds.regression)
    return Policies(
        thresholds=thresholds,
        regression=parse_regression_policy(statistical, thresholds.source),
        promote_requires=required,
        drift=parse_drift_policy(thresholds.drift, thresholds.source),
        robustness=parse_robustness_policy(thresholds.robustness, thresholds.source),
    )
