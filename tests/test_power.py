"""The gate knows its power: the minimum detectable drop, checked against simulated sessions.

The simulations build records and run them through :func:`evals.stats.regression.compare`, so they
test the real decision rule (statsmodels' McNemar, the ``max_drop`` tolerance), not the
rejection region that :mod:`evals.stats.power` derives from it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from evals.config.policies import RegressionPolicy, parse_regression_policy
from evals.errors import ConfigError
from evals.labels import DIAGNOSES
from evals.records import ExampleRecord
from evals.stats.power import (
    detection_probability,
    discordance_estimate,
    minimum_detectable_drop,
)
from evals.stats.regression import compare

K = len(DIAGNOSES)
POLICY = RegressionPolicy(bootstrap_samples=100)


def records(right: np.ndarray) -> list[ExampleRecord]:
    return [
        ExampleRecord(
            "knn", f"test-{i:04d}", "", DIAGNOSES[i % K], DIAGNOSES[i % K] if ok else DIAGNOSES[(i + 1) % K], 1.0
        )
        for i, ok in enumerate(right)
    ]


def simulated_detection_rate(
    n: int, drop: float, discordance: float, trials: int, seed: int, policy: RegressionPolicy = POLICY
) -> float:
    """Share of simulated champion/candidate pairs whose accuracy ``compare`` calls a regression.

    Per example: a true loss with probability ``drop`` and noise flips either way with
    ``discordance / 2`` each (the model of :mod:`evals.stats.power`); the rest agree (right or wrong).
    """
    rng = np.random.default_rng(seed)
    flagged = 0
    for _ in range(trials):
        u = rng.random(n)
        lost = u < drop + discordance / 2  # champion right, candidate wrong
        won = (u >= drop + discordance / 2) & (u < drop + discordance)
        both_right = ~lost & ~won & (rng.random(n) < 0.6)
        comparison = compare(records(won | both_right), records(lost | both_right), policy)
        flagged += comparison.accuracy.verdict == "regression"
    return flagged / trials


def test_the_minimum_detectable_drop_has_80_percent_power_in_simulation() -> None:
    n, discordance = 22, discordance_estimate(22, 4, 1)  # the issue's case: 22 examples, b=4, c=1
    mdd = minimum_detectable_drop(n, discordance, POLICY.alpha, POLICY.max_drop)
    assert 0.3 < mdd < 0.7  # a 14-point drop is far below what 22 examples can show
    trials = 300  # binomial sd of a rate near 0.8: 0.023
    at_mdd = simulated_detection_rate(n, mdd, discordance, trials, seed=1)
    assert at_mdd >= 0.8 - 3 * 0.023, at_mdd
    below = simulated_detection_rate(n, mdd / 2, discordance, trials, seed=2)
    assert below <= 0.4, below
    issue_drop = simulated_detection_rate(n, 0.14, discordance, 200, seed=3)
    assert issue_drop <= 0.2, issue_drop  # the issue's 14-point drop is caught ~1 time in 10


@pytest.mark.parametrize(("n", "discordance", "drop"), [(22, 5 / 22, 0.3), (110, 0.08, 0.08), (212, 0.08, 0.05)])
def test_the_exact_detection_probability_matches_simulation(n: int, discordance: float, drop: float) -> None:
    trials = 300
    exact = float(detection_probability(n, drop, discordance, POLICY.alpha, POLICY.max_drop))
    simulated = simulated_detection_rate(n, drop, discordance, trials, seed=n)
    assert abs(simulated - exact) <= 4 * math.sqrt(exact * (1 - exact) / trials) + 0.01, (simulated, exact)


def test_power_grows_with_n_and_shrinks_with_noise() -> None:
    small, large = (minimum_detectable_drop(n, 0.08, 0.05, 0.02) for n in (44, 212))
    noisy = minimum_detectable_drop(212, 0.30, 0.05, 0.02)
    assert large < small and large < noisy
    # As the docstring of evals.stats.regression says: n=212 with ~8% flips catches a 10-point drop.
    assert minimum_detectable_drop(212, 0.08, 0.05, 0.02) <= 0.10
    assert detection_probability(212, 0.10, 0.08, 0.05, 0.02) >= 0.9


def test_a_blind_comparison_reports_one_and_no_discordance_uses_the_floor() -> None:
    assert minimum_detectable_drop(4, discordance_estimate(4, 0, 0), 0.05, 0.02) == 1.0  # 4 pairs never reach p<0.05
    assert discordance_estimate(22, 0, 0) == pytest.approx(1 / 22)
    assert minimum_detectable_drop(22, 1 / 22, 0.05, 0.02) < minimum_detectable_drop(22, 5 / 22, 0.05, 0.02)


def test_a_comparison_states_its_power_and_whether_it_is_too_weak() -> None:
    n = 22
    candidate = records(np.array([not 1 <= i <= 4 for i in range(n)]))  # wrong on examples 1-4: b=4
    champion = records(np.array([i != 0 for i in range(n)]))  # c=1: the champion missed example 0
    result = compare(candidate, champion, RegressionPolicy(bootstrap_samples=100, max_detectable_drop=0.10))
    assert (result.mcnemar_b, result.mcnemar_c) == (4, 1)
    assert result.accuracy.verdict == "ok"  # a real 14-point drop, but not significant on 22 examples
    assert result.min_detectable_drop == minimum_detectable_drop(n, 5 / 22, 0.05, 0.02)
    assert result.too_weak() == (
        f"knn: comparison too weak: on n=22 it could only see accuracy drops of ≥ {result.min_detectable_drop:.2f}, "
        "thresholds require 0.10 (regression.max_detectable_drop)"
    )
    assert "minimum detectable drop" in result.to_markdown()
    assert compare(candidate, champion, RegressionPolicy(bootstrap_samples=100)).too_weak() is None


def test_policy_keys_for_unavailable_and_power() -> None:
    policy = parse_regression_policy({"on_unavailable": "warn", "max_detectable_drop": 1}, "t.yaml")
    assert policy.on_unavailable == "warn" and policy.max_detectable_drop == 1.0
    assert isinstance(policy.max_detectable_drop, float)
    assert policy.unavailable_mode("ci", promote=True) == "warn"
    default = RegressionPolicy()
    assert default.unavailable_mode("ci", promote=False) == "fail"
    assert default.unavailable_mode("local", promote=True) == "fail"
    assert default.unavailable_mode("local", promote=False) == "warn"
    assert default.unavailable_mode("nightly", promote=False) == "warn"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"on_unavailable": "ignore"},
            "t.yaml: regression.on_unavailable: expected 'fail' or 'warn', found 'ignore' (a string)",
        ),
        (
            {"max_detectable_drop": 0},
            "t.yaml: regression.max_detectable_drop: expected a number above 0 and at most 1, found 0",
        ),
        (
            {"max_detectable_drop": "10%"},
            "t.yaml: regression.max_detectable_drop: expected a number above 0 and at most 1, found '10%' (a string)",
        ),
        (
            {"max_detectable_drop": 0.05, "max_drop": 0.05},
            "t.yaml: regression.max_detectable_drop: expected a number above max_drop (0.05) and at most 1, found 0.05",
        ),
    ],
)
def test_bad_policy_values_are_one_line_errors(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_regression_policy(raw, "t.yaml")
    assert str(info.value) == message or str(info.value).startswith(message)
    assert "\n" not in str(info.value)
