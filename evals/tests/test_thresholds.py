"""Unit tests of evals.thresholds: loading, validation messages and merging."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from evals.errors import ConfigError
from evals.labels import DIAGNOSES, unknown_label_message
from evals.thresholds import (
    MINIMAL_FILE,
    ProgramThresholds,
    RecallThresholds,
    Thresholds,
    load_thresholds,
    parse_thresholds,
)

PROGRAMS = {"zero_shot", "chain_of_thought", "knn_few_shot"}
REPO_THRESHOLDS = Path(__file__).resolve().parents[2] / "thresholds.yaml"
FRACTION_KEYS = ("min_accuracy", "min_macro_f1", "max_invalid_rate")


def parse(data: object) -> Thresholds:
    return parse_thresholds(data, "thresholds.yaml", PROGRAMS)


def error_of(data: object) -> str:
    """Return the ConfigError message for ``data``, checking it is one line."""
    with pytest.raises(ConfigError) as caught:
        parse(data)
    message = str(caught.value)
    assert "\n" not in message
    return message


def with_section(section: object, program: str = "zero_shot") -> dict[str, Any]:
    return {"version": 1, "programs": {program: section}}


def load_text(tmp_path: Path, text: str | bytes) -> Thresholds:
    path = tmp_path / "thresholds.yaml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return load_thresholds(path, PROGRAMS)


def load_error(tmp_path: Path, text: str | bytes) -> str:
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, text)
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- merging and lookup -------------------------------------------------------------------


def test_version_only_gives_builtin_defaults() -> None:
    thresholds = parse({"version": 1})
    assert thresholds.default == ProgramThresholds()
    assert thresholds.default.max_invalid_rate == 1.0
    assert thresholds.default.max_p95_latency_ms == math.inf
    assert thresholds.programs == {}
    assert (thresholds.regression, thresholds.drift, thresholds.robustness) == ({}, {}, {})


def test_program_section_overrides_default_key_by_key() -> None:
    thresholds = parse(
        {
            "version": 1,
            "programs": {
                "default": {
                    "min_accuracy": 0.1,
                    "max_invalid_rate": 0.2,
                    "max_p95_latency_ms": 5000,
                    "recall": {"default": 0.05, "min_support": 4, "overrides": {"allergy": 0.5}},
                },
                "knn_few_shot": {"min_accuracy": 0.3, "recall": {"min_support": 7}},
            },
        }
    )
    knn = thresholds.for_program("knn_few_shot")
    assert knn == ProgramThresholds(
        min_accuracy=0.3,
        min_macro_f1=0.0,
        max_invalid_rate=0.2,
        max_p95_latency_ms=5000.0,
        recall=RecallThresholds(default=0.05, min_support=7, overrides={"allergy": 0.5}),
    )
    assert thresholds.default.min_accuracy == 0.1
    assert thresholds.default.recall.min_support == 4


def test_recall_overrides_merge_dict_wise_and_program_wins() -> None:
    thresholds = parse(
        {
            "version": 1,
            "programs": {
                "default": {"recall": {"overrides": {"allergy": 0.5, "migraine": 0.4}}},
                "zero_shot": {"recall": {"overrides": {"migraine": 0.1, "dengue": 0.2}}},
            },
        }
    )
    overrides = thresholds.for_program("zero_shot").recall.overrides
    assert overrides == {"allergy": 0.5, "migraine": 0.1, "dengue": 0.2}
    assert thresholds.default.recall.overrides == {"allergy": 0.5, "migraine": 0.4}


def test_program_without_section_falls_back_to_default() -> None:
    thresholds = parse(
        {"version": 1, "programs": {"default": {"min_accuracy": 0.25}, "zero_shot": {}}}
    )
    assert "chain_of_thought" not in thresholds.programs
    assert thresholds.for_program("chain_of_thought") is thresholds.default
    assert thresholds.for_program("zero_shot").min_accuracy == 0.25


def test_floor_uses_override_else_default() -> None:
    recall = RecallThresholds(default=0.2, min_support=3, overrides={"migraine": 0.6})
    assert recall.floor("migraine") == 0.6
    assert recall.floor("allergy") == 0.2


def test_null_sections_count_as_empty() -> None:
    thresholds = parse({"version": 1, "programs": {"zero_shot": None}, "drift": None})
    assert thresholds.for_program("zero_shot") == ProgramThresholds()
    assert thresholds.drift == {}


def test_later_sections_are_kept_raw() -> None:
    regression = {"max_accuracy_drop": 0.05, "anything": [1, 2]}
    thresholds = parse({"version": 1, "regression": regression, "robustness": {"typos": 0.1}})
    assert thresholds.regression == regression
    assert thresholds.robustness == {"typos": 0.1}


@pytest.mark.parametrize("key", ["regression", "drift", "robustness"])
def test_later_sections_must_be_mappings(key: str) -> None:
    message = error_of({"version": 1, key: [0.1]})
    assert message == f"thresholds.yaml: {key}: expected a mapping, found a list"


# --- loading files --------------------------------------------------------------------------


def test_load_records_source_and_sha256(tmp_path: Path) -> None:
    text = "version: 1\nprograms:\n  knn_few_shot:\n    min_accuracy: 0.3\n"
    thresholds = load_text(tmp_path, text)
    assert thresholds.source == str(tmp_path / "thresholds.yaml")
    assert thresholds.sha256 == hashlib.sha256(text.encode()).hexdigest()
    assert thresholds.for_program("knn_few_shot").min_accuracy == 0.3


def test_missing_file_says_how_to_create_one(tmp_path: Path) -> None:
    path = tmp_path / "thresholds.yaml"
    with pytest.raises(ConfigError) as caught:
        load_thresholds(path, PROGRAMS)
    message = str(caught.value)
    assert message.startswith(f"{path}: file not found; ")
    assert "README" in message
    assert message.endswith(MINIMAL_FILE)


def test_minimal_content_quoted_for_missing_file_is_valid() -> None:
    thresholds = parse(yaml.safe_load(MINIMAL_FILE))
    assert thresholds.default.min_accuracy == 0.0


def test_directory_is_reported_as_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_thresholds(tmp_path, PROGRAMS)


def test_invalid_yaml_reports_line_and_column(tmp_path: Path) -> None:
    message = load_error(tmp_path, "version: 1\nprograms: zero_shot: 0.5\n")
    expected = "line 2, column 20: not valid YAML: mapping values are not allowed here"
    assert message == f"{tmp_path / 'thresholds.yaml'}: {expected}"


def test_bytes_that_are_not_text_are_invalid_yaml(tmp_path: Path) -> None:
    message = load_error(tmp_path, b"version: 1\n\xff\xfe\x00")
    assert "thresholds.yaml: " in message
    assert "not valid YAML" in message


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    message = load_error(tmp_path, text)
    assert message.endswith("thresholds.yaml: file is empty; it needs at least 'version: 1'")


def test_real_thresholds_file_loads() -> None:
    """The repository's thresholds.yaml, with the names the session allows (programs and program+optimizer)."""
    from programs.optimizers import load_setup

    optimizers = load_setup(REPO_THRESHOLDS.parent / "programs" / "optimizers.yaml", PROGRAMS).optimizers
    known = [*PROGRAMS, *(f"{p}+{o}" for p in PROGRAMS for o in optimizers)]
    thresholds = load_thresholds(REPO_THRESHOLDS, known)
    assert set(thresholds.programs) == PROGRAMS | {"zero_shot+knn_few_shot"}
    assert thresholds.for_program("knn_few_shot").min_accuracy == 0.30
    assert thresholds.default.max_invalid_rate == 0.10
    assert thresholds.default.max_p95_latency_ms == 60000
    assert thresholds.default.recall == RecallThresholds(default=0.0, min_support=3)
    assert len(thresholds.sha256) == 64


# --- structure errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "found"), [([1, 2], "a list"), ("version: 1", "'version: 1' (a string)"), (3, "3")]
)
def test_top_level_must_be_a_mapping(data: object, found: str) -> None:
    assert error_of(data) == f"thresholds.yaml: expected a mapping at the top level, found {found}"


@pytest.mark.parametrize(
    ("data", "path", "key", "allowed"),
    [
        (
            {"verison": 1},
            "verison",
            "verison",
            "version, programs, regression, drift, robustness",
        ),
        (
            with_section({"min_acuracy": 0.5}),
            "programs.zero_shot.min_acuracy",
            "min_acuracy",
            "min_accuracy, min_macro_f1, max_invalid_rate, max_p95_latency_ms, recall",
        ),
        (
            with_section({"recall": {"floor": 0.5}}, program="default"),
            "programs.default.recall.floor",
            "floor",
            "default, min_support, overrides",
        ),
    ],
)
def test_unknown_keys_name_the_path_and_allowed_keys(
    data: object, path: str, key: str, allowed: str
) -> None:
    message = error_of(data)
    assert message == f"thresholds.yaml: {path}: unknown key {key!r}; allowed: {allowed}"


def test_missing_version() -> None:
    message = error_of({"programs": {}})
    assert message.startswith("thresholds.yaml: version: missing required key; ")
    assert "version: 1" in message


@pytest.mark.parametrize(("version", "found"), [(2, "2"), ("1", "'1' (a string)"), (True, "true")])
def test_unsupported_version(version: object, found: str) -> None:
    message = error_of({"version": version})
    assert message.startswith(f"thresholds.yaml: version: unsupported version {found}")
    assert message.endswith("; supported: 1")


def test_unknown_program_lists_known_ones() -> None:
    assert error_of(with_section({}, program="knn")) == (
        "thresholds.yaml: programs.knn: unknown program 'knn'; "
        "known: default, chain_of_thought, knn_few_shot, zero_shot"
    )


def test_unknown_diagnosis_in_overrides() -> None:
    message = error_of(with_section({"recall": {"overrides": {"migrane": 0.2}}}))
    assert message == (
        "thresholds.yaml: programs.zero_shot.recall.overrides.migrane: "
        + unknown_label_message("migrane")
    )
    assert "expected one of: allergy, arthritis" in message


@pytest.mark.parametrize(
    ("data", "path", "expected"),
    [
        ({"version": 1, "programs": ["zero_shot"]}, "programs", "a mapping of program name"),
        (with_section(0.5), "programs.zero_shot", "a mapping with keys min_accuracy, "),
        (with_section({"recall": 0.5}), "programs.zero_shot.recall", "a mapping with keys default"),
        (
            with_section({"recall": {"overrides": ["migraine"]}}),
            "programs.zero_shot.recall.overrides",
            "a mapping of diagnosis to recall floor",
        ),
    ],
)
def test_sections_must_be_mappings(data: object, path: str, expected: str) -> None:
    message = error_of(data)
    assert message.startswith(f"thresholds.yaml: {path}: expected {expected}")
    assert message.endswith(", found 0.5") or message.endswith(", found a list")


# --- value errors ---------------------------------------------------------------------------


def test_fraction_out_of_range_message() -> None:
    assert error_of(with_section({"min_accuracy": 1.5})) == (
        "thresholds.yaml: programs.zero_shot.min_accuracy: "
        "expected a number between 0 and 1, found 1.5"
    )


@pytest.mark.parametrize(
    ("value", "found"),
    [
        (True, "true (a boolean)"),
        (False, "false (a boolean)"),
        ("0.5", "'0.5' (a string)"),
        (None, "null"),
        ([0.5], "a list"),
        ({"value": 0.5}, "a mapping"),
        (-0.1, "-0.1"),
        (float("nan"), "nan"),
    ],
)
@pytest.mark.parametrize("key", FRACTION_KEYS)
def test_fractions_reject_wrong_types(key: str, value: object, found: str) -> None:
    message = error_of(with_section({key: value}))
    assert message == (
        f"thresholds.yaml: programs.zero_shot.{key}: "
        f"expected a number between 0 and 1, found {found}"
    )


def test_recall_values_are_fractions_too() -> None:
    assert error_of(with_section({"recall": {"default": 2}})).endswith(
        "programs.zero_shot.recall.default: expected a number between 0 and 1, found 2"
    )
    assert error_of(with_section({"recall": {"overrides": {"bronchial asthma": True}}})).endswith(
        "programs.zero_shot.recall.overrides.bronchial asthma: "
        "expected a number between 0 and 1, found true (a boolean)"
    )


@pytest.mark.parametrize(
    ("value", "found"),
    [(0, "0"), (-5, "-5"), (math.inf, "inf"), ("fast", "'fast' (a string)"), (True, "true")],
)
def test_latency_must_be_positive_number(value: object, found: str) -> None:
    message = error_of(with_section({"max_p95_latency_ms": value}))
    assert message.startswith(
        "thresholds.yaml: programs.zero_shot.max_p95_latency_ms: "
        f"expected a positive number of milliseconds, found {found}"
    )


@pytest.mark.parametrize(
    ("value", "found"), [(-1, "-1"), (2.5, "2.5"), (5.0, "5.0"), (True, "true"), ("5", "'5'")]
)
def test_min_support_must_be_a_whole_number(value: object, found: str) -> None:
    message = error_of(with_section({"recall": {"min_support": value}}))
    assert message.startswith(
        "thresholds.yaml: programs.zero_shot.recall.min_support: "
        f"expected a whole number >= 0, found {found}"
    )


def test_every_diagnosis_can_have_an_override() -> None:
    overrides = {diagnosis: 0.1 for diagnosis in DIAGNOSES}
    thresholds = parse(with_section({"recall": {"overrides": overrides}}))
    assert thresholds.for_program("zero_shot").recall.overrides == overrides


@given(value=st.floats(min_value=0.0, max_value=1.0), key=st.sampled_from(FRACTION_KEYS))
def test_any_fraction_in_range_is_accepted(value: float, key: str) -> None:
    limits = parse(with_section({key: value, "recall": {"default": value}})).for_program(
        "zero_shot"
    )
    assert getattr(limits, key) == value
    assert limits.recall.default == value


@given(
    value=st.floats().filter(lambda x: not 0.0 <= x <= 1.0) | st.integers().filter(lambda x: x not in (0, 1)),
    key=st.sampled_from(FRACTION_KEYS),
)
def test_any_number_outside_range_is_rejected(value: float, key: str) -> None:
    with pytest.raises(ConfigError, match=f"programs.zero_shot.{key}: expected a number between"):
        parse(with_section({key: value}))


@given(value=st.integers(min_value=0))
def test_any_non_negative_int_is_a_valid_min_support(value: int) -> None:
    recall = parse(with_section({"recall": {"min_support": value}})).for_program("zero_shot").recall
    assert recall.min_support == value
