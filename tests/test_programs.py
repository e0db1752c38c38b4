"""Unit tests of the program registry, the retrieval few-shot program and the reference program."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import dspy
import pytest
from dspy.utils.dummies import DummyLM

from evals.errors import ConfigError
from evals.labels import DIAGNOSES
from programs.reference import TfidfLogRegProgram
from programs.registry import PROGRAMS, ProgramSpec, get_program, reference_programs

LM_PROGRAMS = ("zero_shot", "chain_of_thought", "knn_few_shot")
EXPECTED = (*LM_PROGRAMS, "tfidf_logreg")

# Vocabulary is chosen so that TF-IDF similarity to QUERY falls off clearly from one row to the next.
QUERY = "itchy red rash spreading over arms and legs with scaly patches"
TRAIN = [
    ("severe throbbing headache with nausea and sensitivity to light", "migraine"),
    ("itchy red rash on arms", "fungal infection"),
    ("burning urination with a frequent urge to pee", "urinary tract infection"),
    (QUERY, "psoriasis"),
    ("red rash spreading over arms and legs", "allergy"),
    ("high fever with chills and sweating every other day", "malaria"),
    ("yellow eyes and dark urine with itchy skin", "jaundice"),
    ("swollen painful knee joints stiff in the morning", "arthritis"),
]


def trainset() -> list[dspy.Example]:
    return [dspy.Example(symptoms=text, diagnosis=label).with_inputs("symptoms") for text, label in TRAIN]


def run(program: Any, lm: DummyLM, **inputs: str) -> dspy.Prediction:
    with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
        return program(**inputs)


def field_value(content: str, name: str) -> str:
    """The value under ``[[ ## name ## ]]`` in a formatted user message."""
    match = re.search(rf"\[\[ ## {name} ## \]\]\n(.*?)(?:\n\n|\Z)", content, flags=re.S)
    assert match, content
    return match.group(1)


def demos_sent(lm: DummyLM) -> list[tuple[str, str]]:
    """(symptoms, diagnosis) of every demo in the last prompt, in prompt order."""
    messages = lm.history[-1]["messages"]
    assert messages[0]["role"] == "system" and messages[-1]["role"] == "user"
    turns = messages[1:-1]
    users, answers = turns[0::2], turns[1::2]
    assert [m["role"] for m in users] == ["user"] * len(users)
    assert [m["role"] for m in answers] == ["assistant"] * len(answers)
    return [
        (field_value(u["content"], "symptoms"), re.search(r'"diagnosis": "([^"]+)"', a["content"]).group(1))
        for u, a in zip(users, answers, strict=True)
    ]


# --- registry --------------------------------------------------------------------------------


def test_registry_names_the_programs() -> None:
    assert set(EXPECTED) <= set(PROGRAMS)
    for name in EXPECTED:
        spec = get_program(name)
        assert spec.name == name and spec.description and "\n" not in spec.description


def test_unknown_program_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        get_program("nope")
    message = str(info.value)
    assert message.startswith("unknown program 'nope'")
    assert all(name in message for name in EXPECTED)


def test_source_hash_is_stable_and_distinct() -> None:
    hashes = {name: get_program(name).source_hash() for name in EXPECTED}
    assert hashes == {name: get_program(name).source_hash() for name in EXPECTED}
    assert len(set(hashes.values())) == len(EXPECTED)
    assert all(re.fullmatch(r"[0-9a-f]{16}", value) for value in hashes.values())


@pytest.mark.parametrize("name", LM_PROGRAMS)
def test_every_program_answers_with_dummy_lm(name: str) -> None:
    program = get_program(name).build(trainset())
    lm = DummyLM([{"reasoning": "scripted", "diagnosis": "dengue"}], adapter=dspy.JSONAdapter())
    prediction = run(program, lm, symptoms="high fever, joint pain and a rash behind the eyes")
    assert prediction.diagnosis == "dengue"
    assert len(lm.history) == 1, "one LM call per example: no bootstrapping at predict time"


def test_builds_are_independent() -> None:
    spec = get_program("zero_shot")
    first, second = spec.build(trainset()), spec.build(trainset())
    assert first is not second
    first.demos.append(trainset()[0])
    assert second.demos == []


# --- KNNFewShotProgram -----------------------------------------------------------------------


def test_knn_demos_are_the_nearest_training_examples() -> None:
    program = get_program("knn_few_shot").build(trainset())
    lm = DummyLM([{"diagnosis": "psoriasis"}], adapter=dspy.JSONAdapter())
    prediction = run(program, lm, symptoms=QUERY)
    assert prediction.diagnosis == "psoriasis"
    assert demos_sent(lm) == [
        (QUERY, "psoriasis"),
        ("red rash spreading over arms and legs", "allergy"),
        ("itchy red rash on arms", "fungal infection"),
    ]
    assert field_value(lm.history[-1]["messages"][-1]["content"], "symptoms") == QUERY


def test_knn_demos_follow_the_query() -> None:
    program = get_program("knn_few_shot").build(trainset())
    lm = DummyLM([{"diagnosis": "migraine"}, {"diagnosis": "malaria"}], adapter=dspy.JSONAdapter())
    run(program, lm, symptoms="throbbing headache and nausea, light hurts my eyes")
    first = demos_sent(lm)
    run(program, lm, symptoms="fever with chills and sweating")
    second = demos_sent(lm)
    assert len(first) == len(second) == 3
    assert first[0] == TRAIN[0]
    assert second[0] == ("high fever with chills and sweating every other day", "malaria")
    assert first != second


def test_knn_demos_are_not_kept_between_calls() -> None:
    program = get_program("knn_few_shot").build(trainset())
    lm = DummyLM([{"diagnosis": "allergy"}], adapter=dspy.JSONAdapter())
    run(program, lm, symptoms=QUERY)
    assert all(not predictor.demos for predictor in program.predictors())


def test_knn_builds_from_a_full_label_set() -> None:
    examples = [
        dspy.Example(symptoms=f"{word} case with {label} style complaints", diagnosis=label).with_inputs("symptoms")
        for label in DIAGNOSES
        for word in ("alpha", "bravo", "charlie")
    ]
    program = get_program("knn_few_shot").build(examples)
    lm = DummyLM([{"diagnosis": "typhoid"}], adapter=dspy.JSONAdapter())
    run(program, lm, symptoms="bravo case with typhoid style complaints")
    demos = demos_sent(lm)
    assert demos[0] == ("bravo case with typhoid style complaints", "typhoid")
    assert [label for _, label in demos] == ["typhoid"] * 3
    assert len(demos) == 3


# --- the reference program (tfidf_logreg) ----------------------------------------------------


def test_tfidf_logreg_is_the_one_reference_program() -> None:
    assert reference_programs(PROGRAMS) == ["tfidf_logreg"]
    assert get_program("tfidf_logreg").reference
    assert not any(get_program(name).reference for name in LM_PROGRAMS)
    extra = ProgramSpec(
        "other_reference", "another baseline", lambda trainset: TfidfLogRegProgram(trainset), reference=True
    )
    assert reference_programs({**PROGRAMS, extra.name: extra}) == ["tfidf_logreg", "other_reference"]
    assert reference_programs({"zero_shot": PROGRAMS["zero_shot"]}) == []


def test_default_selection_includes_the_reference(tmp_path: Path) -> None:
    from evals.config.settings import resolve
    from evals.harness.resources import Harness

    session = Harness(resolve({}, {}, {}, tmp_path))

    names = session.program_names()

    assert "tfidf_logreg" in names
    assert [name for name in names if "+" not in name] == list(PROGRAMS)


def test_reference_answers_without_any_lm_call() -> None:
    program = get_program("tfidf_logreg").build(trainset())
    lm = DummyLM([], adapter=dspy.JSONAdapter())

    prediction = run(program, lm, symptoms="severe throbbing headache, nausea, light hurts")
    with dspy.context(lm=None):  # and with no LM configured at all
        again = program(symptoms="severe throbbing headache, nausea, light hurts")

    assert prediction.diagnosis == again.diagnosis == "migraine"
    assert lm.history == []
    assert program.predictors() == []  # nothing an optimizer could tune or an LM could run


def test_reference_is_deterministic() -> None:
    queries = [text for text, _ in TRAIN] + ["fever and chills", "rash", "knee pain in the morning"]
    first, second = (get_program("tfidf_logreg").build(trainset()) for _ in range(2))

    assert [first(symptoms=q).diagnosis for q in queries] == [second(symptoms=q).diagnosis for q in queries]
    assert first.dump_state() == second.dump_state()


def test_reference_state_round_trips_through_json() -> None:
    program = get_program("tfidf_logreg").build(trainset())
    state = json.loads(json.dumps(program.dump_state()))
    # Loaded into a program built from other examples, it answers as the original does.
    other = get_program("tfidf_logreg").build(
        [dspy.Example(symptoms=f"text {i}", diagnosis=label) for i, label in enumerate(("allergy", "dengue"))]
    )
    queries = ["itchy red rash on my arms", "fever with chills every other day", "dark urine and yellow eyes"]
    assert [other(symptoms=q).diagnosis for q in queries] != [program(symptoms=q).diagnosis for q in queries]

    other.load_state(state)

    assert other.dump_state() == program.dump_state()
    assert [other(symptoms=q).diagnosis for q in queries] == [program(symptoms=q).diagnosis for q in queries]
    assert len(state["tfidf_logreg"]["train"]) == len(TRAIN)


@pytest.mark.parametrize(
    ("state", "match"),
    [
        ({"signature": {}, "demos": []}, "not a tfidf_logreg state"),
        ({"tfidf_logreg": {"format": 99}}, "not a tfidf_logreg state"),
        ("fingerprint", "fingerprint does not match"),
    ],
    ids=["a-predict-state", "other-format", "tampered"],
)
def test_reference_rejects_a_state_that_is_not_its_own(state: Any, match: str) -> None:
    program = get_program("tfidf_logreg").build(trainset())
    if state == "fingerprint":
        state = json.loads(json.dumps(program.dump_state()))
        state["tfidf_logreg"]["train"][0][1] = "psoriasis"

    with pytest.raises(ValueError, match=match):
        program.load_state(state)


def test_reference_needs_two_diagnoses() -> None:
    with pytest.raises(ValueError, match="at least two diagnoses"):
        get_program("tfidf_logreg").build(trainset()[:1])


def test_reference_accuracy_on_the_tiny_dataset(tiny_data_dir: Path) -> None:
    from evals.data import load_dataset
    from evals.harness.runner import run_examples

    data = load_dataset(tiny_data_dir)
    train = [
        dspy.Example(symptoms=e.symptoms, diagnosis=e.diagnosis).with_inputs("symptoms") for e in data.split("train")
    ]
    program = get_program("tfidf_logreg").build(train)

    records = run_examples(program, "tfidf_logreg", data.split("test"))

    # Every synthetic text names its diagnosis: the classifier gets all 44 right, with no errors.
    assert len(records) == 2 * len(DIAGNOSES)
    assert [r.error for r in records] == [None] * len(records)
    assert sum(r.correct for r in records) == len(records)
