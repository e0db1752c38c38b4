"""Unit tests of evals.stats.metrics over hand-built records."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evals.labels import DIAGNOSES
from evals.records import ExampleRecord
from evals.stats.metrics import (
    INVALID,
    ProgramMetrics,
    aggregate,
    flat_metrics,
    metrics_from_dict,
    metrics_to_dict,
    worst_diagnoses,
)

ALLERGY, DENGUE, MIGRAINE = "allergy", "dengue", "migraine"


def rec(
    program: str,
    i: int,
    gold: str,
    predicted: str | None,
    latency_ms: float = 100.0,
    error: str | None = None,
    tokens: tuple[int, int] = (0, 0),
) -> ExampleRecord:
    return ExampleRecord(
        program=program,
        example_id=f"test-{i:04d}",
        symptoms=f"symptoms {i}",
        gold=gold,
        predicted=predicted,
        latency_ms=latency_ms,
        prompt_tokens=tokens[0],
        completion_tokens=tokens[1],
        error=error,
    )


def known_records() -> list[ExampleRecord]:
    """Five records with every case: hit, confusion, invalid, hit, confusion."""
    return [
        rec("a", 1, ALLERGY, ALLERGY, 10.0, tokens=(100, 5)),
        rec("a", 2, ALLERGY, MIGRAINE, 20.0, tokens=(110, 6)),
        rec("a", 3, ALLERGY, None, 30.0, error="timeout", tokens=(120, 0)),
        rec("a", 4, MIGRAINE, MIGRAINE, 40.0, tokens=(90, 4)),
        rec("a", 5, DENGUE, ALLERGY, 1000.0, tokens=(80, 5)),
    ]


@pytest.fixture
def known() -> ProgramMetrics:
    return aggregate(known_records())["a"]


def test_known_case_headline_metrics(known: ProgramMetrics) -> None:
    assert known.program == "a"
    assert known.n == 5
    assert known.accuracy == pytest.approx(2 / 5)
    assert known.invalid_rate == pytest.approx(1 / 5)
    assert known.error_rate == pytest.approx(1 / 5)
    assert (known.prompt_tokens, known.completion_tokens) == (500, 20)


def test_known_case_latency_percentiles_are_linear(known: ProgramMetrics) -> None:
    # Sorted 10, 20, 30, 40, 1000: p95 sits at rank 3.8, i.e. 40 + 0.8 * 960.
    assert known.latency_p50_ms == pytest.approx(30.0)
    assert known.latency_p95_ms == pytest.approx(808.0)
    assert known.latency_max_ms == pytest.approx(1000.0)


def test_known_case_per_diagnosis(known: ProgramMetrics) -> None:
    allergy, migraine, dengue = (known.per_diagnosis[d] for d in (ALLERGY, MIGRAINE, DENGUE))
    assert (allergy.support, allergy.predicted) == (3, 2)
    assert allergy.precision == pytest.approx(1 / 2)
    assert allergy.recall == pytest.approx(1 / 3)  # the invalid answer counts as a miss
    assert allergy.f1 == pytest.approx(0.4)
    assert (migraine.support, migraine.predicted) == (1, 2)
    assert (migraine.precision, migraine.recall) == pytest.approx((0.5, 1.0))
    assert migraine.f1 == pytest.approx(2 / 3)
    assert (dengue.support, dengue.predicted, dengue.precision, dengue.recall, dengue.f1) == (
        1,
        0,
        0.0,
        0.0,
        0.0,
    )
    assert list(known.per_diagnosis) == list(DIAGNOSES)


def test_macro_f1_averages_only_supported_diagnoses(known: ProgramMetrics) -> None:
    assert known.macro_f1 == pytest.approx((0.4 + 2 / 3 + 0.0) / 3)


def test_unsupported_diagnosis_is_all_zero_even_when_predicted() -> None:
    m = aggregate([rec("a", 1, ALLERGY, MIGRAINE)])["a"]
    migraine = m.per_diagnosis[MIGRAINE]
    assert (migraine.support, migraine.predicted, migraine.precision, migraine.recall) == (
        0,
        1,
        0.0,
        0.0,
    )
    assert m.macro_f1 == 0.0


def test_known_case_confusion(known: ProgramMetrics) -> None:
    col = {name: j for j, name in enumerate(known.confusion_columns)}
    row = {name: i for i, name in enumerate(DIAGNOSES)}
    assert len(known.confusion) == 22
    assert all(len(r) == 23 for r in known.confusion)
    assert known.confusion[row[ALLERGY]][col[ALLERGY]] == 1
    assert known.confusion[row[ALLERGY]][col[MIGRAINE]] == 1
    assert known.confusion[row[ALLERGY]][col[INVALID]] == 1
    assert known.confusion[row[MIGRAINE]][col[MIGRAINE]] == 1
    assert known.confusion[row[DENGUE]][col[ALLERGY]] == 1
    assert sum(map(sum, known.confusion)) == 5


def test_programs_are_keyed_in_sorted_order() -> None:
    records = [rec("zeta", 1, ALLERGY, ALLERGY), rec("alpha", 1, ALLERGY, None)]
    result = aggregate(records)
    assert list(result) == ["alpha", "zeta"]
    assert result["alpha"].accuracy == 0.0
    assert result["zeta"].accuracy == 1.0


def test_duplicate_example_raises_naming_it() -> None:
    records = [rec("a", 7, ALLERGY, ALLERGY), rec("b", 7, ALLERGY, ALLERGY)]
    records.append(rec("a", 7, ALLERGY, None))
    with pytest.raises(ValueError, match=r"'a'.*'test-0007'"):
        aggregate(records)


@pytest.mark.parametrize("gold, predicted", [("flu", ALLERGY), (ALLERGY, "flu")])
def test_unknown_label_raises(gold: str, predicted: str) -> None:
    with pytest.raises(ValueError, match="unknown diagnosis 'flu'"):
        aggregate([rec("a", 1, gold, predicted)])


def test_no_records_no_programs() -> None:
    assert aggregate([]) == {}


def test_flat_metrics_names_and_values(known: ProgramMetrics) -> None:
    flat = flat_metrics(known)
    headline = {
        "n",
        "accuracy",
        "macro_f1",
        "invalid_rate",
        "error_rate",
        "latency_p50_ms",
        "latency_p95_ms",
        "latency_max_ms",
        "prompt_tokens",
        "completion_tokens",
        "cost_usd",
        "cost_per_example_usd",
        "rate_limited",
    }
    per_label = {f"{k}.{d}" for k in ("recall", "precision", "f1", "support") for d in (ALLERGY, DENGUE, MIGRAINE)}
    assert set(flat) == headline | per_label
    assert flat["n"] == 5.0
    assert flat["rate_limited"] == 0.0
    assert flat["recall.allergy"] == pytest.approx(1 / 3)
    assert flat["support.allergy"] == 3.0
    assert flat["prompt_tokens"] == 500.0
    assert all(isinstance(v, float) for v in flat.values())


def test_flat_metrics_slugs_multiword_names() -> None:
    flat = flat_metrics(aggregate([rec("a", 1, "bronchial asthma", None)])["a"])
    assert flat["recall.bronchial_asthma"] == 0.0
    assert not any(" " in name for name in flat)


def test_worst_diagnoses_lowest_recall_first(known: ProgramMetrics) -> None:
    assert [d.diagnosis for d in worst_diagnoses(known)] == [DENGUE, ALLERGY, MIGRAINE]
    assert [d.diagnosis for d in worst_diagnoses(known, k=1)] == [DENGUE]


def test_worst_diagnoses_ties_by_name() -> None:
    records = [rec("a", 1, MIGRAINE, None), rec("a", 2, DENGUE, None), rec("a", 3, ALLERGY, None)]
    worst = worst_diagnoses(aggregate(records)["a"], k=2)
    assert [d.diagnosis for d in worst] == [ALLERGY, DENGUE]


def test_json_round_trip(known: ProgramMetrics) -> None:
    text = json.dumps(metrics_to_dict(known))
    assert metrics_from_dict(json.loads(text)) == known


def test_from_dict_rejects_bad_confusion(known: ProgramMetrics) -> None:
    data = metrics_to_dict(known)
    data["confusion"] = data["confusion"][:-1]
    with pytest.raises(ValueError, match="22 rows of 23"):
        metrics_from_dict(data)


# --- properties --------------------------------------------------------------------------

_record_fields = st.tuples(
    st.sampled_from(["zero_shot", "cot", "knn"]),
    st.sampled_from(DIAGNOSES),
    st.one_of(st.none(), st.sampled_from(DIAGNOSES)),
    st.floats(min_value=0.0, max_value=60_000.0, allow_nan=False),
)
records_strategy = st.lists(_record_fields, min_size=1, max_size=60).map(
    lambda rows: [rec(p, i, gold, pred, latency) for i, (p, gold, pred, latency) in enumerate(rows)]
)


@settings(max_examples=60, deadline=None)
@given(records=records_strategy, data=st.data())
def test_aggregate_is_invariant_under_shuffling(records: list[ExampleRecord], data: st.DataObject) -> None:
    shuffled = data.draw(st.permutations(records))
    assert aggregate(shuffled) == aggregate(records)


@settings(max_examples=60, deadline=None)
@given(records=records_strategy)
def test_aggregate_properties(records: list[ExampleRecord]) -> None:
    result = aggregate(records)
    assert sum(m.n for m in result.values()) == len(records)
    for program, m in result.items():
        mine = [r for r in records if r.program == program]
        assert m.accuracy == pytest.approx(sum(r.correct for r in mine) / len(mine))
        assert sum(map(sum, m.confusion)) == m.n == len(mine)
        for i, diagnosis in enumerate(DIAGNOSES):
            d = m.per_diagnosis[diagnosis]
            assert d.support == sum(m.confusion[i]) == sum(r.gold == diagnosis for r in mine)
            expected = m.confusion[i][i] / d.support if d.support else 0.0
            assert d.recall == pytest.approx(expected)
            assert 0.0 <= d.precision <= 1.0 and 0.0 <= d.f1 <= 1.0


def test_rate_limited_calls_are_summed_per_program() -> None:
    from dataclasses import replace

    records = [
        replace(rec("zero_shot", 1, ALLERGY, ALLERGY), rate_limited=2),
        replace(rec("zero_shot", 2, DENGUE, None), rate_limited=1),
        rec("other", 1, ALLERGY, ALLERGY),
    ]
    result = aggregate(records)
    assert (result["zero_shot"].rate_limited, result["other"].rate_limited) == (3, 0)
    assert flat_metrics(result["zero_shot"])["rate_limited"] == 3.0
    assert metrics_from_dict(metrics_to_dict(result["zero_shot"])).rate_limited == 3
    old = {k: v for k, v in metrics_to_dict(result["zero_shot"]).items() if k != "rate_limited"}
    assert metrics_from_dict(old).rate_limited == 0  # bundles written before the metric still load
