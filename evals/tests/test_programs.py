"""Unit tests of the program registry and the retrieval few-shot program, with dspy's DummyLM."""

from __future__ import annotations

import re
from typing import Any

import dspy
import pytest
from dspy.utils.dummies import DummyLM

from evals.errors import ConfigError
from evals.labels import DIAGNOSES
from programs.registry import PROGRAMS, get_program

EXPECTED = ("zero_shot", "chain_of_thought", "knn_few_shot")

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
    return [(field_value(u["content"], "symptoms"), re.search(r'"diagnosis": "([^"]+)"', a["content"]).group(1))
            for u, a in zip(users, answers, strict=True)]


# --- registry --------------------------------------------------------------------------------


def test_registry_names_the_three_programs() -> None:
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


@pytest.mark.parametrize("name", EXPECTED)
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
