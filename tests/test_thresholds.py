"""Unit tests of evals.config.thresholds: loading, validation messages and merging."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from evals.config.thresholds import (
    MINIMAL_FILE,
    ProgramThresholds,
    RecallThresholds,
    Thresholds,
    load_thresholds,
    load_yaml_strict,
    parse_thresholds,
)
from evals.errors import ConfigError
from evals.labels import DIAGNOSES, unknown_label_message

PROGRAMS = {"zero_shot", "chain_of_thought", "knn_few_shot"}
REPO_THRESHOLDS = Path(__file__).resolve().parents[1] / "thresholds.yaml"
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
    thresholds = parse({"version": 1, "programs": {"default": {"min_accuracy": 0.25}, "zero_shot": {}}})
    assert "chain_of_thought" not in thresholds.programs
    assert thresholds.for_program("chain_of_thought") is thresholds.default
    assert thresholds.for_program("zero_shot").min_accuracy == 0.25


def test_floor_uses_override_else_default() -> None:
    recall = RecallThresholds(default=0.2, min_support=3, overrides={"migraine": 0.6})
    assert recall.floor("migraine") == 0.6
    assert recall.floor("allergy") == 0.2


def test_explicitly_empty_mappings_are_allowed() -> None:
    thresholds = parse({"version": 1, "programs": {"zero_shot": {"recall": {"overrides": {}}}}, "drift": {}})
    assert thresholds.for_program("zero_shot") == ProgramThresholds()
    assert thresholds.drift == {}


EMPTY = "found nothing (an empty section: fill it in or delete the key)"


@pytest.mark.parametrize(
    ("data", "path", "expected"),
    [
        ({"version": 1, "programs": None}, "programs", "a mapping of program name to limits"),
        ({"version": 1, "regression": None}, "regression", "a mapping"),
        ({"version": 1, "drift": None}, "drift", "a mapping"),
        ({"version": 1, "robustness": None}, "robustness", "a mapping"),
        (
            with_section(None),
            "programs.zero_shot",
            "a mapping with keys min_accuracy, min_macro_f1, max_invalid_rate, max_p95_latency_ms, "
            "max_cost_usd, min_gain_over_reference, recall",
        ),
        (
            with_section({"recall": None}),
            "programs.zero_shot.recall",
            "a mapping with keys default, min_support, overrides",
        ),
        (
            with_section({"recall": {"overrides": None}}),
            "programs.zero_shot.recall.overrides",
            "a mapping of diagnosis to recall floor",
        ),
    ],
)
def test_empty_sections_are_errors_not_no_limits(data: object, path: str, expected: str) -> None:
    assert error_of(data) == f"thresholds.yaml: {path}: expected {expected}, {EMPTY}"


def test_section_with_only_comments_is_empty(tmp_path: Path) -> None:
    text = "version: 1\nprograms:\n  # zero_shot:\n  #   min_accuracy: 0.5\nregression:\n  alpha: 0.05\n"
    message = load_error(tmp_path, text)
    assert message == f"{tmp_path / 'thresholds.yaml'}: programs: expected a mapping of program name to limits, {EMPTY}"


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
    from evals.config.optimizers import load_setup

    optimizers = load_setup(REPO_THRESHOLDS.parent / "programs" / "optimizers.yaml", PROGRAMS).optimizers
    known = [*PROGRAMS, *(f"{p}+{o}" for p in PROGRAMS for o in optimizers)]
    thresholds = load_thresholds(REPO_THRESHOLDS, known)
    assert set(thresholds.programs) == PROGRAMS | {"zero_shot+knn_few_shot"}
    assert thresholds.for_program("knn_few_shot").min_accuracy == 0.30
    assert thresholds.default.max_invalid_rate == 0.10
    assert thresholds.default.max_p95_latency_ms == 60000
    assert thresholds.default.recall == RecallThresholds(default=0.0, min_support=3)
    assert len(thresholds.sha256) == 64


# --- strict YAML: duplicate keys, absurd values ---------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "version: 1\nprograms:\n  zero_shot:\n    min_accuracy: 0.5\n"
            "    max_invalid_rate: 0.1\n    min_accuracy: 0.0\n",
            "6: programs.zero_shot.min_accuracy: duplicate key (first at line 4)",
        ),
        (
            "version: 1\nprograms:\n  knn_few_shot: {min_accuracy: 0.3}\n  knn_few_shot: {}\n",
            "4: programs.knn_few_shot: duplicate key (first at line 3)",
        ),
        ("version: 1\nprograms: {}\nversion: 1\n", "3: version: duplicate key (first at line 1)"),
        (
            "version: 1\nregression:\n  promote_requires:\n    lm.spec: smollm2\n    lm.spec: other\n",
            "5: regression.promote_requires.lm.spec: duplicate key (first at line 4)",
        ),
        (
            "version: 1\nprograms:\n  zero_shot:\n    recall: {overrides: {migraine: 0.5, migraine: 0.0}}\n",
            "4: programs.zero_shot.recall.overrides.migraine: duplicate key (first at line 4)",
        ),
        ("version: 1\nrobustness: {1: 0.5, 01: 0.5}\n", "2: robustness.01: duplicate key (first at line 2)"),
    ],
    ids=["program-key", "program", "top-level", "raw-section", "flow-mapping", "equal-values"],
)
def test_duplicate_keys_name_the_key_and_both_lines(tmp_path: Path, text: str, expected: str) -> None:
    assert load_error(tmp_path, text) == f"{tmp_path / 'thresholds.yaml'}:{expected}"


def test_merge_keys_and_aliases_are_not_duplicates(tmp_path: Path) -> None:
    text = "version: 1\nprograms:\n  default: &d {min_accuracy: 0.1}\n  zero_shot:\n    <<: *d\n    min_accuracy: 0.2\n"
    assert load_text(tmp_path, text).for_program("zero_shot").min_accuracy == 0.2


LONG = "1" * 5000


@pytest.mark.parametrize(
    ("value", "key", "found"),
    [
        (LONG, "min_accuracy", f"expected a number between 0 and 1, found {LONG[:40]}… (a number of 5000 characters)"),
        (
            "1" * 4000,
            "recall: {min_support: %s}",
            f"expected a whole number >= 0, found {LONG[:40]}… (a number of 4000 characters)",
        ),
        ("0." + "5" * 200, "min_accuracy", "expected a number between 0 and 1, found 0.555"),
        (
            "0x" + "f" * 90,
            "min_accuracy",
            "expected a number between 0 and 1, found 2348542582773833227889480596789337027375…",
        ),
        ("1.0e+999", "min_accuracy", "expected a number between 0 and 1, found inf"),
        (".nan", "min_accuracy", "expected a number between 0 and 1, found nan"),
        ("1.0e+999", "max_p95_latency_ms", "expected a positive number of milliseconds, found inf"),
    ],
    ids=["5000-digits", "4000-digit-count", "200-decimals", "hex", "inf", "nan", "inf-latency"],
)
def test_absurd_numbers_are_one_short_line(tmp_path: Path, value: str, key: str, found: str) -> None:
    entry = key % value if "%s" in key else f"{key}: {value}"
    message = load_error(tmp_path, f"version: 1\nprograms:\n  zero_shot:\n    {entry}\n")
    assert message.startswith(f"{tmp_path / 'thresholds.yaml'}: programs.zero_shot.")
    assert found in message
    assert len(message) < 250


def test_absurd_version_is_one_short_line(tmp_path: Path) -> None:
    message = load_error(tmp_path, f"version: {LONG}\n")
    assert message.endswith(f"version: unsupported version {LONG[:40]}… (a number of 5000 characters); supported: 1")


def test_huge_int_given_directly_is_described_not_printed() -> None:
    message = error_of(with_section({"min_accuracy": 10**5000}))
    assert message.endswith("expected a number between 0 and 1, found an integer of about 5000 digits")


def test_long_keys_and_strings_are_cut_in_messages() -> None:
    message = error_of(with_section({"x" * 5000: 0.5}))
    assert message.startswith(f"thresholds.yaml: programs.zero_shot.{'x' * 40}…: unknown key 'xxx")
    assert len(message) < 270  # the cut key, then the allowed keys


def test_file_over_one_megabyte_is_refused_unparsed(tmp_path: Path) -> None:
    text = f"version: 1\nprograms:\n  zero_shot:\n    min_accuracy: {'1' * 5_000_000}\n"
    message = load_error(tmp_path, text)
    assert message == f"{tmp_path / 'thresholds.yaml'}: file is 5.0 MB; a configuration file may be at most 1 MB"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("version: 1\nregression: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
        ("version: 1\nregression:\n  when: 2024-13-45\n", "month must be in 1..12"),
        ("version: 1\nregression:\n  seed: !!int abc\n", "invalid literal for int() with base 10: 'abc'"),
    ],
    ids=["deep-nesting", "bad-date", "bad-int-tag"],
)
def test_values_yaml_cannot_build_are_one_line(tmp_path: Path, text: str, problem: str) -> None:
    assert load_error(tmp_path, text) == f"{tmp_path / 'thresholds.yaml'}: not valid YAML: {problem}"


def test_load_yaml_strict_is_public_for_other_config_files(tmp_path: Path) -> None:
    path = tmp_path / "other.yaml"
    path.write_text("a: 1\nb: {c: 2, c: 3}\n")
    with pytest.raises(ConfigError, match=r"other.yaml:2: b.c: duplicate key \(first at line 2\)$"):
        load_yaml_strict(path)
    path.write_text("a: [1, 2]\n")
    assert load_yaml_strict(path) == {"a": [1, 2]}
    with pytest.raises(ConfigError, match="missing.yaml: file not found"):
        load_yaml_strict(tmp_path / "missing.yaml")


BAD_FILES = {
    "duplicate": (
        "version: 1\nprograms:\n  zero_shot:\n    min_accuracy: 0.9\n    min_accuracy: 0.0\n",
        "ERROR: *thresholds.yaml:5: programs.zero_shot.min_accuracy: duplicate key (first at line 4)",
    ),
    "empty-section": (
        "version: 1\nprograms:\n",
        "ERROR: *thresholds.yaml: programs: expected a mapping*found nothing*",
    ),
    "5000-digits": (
        f"version: 1\nprograms:\n  zero_shot:\n    min_accuracy: {LONG}\n",
        "ERROR: *min_accuracy: expected a number between 0 and 1, found 1111*… (a number of 5000 characters)",
    ),
    "5-megabytes": (
        f"version: 1\nprograms:\n  zero_shot:\n    min_accuracy: '{'x' * 5_000_000}'\n",
        "ERROR: *thresholds.yaml: file is 5.0 MB; a configuration file may be at most 1 MB",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_pytest_on_a_bad_file_is_one_error_line_and_exit_4(eval_project: pytest.Pytester, case: str) -> None:
    text, message = BAD_FILES[case]
    (eval_project.path / "thresholds.yaml").write_text(text)

    result = eval_project.runpytest_subprocess("-p", "no:cacheprovider")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    output = result.stdout.lines + result.stderr.lines
    errors = [line for line in output if line.startswith("ERROR:")]
    assert len(errors) == 1, output
    result.stderr.fnmatch_lines([message])
    assert all(len(line) < 300 for line in output)
    assert "Traceback" not in "\n".join(output)


# --- structure errors -----------------------------------------------------------------------


@pytest.mark.parametrize(("data", "found"), [([1, 2], "a list"), ("version: 1", "'version: 1' (a string)"), (3, "3")])
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
            "min_accuracy, min_macro_f1, max_invalid_rate, max_p95_latency_ms, max_cost_usd, "
            "min_gain_over_reference, recall",
        ),
        (
            with_section({"recall": {"floor": 0.5}}, program="default"),
            "programs.default.recall.floor",
            "floor",
            "default, min_support, overrides",
        ),
    ],
)
def test_unknown_keys_name_the_path_and_allowed_keys(data: object, path: str, key: str, allowed: str) -> None:
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
        "thresholds.yaml: programs.zero_shot.recall.overrides.migrane: " + unknown_label_message("migrane")
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
    assert message.endswith((", found 0.5", ", found a list"))


# --- value errors ---------------------------------------------------------------------------


def test_fraction_out_of_range_message() -> None:
    assert error_of(with_section({"min_accuracy": 1.5})) == (
        "thresholds.yaml: programs.zero_shot.min_accuracy: expected a number between 0 and 1, found 1.5"
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
    assert message == (f"thresholds.yaml: programs.zero_shot.{key}: expected a number between 0 and 1, found {found}")


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


@pytest.mark.parametrize(("value", "found"), [(-1, "-1"), (2.5, "2.5"), (5.0, "5.0"), (True, "true"), ("5", "'5'")])
def test_min_support_must_be_a_whole_number(value: object, found: str) -> None:
    message = error_of(with_section({"recall": {"min_support": value}}))
    assert message.startswith(
        f"thresholds.yaml: programs.zero_shot.recall.min_support: expected a whole number >= 0, found {found}"
    )


def test_every_diagnosis_can_have_an_override() -> None:
    overrides = {diagnosis: 0.1 for diagnosis in DIAGNOSES}
    thresholds = parse(with_section({"recall": {"overrides": overrides}}))
    assert thresholds.for_program("zero_shot").recall.overrides == overrides


@given(value=st.floats(min_value=0.0, max_value=1.0), key=st.sampled_from(FRACTION_KEYS))
def test_any_fraction_in_range_is_accepted(value: float, key: str) -> None:
    limits = parse(with_section({key: value, "recall": {"default": value}})).for_program("zero_shot")
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


def test_optimizers_yaml_is_read_strictly_too(tmp_path: Path) -> None:
    from evals.config.optimizers import load_setup

    path = tmp_path / "optimizers.yaml"
    path.write_text("optimizers:\n  knn: {class: KNNFewShot}\n  knn: {class: LabeledFewShot}\n")
    with pytest.raises(ConfigError, match=r"optimizers.yaml:3: optimizers.knn: duplicate key \(first at line 2\)$"):
        load_setup(path, PROGRAMS)
