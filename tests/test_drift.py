"""Tests of nightly drift: control band, churn, label shift, fingerprints and the report."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from evals.config.policies import DriftPolicy, parse_drift_policy
from evals.errors import ConfigError
from evals.labels import DIAGNOSES
from evals.records import ExampleRecord
from evals.stats.drift import (
    assess,
    churn,
    classify_drift,
    control_band,
    label_shift,
    lm_fingerprint,
)

N, K = 212, len(DIAGNOSES)


def records(predictions: Sequence[str | None], start: int = 0) -> list[ExampleRecord]:
    """One record per prediction, ids ``test-<start + i>``, gold always the first label."""
    return [ExampleRecord("knn", f"test-{start + i:04d}", "", DIAGNOSES[0], p, 1.0) for i, p in enumerate(predictions)]


# --- control band ----------------------------------------------------------------------------


def test_control_band_is_mean_plus_minus_k_sample_sd() -> None:
    low, mean, high = control_band([0.5, 0.6, 0.7], k=2)
    assert mean == pytest.approx(0.6)
    assert (low, high) == pytest.approx((0.6 - 2 * 0.1, 0.6 + 2 * 0.1))  # sample sd is 0.1


def test_control_band_sd_floor_and_minimum_history() -> None:
    assert control_band([0.6, 0.6, 0.6], k=3) == pytest.approx((0.6, 0.6, 0.6))
    assert control_band([0.6, 0.6], k=3, min_sd=0.01) == pytest.approx((0.57, 0.6, 0.63))
    with pytest.raises(ValueError, match="at least 2"):
        control_band([0.6], k=3)


@pytest.mark.parametrize(
    ("accuracy", "history", "verdict"),
    [
        (0.60, [0.59, 0.60, 0.61, 0.60], "within band"),
        (0.50, [0.59, 0.60, 0.61, 0.60], "below band"),
        (0.70, [0.59, 0.60, 0.61, 0.60], "above band"),
        (0.20, [0.59, 0.60], "not enough history"),
        (0.50, [0.10] * 20 + [0.59, 0.60, 0.61], "below band"),  # only the window counts
    ],
)
def test_band_verdicts(accuracy: float, history: list[float], verdict: str) -> None:
    policy = DriftPolicy(window=3)
    report = assess(records(["allergy"] * N), [], history, accuracy, "lm", "lm", "p", "p", policy)
    assert report.band_verdict == verdict
    assert len(report.history) == min(len(history), 3)
    assert bool(report.alarms()) == (verdict in ("below band", "above band"))


# --- churn -----------------------------------------------------------------------------------


def test_churn_counts_changed_predictions_over_shared_ids() -> None:
    before = records(["allergy", "migraine", None, "dengue"])
    now = records(["allergy", "malaria", None, None, "typhoid"])  # test-0004 is not shared
    assert churn(now, before) == pytest.approx(2 / 4)
    assert churn(before, before) == 0.0


def test_churn_needs_shared_ids_and_unique_ones() -> None:
    with pytest.raises(ValueError, match="no example id"):
        churn(records(["allergy"]), records(["allergy"], start=1))
    with pytest.raises(ValueError, match="duplicate"):
        churn(records(["allergy"]) * 2, records(["allergy"]))


_RUNS = st.dictionaries(st.integers(0, 30), st.one_of(st.none(), st.sampled_from(DIAGNOSES)), min_size=1)


def _from_dict(predictions: dict[int, str | None]) -> list[ExampleRecord]:
    return [ExampleRecord("knn", f"test-{i:04d}", "", DIAGNOSES[0], p, 1.0) for i, p in predictions.items()]


@given(_RUNS, _RUNS)
def test_churn_is_a_share(now: dict[int, str | None], before: dict[int, str | None]) -> None:
    if not now.keys() & before.keys():
        before = {**before, **{next(iter(now)): None}}
    value = churn(_from_dict(now), _from_dict(before))
    assert 0.0 <= value <= 1.0
    assert value == churn(_from_dict(before), _from_dict(now))


@given(_RUNS)
def test_churn_of_a_run_with_itself_is_zero(run: dict[int, str | None]) -> None:
    assert churn(_from_dict(run), _from_dict(run)) == 0.0


# --- label shift -----------------------------------------------------------------------------


def _draw(rng: np.random.Generator, p: np.ndarray) -> list[str | None]:
    labels = [*DIAGNOSES, None]
    return [labels[i] for i in rng.choice(len(labels), size=N, p=p)]


def _typical_distribution() -> np.ndarray:
    weights = np.r_[np.linspace(1, 3, K), 0.5]  # uneven over the labels, a few invalid
    return weights / weights.sum()


def test_moving_half_the_predictions_to_one_label_is_a_shift() -> None:
    rng = np.random.default_rng(0)
    before = _draw(rng, _typical_distribution())
    now = [("common cold" if rng.random() < 0.5 else p) for p in _draw(rng, _typical_distribution())]
    chi2, p_value = label_shift(records(now), records(before))
    assert p_value < 0.01 and chi2 > 40


def test_two_draws_of_one_distribution_mostly_are_not() -> None:
    rng = np.random.default_rng(1)
    p = _typical_distribution()
    alarms = sum(label_shift(records(_draw(rng, p)), records(_draw(rng, p)))[1] < 0.01 for _ in range(200))
    assert alarms <= 8  # 1% expected; a few more as the chi-square is approximate


def test_label_shift_handcheckable_and_degenerate_cases() -> None:
    chi2, p_value = label_shift(records(["allergy"] * 10), records(["allergy"] * 10))
    assert (chi2, p_value) == (0.0, 1.0)
    chi2, p_value = label_shift(records([None] * 5), records([None] * 7))  # invalid only
    assert (chi2, p_value) == (0.0, 1.0)
    # 2x2 with Yates' correction: identical halves give chi2 0 and p 1.
    chi2, p_value = label_shift(records(["allergy", None] * 10), records([None, "allergy"] * 10))
    assert chi2 == pytest.approx(0.0) and p_value == pytest.approx(1.0)
    with pytest.raises(ValueError, match="both runs"):
        label_shift([], records(["allergy"]))


def test_invalid_answers_are_a_category_of_their_own() -> None:
    _, p_value = label_shift(records(["allergy"] * 100), records([None] * 50 + ["allergy"] * 50))
    assert p_value < 1e-6


# --- fingerprints and causes -----------------------------------------------------------------


def test_lm_fingerprint_is_sha256_of_canonical_json() -> None:
    spec = {"model": "smollm2-135m", "temperature": "0"}
    digest = lm_fingerprint(spec, "0.3.9", ["migraine", "allergy"])
    canonical = json.dumps(
        {"backend_version": "0.3.9", "probe_answers": ["migraine", "allergy"], "spec_params": spec},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    assert digest == hashlib.sha256(canonical.encode()).hexdigest()
    assert digest == lm_fingerprint(dict(reversed(spec.items())), "0.3.9", ["migraine", "allergy"])
    assert digest != lm_fingerprint(spec, "0.3.9", ["allergy", "migraine"])
    assert digest != lm_fingerprint(spec, "0.3.10", ["migraine", "allergy"])


@pytest.mark.parametrize(
    ("lm", "program", "cause"),
    [
        (True, False, "model drift"),
        (False, True, "program drift"),
        (True, True, "both"),
        (False, False, "data or noise"),
    ],
)
def test_classify_drift(lm: bool, program: bool, cause: str) -> None:
    assert classify_drift(lm, program) == cause


# --- assess ----------------------------------------------------------------------------------


def test_assess_reports_every_alarm_with_its_likely_cause() -> None:
    before = records(["allergy"] * 100 + ["migraine"] * 100)
    now = records(["allergy"] * 100 + ["dengue"] * 100)
    report = assess(now, before, [0.60, 0.61, 0.59], 0.45, "lm-b", "lm-a", "p", "p")
    assert report.churn == pytest.approx(0.5) and report.cause == "model drift"
    assert report.alarms() == [
        "knn: accuracy 0.450 is below the control band [0.570, 0.630] (mean 0.600 ± 3 sd of the "
        "last 3 nights); likely cause: model drift (the LM fingerprint changed)",
        "knn: 50.0% of predictions changed since the previous night (100 of 200 examples, "
        "max_churn 15.0%); likely cause: model drift (the LM fingerprint changed)",
        f"knn: the predicted-label distribution shifted (chi² {report.chi2:.1f}, p<0.0001 < "
        "alpha 0.01); likely cause: model drift (the LM fingerprint changed)",
    ]
    rows = report.as_rows()
    assert [row["verdict"] for row in rows] == ["alarm", "alarm", "alarm", "changed", "unchanged"]
    markdown = report.to_markdown()
    assert markdown.startswith("### knn: nightly drift (n=200)")
    assert "| churn | 0.500 | ≤ 0.150 | alarm |" in markdown


def test_quiet_night_has_no_alarm() -> None:
    run = records(["allergy", "migraine"] * 100)
    report = assess(run, run, [0.60, 0.61, 0.59], 0.60, "lm", "lm", "p", "p")
    assert report.alarms() == [] and report.churn == 0.0 and report.cause == "data or noise"
    assert "No drift alarm" in report.to_markdown()


def test_first_night_gives_no_verdict() -> None:
    report = assess(records(["allergy"] * 10), [], [], 0.6, "lm", None, "p", None)
    assert report.alarms() == []
    assert (report.churn, report.p_value, report.lm_changed) == (None, None, False)
    assert [row["verdict"] for row in report.as_rows()][:3] == ["no verdict"] * 3


def test_program_change_is_named() -> None:
    before, now = records(["allergy"] * 50), records(["migraine"] * 50)
    report = assess(now, before, [], 0.0, "lm", "lm", "p2", "p1")
    assert report.cause == "program drift"
    assert all(line.endswith("likely cause: program drift (the program hash changed)") for line in report.alarms())


# --- policy parsing --------------------------------------------------------------------------


def test_drift_policy_defaults_and_values() -> None:
    assert parse_drift_policy(None, "t.yaml") == DriftPolicy()
    policy = parse_drift_policy({"band_k": 2, "window": 5, "max_churn": 0}, "t.yaml")
    assert policy == DriftPolicy(band_k=2.0, window=5, max_churn=0.0)
    assert isinstance(policy.band_k, float)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"band_k": 0}, "t.yaml: drift.band_k: expected a positive number, found 0"),
        ({"min_history": 1}, "t.yaml: drift.min_history: expected a whole number >= 2, found 1"),
        ({"max_churn": "10%"}, "t.yaml: drift.max_churn: expected a number between 0 and 1, found '10%' (a string)"),
        ({"alpha": 0}, "t.yaml: drift.alpha: expected a number strictly between 0 and 1, found 0"),
        ({"window": 2}, "t.yaml: drift.window: expected a whole number >= min_history (3), found 2"),
        (
            {"windows": 2},
            "t.yaml: drift.windows: unknown key 'windows'; allowed: band_k, min_history, max_churn, alpha, window",
        ),
    ],
)
def test_drift_policy_errors(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_drift_policy(raw, "t.yaml")
    assert str(info.value) == message
