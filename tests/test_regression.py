"""Tests of the paired champion/candidate comparison: hand-checkable cases and simulations."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import pytest
from scipy.stats import binom
from sklearn.metrics import f1_score
from statsmodels.stats.proportion import proportion_confint

from evals.config.policies import RegressionPolicy, parse_regression_policy
from evals.errors import ConfigError
from evals.labels import DIAGNOSES
from evals.records import ExampleRecord
from evals.stats.metrics import aggregate
from evals.stats.regression import (
    Comparison,
    ComparisonRefused,
    compare,
    macro_f1,
    mcnemar_p,
    pair_records,
)

N, K = 212, len(DIAGNOSES)
FAST = RegressionPolicy(bootstrap_samples=500)


def record(i: int, gold: str, predicted: str | None, program: str = "knn") -> ExampleRecord:
    return ExampleRecord(program, f"test-{i:04d}", "", gold, predicted, 1.0)


def session(
    gold: Sequence[int], right: Sequence[bool], wrong: Sequence[int] | None = None, program: str = "knn"
) -> list[ExampleRecord]:
    """Records whose answer is the gold label where ``right``, else ``wrong`` (or the next)."""
    wrong = wrong if wrong is not None else [(g + 1) % K for g in gold]
    return [
        record(i, DIAGNOSES[g], DIAGNOSES[g] if ok else DIAGNOSES[w], program)
        for i, (g, ok, w) in enumerate(zip(gold, right, wrong))
    ]


# --- hand-checkable cases -------------------------------------------------------------------


def test_identical_runs_have_zero_delta_and_no_verdict() -> None:
    gold = [i % K for i in range(44)]
    runs = session(gold, [i % 3 != 0 for i in range(44)])
    result = compare(runs, runs)
    assert (result.accuracy.delta, result.macro_f1.delta) == (0.0, 0.0)
    assert (result.accuracy.ci_low, result.accuracy.ci_high) == (0.0, 0.0)
    assert (result.macro_f1.ci_low, result.macro_f1.ci_high) == (0.0, 0.0)
    assert result.accuracy.p_value == 1.0
    assert (result.mcnemar_b, result.mcnemar_c) == (0, 0)
    assert result.regressions() == result.improvements() == result.notes() == []
    assert {d.verdict for d in result.deltas} <= {"ok", "report only"}


def test_all_discordant_pairs_one_way_is_a_regression_with_exact_p() -> None:
    gold = [i % K for i in range(40)]
    champion = session(gold, [True] * 40)
    candidate = session(gold, [i >= 10 for i in range(40)])
    result = compare(candidate, champion)
    assert (result.mcnemar_b, result.mcnemar_c) == (10, 0)
    assert result.accuracy.p_value == pytest.approx(2 * 0.5**10)  # exact binomial, two-sided
    assert result.accuracy.delta == pytest.approx(-0.25)
    assert result.accuracy.ci_high < 0 and result.accuracy.verdict == "regression"
    line = result.regressions()[0]
    assert line.startswith("knn: accuracy 1.000 → 0.750 (Δ −0.250, 95% CI [−")
    assert line.endswith("], McNemar p=0.002) is a regression")


def test_the_reverse_is_an_improvement() -> None:
    gold = [i % K for i in range(40)]
    result = compare(session(gold, [True] * 40), session(gold, [i >= 10 for i in range(40)]))
    assert result.accuracy.verdict == "improvement" and result.regressions() == []
    assert result.improvements()[0].startswith("knn: accuracy 0.750 → 1.000 (Δ +0.250")


def test_a_real_drop_within_the_tolerance_is_ok() -> None:
    gold = [i % K for i in range(40)]
    champion, candidate = session(gold, [True] * 40), session(gold, [i >= 10 for i in range(40)])
    result = compare(candidate, champion, RegressionPolicy(max_drop=0.3, max_diagnosis_drop=1))
    assert result.accuracy.p_value < 0.05 and result.accuracy.verdict == "ok"
    assert result.regressions() == []


def test_few_discordant_pairs_are_not_significant() -> None:
    gold = [i % K for i in range(100)]
    champion = session(gold, [True] * 100)
    candidate = session(gold, [i >= 3 for i in range(100)])
    result = compare(candidate, champion)
    assert result.accuracy.p_value == pytest.approx(0.25)  # 2 * 0.5**3
    assert result.accuracy.verdict == "ok"


def test_mcnemar_p_is_symmetric_and_one_without_discordant_pairs() -> None:
    assert mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(7, 2) == mcnemar_p(2, 7) == pytest.approx(binom.cdf(2, 9, 0.5) * 2)


# --- macro-F1 --------------------------------------------------------------------------------


def _random_runs(seed: int, n: int = N) -> tuple[list[ExampleRecord], list[ExampleRecord]]:
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, K, n)

    def run() -> list[ExampleRecord]:
        right = rng.random(n) < 0.6
        labels = np.where(right, gold, rng.integers(0, K, n))
        invalid = rng.random(n) < 0.05
        return [
            record(i, DIAGNOSES[g], None if bad else DIAGNOSES[p])
            for i, (g, p, bad) in enumerate(zip(gold, labels, invalid))
        ]

    return run(), run()


def test_point_estimates_match_metrics_aggregate() -> None:
    candidate, champion = _random_runs(3)
    result = compare(candidate, champion, FAST)
    new, old = aggregate(candidate)["knn"], aggregate(champion)["knn"]
    assert result.accuracy.candidate == pytest.approx(new.accuracy)
    assert result.accuracy.champion == pytest.approx(old.accuracy)
    assert result.macro_f1.candidate == pytest.approx(new.macro_f1)
    assert result.macro_f1.champion == pytest.approx(old.macro_f1)


def test_vectorised_macro_f1_matches_sklearn_on_resamples() -> None:
    rng = np.random.default_rng(5)
    gold, predicted = rng.integers(0, K, 60), rng.integers(0, K + 1, 60)  # K means invalid
    samples = rng.integers(0, 60, size=(20, 60))
    expected = [
        f1_score(gold[row], predicted[row], labels=np.unique(gold[row]), average="macro", zero_division=0)
        for row in samples
    ]
    assert macro_f1(gold, predicted, samples) == pytest.approx(expected)


def test_bootstrap_is_reproducible_and_fast() -> None:
    candidate, champion = _random_runs(4)
    compare(candidate, champion, FAST)  # warm the lazy statsmodels imports
    start = time.perf_counter()
    first = compare(candidate, champion, RegressionPolicy(bootstrap_samples=2000))
    assert time.perf_counter() - start < 1.0
    again = compare(candidate, champion, RegressionPolicy(bootstrap_samples=2000))
    assert first == again
    assert first.accuracy.ci_low <= first.accuracy.delta <= first.accuracy.ci_high


# --- per-diagnosis recall --------------------------------------------------------------------


def _recall_case(support: int, champion_hits: int, candidate_hits: int) -> Comparison:
    gold = [0] * support + [1] * 20
    champion = session(gold, [i < champion_hits or i >= support for i in range(len(gold))])
    candidate = session(gold, [i < candidate_hits or i >= support for i in range(len(gold))])
    return compare(candidate, champion, RegressionPolicy(bootstrap_samples=200))


def test_recall_drop_is_flagged_with_wilson_bounds() -> None:
    result = _recall_case(support=10, champion_hits=10, candidate_hits=4)
    allergy = result.per_diagnosis[0]
    low, high = proportion_confint(4, 10, alpha=0.05, method="wilson")
    assert allergy.candidate_ci == pytest.approx((low, high))
    assert allergy.metric == "recall.allergy" and allergy.verdict == "regression"
    assert high < 1.0 - 0.2
    assert any(
        line.startswith(
            "knn: recall of 'allergy' 1.000 → 0.400 (n=10, candidate 95% "
            "Wilson upper bound 0.687 < 1.000 − 0.200) is a regression"
        )
        for line in result.regressions()
    )
    assert allergy.ci_low < allergy.delta < allergy.ci_high  # Newcombe interval


def test_recall_drop_of_the_noise_size_is_ok() -> None:
    assert _recall_case(support=10, champion_hits=10, candidate_hits=6).per_diagnosis[0].verdict == "ok"


def test_low_support_diagnosis_is_report_only() -> None:
    result = _recall_case(support=3, champion_hits=3, candidate_hits=0)
    assert result.per_diagnosis[0].verdict == "report only"
    assert not any("'allergy'" in line for line in result.regressions())
    assert result.notes() == [
        "knn: recall of 'allergy' 1.000 → 0.000 (n=3, candidate 95% Wilson upper bound 0.561 "
        "< 1.000 − 0.200) is a regression, but report only: n=3 < min_diagnosis_support 5"
    ]


# --- pairing ---------------------------------------------------------------------------------


def test_mismatched_ids_are_refused_with_advice() -> None:
    gold = [i % K for i in range(30)]
    candidate, champion = session(gold[:25], [True] * 25), session(gold, [True] * 30)[3:]
    with pytest.raises(ComparisonRefused) as info:
        compare(candidate, champion)
    message = str(info.value)
    assert "\n" not in message
    assert "3 example ids only in the candidate, 5 only in the champion" in message
    assert "same split, sample size and seed" in message
    assert "on_mismatch: intersect" in message


def test_intersect_compares_the_shared_ids() -> None:
    gold = [i % K for i in range(30)]
    candidate, champion = session(gold[:25], [True] * 25), session(gold, [True] * 30)[3:]
    paired = pair_records(candidate, champion, "intersect")
    assert [r.example_id for r in paired.candidate] == [r.example_id for r in paired.champion]
    assert (len(paired.candidate), paired.only_in_candidate, paired.only_in_champion) == (22, 3, 5)
    result = compare(candidate, champion, RegressionPolicy(on_mismatch="intersect"))
    assert result.n == 22
    assert "3 only in the candidate and 5 only in the champion" in result.to_markdown()


def test_pairing_ignores_order() -> None:
    candidate, champion = _random_runs(6, n=50)
    assert compare(candidate[::-1], champion, FAST) == compare(candidate, champion, FAST)


@pytest.mark.parametrize(
    ("candidate", "champion", "error", "match"),
    [
        (
            [record(1, "allergy", "allergy")],
            [record(1, "migraine", "allergy")],
            ComparisonRefused,
            "another gold label",
        ),
        ([record(1, "allergy", None)] * 2, [record(1, "allergy", None)], ValueError, "duplicate"),
        (
            [record(1, "allergy", None), record(2, "allergy", None, program="zero_shot")],
            [record(1, "allergy", None)],
            ValueError,
            "several programs",
        ),
        ([record(1, "allergy", "flu")], [record(1, "allergy", None)], ValueError, "unknown"),
        ([], [], ComparisonRefused, "no example id in common"),
    ],
)
def test_bad_inputs(
    candidate: list[ExampleRecord], champion: list[ExampleRecord], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        compare(candidate, champion, RegressionPolicy(on_mismatch="intersect"))


# --- rendering -------------------------------------------------------------------------------


def test_rows_and_markdown() -> None:
    gold = [i % K for i in range(44)]
    result = compare(session(gold, [i >= 20 for i in range(44)]), session(gold, [True] * 44))
    rows = result.as_rows()
    assert [row["metric"] for row in rows[:3]] == ["accuracy", "macro_f1", "recall.allergy"]
    assert set(rows[0]) == {
        "metric",
        "champion",
        "candidate",
        "delta",
        "ci_low",
        "ci_high",
        "p_value",
        "verdict",
        "support",
    }
    assert rows[0]["verdict"] == "regression" and rows[1]["p_value"] is None
    assert rows[2]["support"] == 2 and rows[2]["verdict"] == "report only"
    markdown = result.to_markdown()
    assert markdown.startswith("### knn: candidate vs champion (n=44, 95% intervals)")
    assert "- ❌ knn: accuracy 1.000 → 0.545" in markdown
    assert "| accuracy | 1.000 | 0.545 | −0.455 | [−" in markdown
    assert "| bronchial asthma | 2 | 1.000 [0.342, 1.000] |" in markdown


# --- policy parsing --------------------------------------------------------------------------


def test_policy_defaults_and_values() -> None:
    assert parse_regression_policy(None, "t.yaml") == RegressionPolicy()
    assert parse_regression_policy({}, "t.yaml") == RegressionPolicy()
    policy = parse_regression_policy({"alpha": 0.1, "max_drop": 0, "seed": 7, "on_mismatch": "intersect"}, "t.yaml")
    assert policy == RegressionPolicy(alpha=0.1, max_drop=0.0, seed=7, on_mismatch="intersect")
    assert isinstance(policy.max_drop, float) and policy.confidence == "90%"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"alpha": 1.5}, "t.yaml: regression.alpha: expected a number strictly between 0 and 1, found 1.5"),
        ({"max_drop": True}, "t.yaml: regression.max_drop: expected a number between 0 and 1, found true (a boolean)"),
        ({"bootstrap_samples": 10}, "t.yaml: regression.bootstrap_samples: expected a whole number >= 100, found 10"),
        (
            {"min_diagnosis_support": 2.5},
            "t.yaml: regression.min_diagnosis_support: expected a whole number >= 0, found 2.5",
        ),
        (
            {"on_mismatch": "skip"},
            "t.yaml: regression.on_mismatch: expected 'refuse' or 'intersect', found 'skip' (a string)",
        ),
        (
            {"max_accuracy_drop": 0.1},
            "t.yaml: regression.max_accuracy_drop: unknown key "
            "'max_accuracy_drop'; allowed: alpha, max_drop, "
            "max_diagnosis_drop, min_diagnosis_support, "
            "bootstrap_samples, seed, on_mismatch",
        ),
        ([1], "t.yaml: regression: expected a mapping with keys alpha, "),
    ],
)
def test_policy_errors_name_file_key_value_and_allowed(raw: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_regression_policy(raw, "t.yaml")  # type: ignore[arg-type]
    assert str(info.value).startswith(message)


# --- simulations -----------------------------------------------------------------------------


class NoisyProgram:
    """One underlying program run twice: ~60% right, ~8% of answers flip between runs.

    84% of examples are stable (right or wrong every time); the other 16% are right with
    probability 1/2 on each run, so two runs disagree on 16% × 1/2 = 8% of examples and
    the runs are exchangeable: any difference between them is noise.
    """

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.gold = rng.integers(0, K, N)
        self.unstable = rng.random(N) < 0.16
        self.stable_right = rng.random(N) < (0.6 - 0.16 * 0.5) / 0.84
        self.wrong = (self.gold + rng.integers(1, K, N)) % K  # its usual wrong answer

    def run(self, drop: int = 0) -> list[ExampleRecord]:
        """One session; ``drop`` of its right answers are then made wrong."""
        right = np.where(self.unstable, self.rng.random(N) < 0.5, self.stable_right)
        if drop:
            right[self.rng.choice(np.flatnonzero(right), size=drop, replace=False)] = False
        wrong = np.where(self.unstable, (self.gold + self.rng.integers(1, K, N)) % K, self.wrong)
        return session(self.gold, right, wrong)


def _accuracy_flagged(result: Comparison) -> bool:
    return any(line.startswith(f"{result.program}: accuracy ") for line in result.regressions())


def test_noise_rarely_fires_an_accuracy_regression() -> None:
    trials, alpha = 300, FAST.alpha
    alarms = 0
    for seed in range(trials):
        program = NoisyProgram(np.random.default_rng(seed))
        alarms += _accuracy_flagged(compare(program.run(), program.run(), FAST))
    # The rule's false-alarm rate is at most alpha/2; allow alpha plus a 99.9% binomial margin.
    assert alarms <= binom.ppf(0.999, trials, alpha), alarms


def test_a_ten_point_drop_is_caught() -> None:
    trials, caught = 200, 0
    for seed in range(trials):
        program = NoisyProgram(np.random.default_rng(10_000 + seed))
        champion, candidate = program.run(), program.run(drop=round(0.10 * N))
        caught += _accuracy_flagged(compare(candidate, champion, FAST))
    assert caught >= 0.9 * trials, caught
