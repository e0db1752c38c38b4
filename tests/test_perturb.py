"""Tests of evals.stats.perturb (properties over real and generated texts) and evals.stats.robustness."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evals.errors import ConfigError
from evals.labels import DIAGNOSES
from evals.stats.perturb import (
    FILLER_PREFIXES,
    FILLER_SUFFIXES,
    FILLERS,
    KEEP,
    PERTURBATIONS,
    TYPO_WORDS_PER_TYPO,
    change_case,
    filler_phrases,
    is_protected,
    perturb,
    perturbed_texts,
    punctuation_noise,
    reorder_sentences,
    small_typos,
    split_sentences,
    whitespace_noise,
)
from evals.stats.robustness import (
    CASE_KEYS,
    RegressionCases,
    StabilityRecord,
    case_from_record,
    flat_stability_metrics,
    load_cases,
    merge_cases,
    save_cases,
    stability,
)
from tests.conftest import SHARED_DATA

REAL_TEST = SHARED_DATA / "test.jsonl"
FALLBACK_TEXTS = (
    "I have a burning sensation in my stomach that comes and goes. It's worse when I eat and when I "
    "lie down. I also have heartburn and indigestion.",
    "I'm sweating a lot and can't catch my breath. My throat is full of phlegm and I feel awful. My heart "
    "is racing and my chest hurts. I'm coughing up brown stuff.",
    "My temperature was 38.5 this morning and I have a rash on my arms",
)


def _load_texts() -> tuple[str, ...]:
    if not REAL_TEST.is_file():
        return FALLBACK_TEXTS
    lines = REAL_TEST.read_text(encoding="utf-8").splitlines()
    return tuple(json.loads(line)["input_text"] for line in lines if line.strip())


TEXTS = _load_texts()
real_texts = st.sampled_from(TEXTS)
seeds = st.integers(0, 2**32 - 1)

_word = st.one_of(
    st.sampled_from(sorted(KEEP)),
    st.text(st.characters(categories=["L"]), min_size=1, max_size=10),
    st.from_regex(r"[0-9]{1,2}\.[0-9]", fullmatch=True),
)
_sentence = st.builds(
    lambda words, end: " ".join(words) + end,
    st.lists(_word, min_size=1, max_size=14),
    st.sampled_from([".", "!", "?", "", "...", "?!"]),
)
generated_texts = st.builds(
    lambda sentences, gap: gap.join(sentences),
    st.lists(_sentence, min_size=1, max_size=6),
    st.sampled_from([" ", "\n", "  "]),
)
any_texts = st.one_of(real_texts, generated_texts, st.text(min_size=1).filter(str.strip))

quick = settings(max_examples=60, deadline=None)


def strip_marks(text: str) -> str:
    return re.sub(r"[.!?]", "", text)


def canonical(text: str) -> str:
    """Case-, whitespace- and punctuation-blind form."""
    return "".join(char for char in text.casefold() if char.isalnum())


def keep_counts(text: str) -> Counter[str]:
    return Counter(word for word in re.findall(r"[^\W\d_]+", text.casefold()) if word in KEEP)


# --- single perturbations ----------------------------------------------------------------------


@quick
@given(any_texts, seeds)
def test_change_case_changes_only_case(text: str, seed: int) -> None:
    out = change_case(text, random.Random(seed))
    assert [c.casefold() for c in out] == [c.casefold() for c in text]
    assert canonical(out) == canonical(text)


@pytest.mark.parametrize("text", TEXTS[:3])
def test_change_case_modes_all_occur(text: str) -> None:
    outputs = {change_case(text, random.Random(seed)) for seed in range(40)}
    assert text.lower() in outputs and text.upper() in outputs
    assert any(out[0].isupper() and out[1:] != out[1:].lower() and out != text.upper() for out in outputs)


@quick
@given(any_texts, seeds)
def test_whitespace_noise_touches_only_gaps(text: str, seed: int) -> None:
    out = whitespace_noise(text, random.Random(seed))
    assert out.split() == text.split()
    assert canonical(out) == canonical(text)
    if len(text.split()) > 1:
        assert out != " ".join(text.split())
    assert len(out) <= 2 * len(text)


@quick
@given(any_texts, seeds)
def test_punctuation_noise_changes_only_final_marks(text: str, seed: int) -> None:
    out = punctuation_noise(text, random.Random(seed))
    assert out != text and out.strip()
    assert strip_marks(out) == strip_marks(text)
    assert canonical(out) == canonical(text)
    assert abs(len(out) - len(text)) <= 3


@quick
@given(any_texts, seeds)
def test_reorder_sentences_keeps_the_multiset_of_sentences(text: str, seed: int) -> None:
    out = reorder_sentences(text, random.Random(seed))
    assert Counter(split_sentences(out)) == Counter(split_sentences(text))
    movable = [s for s in split_sentences(text) if s[-1] in ".!?"]
    if len(set(movable)) > 1:
        assert split_sentences(out) != split_sentences(text)


def test_reorder_sentences_leaves_single_sentences_and_decimals_alone() -> None:
    for text in ("I have a fever and a rash.", "Fever of 38.5 since Monday", "  Just one?  "):
        assert reorder_sentences(text, random.Random(0)) == text
    assert split_sentences("Fever 38.5 today. Cough too! And pain") == ["Fever 38.5 today.", "Cough too!", "And pain"]
    assert reorder_sentences("A b. C d! E f", random.Random(0)) == "C d! A b. E f"


@quick
@given(any_texts, seeds)
def test_small_typos_swap_inner_letters_of_unprotected_words(text: str, seed: int) -> None:
    out = small_typos(text, random.Random(seed))
    before, after = re.split(r"(\s+)", text), re.split(r"(\s+)", out)
    assert len(after) == len(before) and len(out.split()) == len(text.split())
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert len(changed) <= len(text.split()) // TYPO_WORDS_PER_TYPO
    for original, typo in changed:
        diff = [i for i, (x, y) in enumerate(zip(original, typo, strict=True)) if x != y]
        assert len(diff) == 2 and diff[1] == diff[0] + 1
        assert typo[diff[0]] == original[diff[1]] and typo[diff[1]] == original[diff[0]]
        core = re.sub(r"\W", "", original)
        assert len(core) >= 5 and not is_protected(core)
        assert original[diff[0] - 1].isalpha() and original[diff[1] + 1].isalpha()  # inner letters only
    assert keep_counts(out) >= keep_counts(text)


def test_small_typos_protect_medical_words_and_respect_the_budget() -> None:
    medical = " ".join(["fever", "rash", "coughing", "headaches", "Vomiting,", "dizziness", "urination"] * 4)
    assert small_typos(medical, random.Random(1)) == medical
    assert small_typos("Something strange happened yesterday evening.", random.Random(1)).count(" ") == 4
    short = "I have a persistent and worrying feeling"  # under 12 words: no budget
    assert small_typos(short, random.Random(1)) == short
    for word in ("bronchial", "gastroesophageal", "Spondylosis", "itchy", "breathing", "yellowish"):
        assert is_protected(word)
    assert not is_protected("yesterday")


def test_keep_holds_every_label_word_and_the_named_symptom_words() -> None:
    label_words = {word for label in DIAGNOSES for word in label.split()}
    named = set(
        "fever rash pain cough blood urine itch itchy vomiting nausea headache joint chest skin yellow breath "
        "dizzy".split()
    )
    assert label_words | named <= KEEP


@quick
@given(any_texts, seeds)
def test_filler_phrases_add_one_phrase_around_the_untouched_text(text: str, seed: int) -> None:
    out = filler_phrases(text, random.Random(seed))
    expected = {f"{p} {text}" for p in FILLER_PREFIXES} | {f"{text} {s}" for s in FILLER_SUFFIXES}
    assert out in expected and text in out
    assert set(FILLERS) == set(FILLER_PREFIXES) | set(FILLER_SUFFIXES) and len(FILLERS) == 5


@pytest.mark.parametrize("name", sorted(PERTURBATIONS))
def test_every_perturbation_changes_most_real_texts(name: str) -> None:
    outputs = [perturb(text, [name], seed=i) for i, text in enumerate(TEXTS)]
    assert all(out.strip() for out in outputs)
    changed = sum(out != text for out, text in zip(outputs, TEXTS, strict=True)) / len(TEXTS)
    assert changed >= (0.5 if name in {"small_typos", "reorder_sentences"} else 0.9)


@pytest.mark.parametrize("name", sorted(PERTURBATIONS))
@pytest.mark.parametrize("blank", ["", "   ", "\n\t"])
def test_blank_text_is_refused(name: str, blank: str) -> None:
    with pytest.raises(ValueError, match="empty or whitespace-only"):
        PERTURBATIONS[name](blank, random.Random(0))


# --- chains and strategies ---------------------------------------------------------------------


@settings(max_examples=120, deadline=None)
@given(st.data())
def test_perturbed_real_texts_stay_readable(data: st.DataObject) -> None:
    text = data.draw(real_texts)
    out, names = data.draw(perturbed_texts(text))
    assert names and len(set(names)) == len(names) and set(names) <= set(PERTURBATIONS)
    assert out.strip() and len(out) <= 2 * len(text) + 60
    assert keep_counts(out) >= keep_counts(text)


@quick
@given(any_texts, st.lists(st.sampled_from(sorted(PERTURBATIONS)), min_size=1, max_size=8), seeds)
def test_perturb_is_deterministic_bounded_and_never_blank(text: str, names: list[str], seed: int) -> None:
    out = perturb(text, names, seed)
    assert out == perturb(text, tuple(names), seed)
    assert out.strip()
    if len(names) == len(set(names)):
        assert len(out) <= 2 * len(text) + 60


@quick
@given(real_texts, seeds, st.data())
def test_a_fixed_seed_pins_the_strategy_to_perturb(text: str, seed: int, data: st.DataObject) -> None:
    out, names = data.draw(perturbed_texts(text, seed=seed))
    assert out == perturb(text, names, seed)


def test_perturb_applies_in_order_and_rejects_unknown_names() -> None:
    text = TEXTS[0]
    assert perturb(text, [], seed=3) == text
    first = PERTURBATIONS["filler_phrases"](text, random.Random("3:0:filler_phrases"))
    assert perturb(text, ["filler_phrases", "change_case"], 3) == change_case(first, random.Random("3:1:change_case"))
    with pytest.raises(ConfigError, match=r"unknown perturbation 'synonyms'; expected one of: change_case, "):
        perturb(text, ["synonyms"], 0)
    with pytest.raises(ValueError):
        perturb(" ", ["change_case"], 0)


# --- stability -----------------------------------------------------------------------------------


def rec(
    program: str, gold: str, original: str | None, perturbed: str | None, *names: str, **kw: str
) -> StabilityRecord:
    example_id = kw.get("example_id", "test-0001")
    return StabilityRecord(program, example_id, gold, names, original, perturbed, kw.get("error"))


def test_stable_and_valid() -> None:
    assert rec("p", "dengue", "dengue", "dengue").stable
    assert rec("p", "dengue", "malaria", "malaria").stable  # stable even when wrong
    assert not rec("p", "dengue", "dengue", "malaria").stable
    assert not rec("p", "dengue", None, None).valid and not rec("p", "dengue", None, None).stable
    assert not rec("p", "dengue", "flu", "flu").stable
    assert rec("p", "dengue", "dengue", "typhoid").valid


def test_record_round_trips_through_json() -> None:
    record = rec("zero_shot", "jaundice", "jaundice", None, "small_typos", "change_case", error="timeout")
    again = StabilityRecord.from_dict(json.loads(json.dumps(record.to_dict())) | {"extra": 1})
    assert again == record and again.perturbations == ("small_typos", "change_case")


def test_stability_aggregates_per_program_diagnosis_and_perturbation() -> None:
    records = [
        rec("b", "malaria", "malaria", "malaria", "change_case"),
        rec("a", "malaria", "malaria", "malaria", "change_case", "small_typos"),
        rec("a", "malaria", "malaria", "dengue", "small_typos"),
        rec("a", "allergy", None, "allergy", "change_case"),
        rec("a", "allergy", "allergy", "allergy", "filler_phrases"),
    ]
    result = stability(records)
    assert list(result) == ["a", "b"]
    a = result["a"]
    assert (a.n, a.stability, a.valid_rate) == (4, 0.5, 0.75)
    assert list(a.per_diagnosis.items()) == [("allergy", 0.5), ("malaria", 0.5)]
    assert a.per_perturbation == {"change_case": 0.5, "filler_phrases": 1.0, "small_typos": 0.5}
    assert stability(reversed(records)) == result
    assert flat_stability_metrics(result["b"]) == {
        "stability": 1.0,
        "robust_valid_rate": 1.0,
        "robust_n": 1.0,
        "stability.malaria": 1.0,
        "stability.by.change_case": 1.0,
    }


def test_flat_names_are_mlflow_safe() -> None:
    records = [rec("p", label, label, label, name) for label in DIAGNOSES for name in PERTURBATIONS]
    flat = flat_stability_metrics(stability(records)["p"])
    assert len(flat) == 3 + len(DIAGNOSES) + len(PERTURBATIONS)
    assert "stability.bronchial_asthma" in flat and "stability.by.small_typos" in flat
    assert all(re.fullmatch(r"[A-Za-z0-9_.]+", name) for name in flat)
    assert stability([]) == {}


# --- regression cases ----------------------------------------------------------------------------


def case(program: str, text: str, example_id: str = "test-0001", found_at: str = "2025-01-01T00:00:00+00:00") -> dict:
    record = rec(program, "dengue", "dengue", "malaria", "small_typos", example_id=example_id)
    return case_from_record(record, text, found_at=found_at)


def test_regression_cases_round_trip_dedup_and_sort(tmp_path: Path) -> None:
    store = RegressionCases(tmp_path / "suites" / "robustness_regressions.json")
    assert store.load() == []
    first = [case("zero_shot", "b text", "test-0002"), case("cot", "a text"), case("zero_shot", "a text")]
    written = store.add(first)
    assert [(c["program"], c["example_id"]) for c in written] == [
        ("cot", "test-0001"),
        ("zero_shot", "test-0001"),
        ("zero_shot", "test-0002"),
    ]
    later = store.add([case("zero_shot", "a text", found_at="2030-01-01T00:00:00+00:00"), case("cot", "c text")])
    assert len(later) == 4 and store.load() == later
    kept = next(c for c in later if c["text"] == "a text" and c["program"] == "zero_shot")
    assert kept["found_at"].startswith("2025")  # the first finding wins
    assert [c["text"] for c in store.for_program("cot")] == ["a text", "c text"]
    assert list(later[0]) == list(CASE_KEYS)
    assert [p.name for p in store.path.parent.iterdir()] == ["robustness_regressions.json"]  # no temp file left
    raw = store.path.read_text(encoding="utf-8")
    assert raw.endswith("\n") and json.loads(raw) == later


def test_case_from_record_and_merge() -> None:
    made = case_from_record(rec("p", "dengue", "dengue", None, "change_case"), "TEXT")
    assert made["perturbed_prediction"] is None and made["perturbations"] == ["change_case"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", made["found_at"])
    assert merge_cases([case("p", "x")], [case("p", "x", "test-0009")])[0]["example_id"] == "test-0001"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("[{", "malformed JSON: "),
        ('{"program": "p"}', "expected a JSON list, found dict"),
        ("[1]", "case 0: expected an object, found int"),
        ('[{"program": "p"}]', "case 0: missing key 'example_id'"),
        (json.dumps([{k: "x" for k in CASE_KEYS}]), "case 0: perturbations: expected a list of strings"),
    ],
)
def test_corrupt_cases_file_names_file_and_reason(tmp_path: Path, content: str, reason: str) -> None:
    path = tmp_path / "robustness_regressions.json"
    path.write_text(content)
    with pytest.raises(ConfigError) as excinfo:
        load_cases(path)
    message = str(excinfo.value)
    assert message.startswith(f"{path}: corrupt regression cases file (") and reason in message
    assert "\n" not in message


def test_save_refuses_malformed_cases_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "cases.json"
    with pytest.raises(ValueError, match="regression case 1: text: expected a non-empty string"):
        save_cases(path, [case("p", "ok"), case("p", "")])
    assert not path.exists()
    assert load_cases(tmp_path / "missing.json") == []
