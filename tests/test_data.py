"""Unit tests of evals.data: the real dataset, bad input files, the Hub path and the helpers."""

from __future__ import annotations

import dataclasses
import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evals.data import (
    HUB_REVISION,
    MAX_SYMPTOM_CHARS,
    VAL_FRACTION,
    Example,
    SymptomDataset,
    fingerprint,
    load_dataset,
    normalize_text,
    parse_per_diagnosis,
    sample,
    stratified_split,
)
from evals.errors import ConfigError
from evals.labels import DIAGNOSES
from tests.conftest import SHARED_DATA

REAL_DATA = SHARED_DATA
TRAIN_ROWS, TEST_ROWS = 853, 212

needs_real_data = pytest.mark.skipif(not REAL_DATA.is_dir(), reason=f"{REAL_DATA} is not available")


@pytest.fixture(scope="module")
def real() -> SymptomDataset:
    if not REAL_DATA.is_dir():
        pytest.skip(f"{REAL_DATA} is not available")
    return load_dataset(REAL_DATA, seed=0)


def ids(examples: tuple[Example, ...]) -> list[str]:
    return [e.id for e in examples]


def labels(examples: tuple[Example, ...]) -> Counter[str]:
    return Counter(e.diagnosis for e in examples)


def raw_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# --- the real dataset ------------------------------------------------------------------------


@needs_real_data
def test_real_split_sizes_and_ids(real: SymptomDataset) -> None:
    train, val, test = real.split("train"), real.split("val"), real.split("test")
    assert len(test) == TEST_ROWS
    assert len(train) + len(val) == TRAIN_ROWS
    assert ids(test) == [f"test-{n:04d}" for n in range(1, TEST_ROWS + 1)]
    assert sorted(ids(train) + ids(val)) == [f"train-{n:04d}" for n in range(1, TRAIN_ROWS + 1)]
    assert not set(ids(train)) & set(ids(val))


@needs_real_data
def test_real_val_is_a_stratified_fifth_of_every_label(real: SymptomDataset) -> None:
    upstream = labels(real.split("train") + real.split("val"))
    val = labels(real.split("val"))
    assert set(val) == set(DIAGNOSES)
    for label, total in upstream.items():
        assert abs(val[label] - VAL_FRACTION * total) <= 0.5, (label, val[label], total)


@needs_real_data
def test_real_rows_match_upstream_after_normalisation(real: SymptomDataset) -> None:
    upstream = raw_rows(REAL_DATA / "test.jsonl")
    by_id = {e.id: e for e in real.split("test")}
    for number, row in enumerate(upstream, start=1):
        example = by_id[f"test-{number:04d}"]
        assert example.diagnosis == row["output_text"]
        assert example.symptoms == " ".join(row["input_text"].split())


@needs_real_data
def test_real_text_whitespace_is_normalised(real: SymptomDataset) -> None:
    raw_127 = raw_rows(REAL_DATA / "test.jsonl")[126]["input_text"]
    assert raw_127.endswith("\u00a0"), "the upstream row this test relies on changed"
    example = {e.id: e for e in real.split("test")}["test-0127"]
    assert example.symptoms == raw_127.rstrip("\u00a0 ")
    for split in ("train", "val", "test"):
        for e in real.split(split):
            assert "\u00a0" not in e.symptoms and "  " not in e.symptoms, e.id
            assert e.symptoms == e.symptoms.strip(), e.id


@needs_real_data
def test_split_is_deterministic_for_a_seed_and_varies_with_it(real: SymptomDataset) -> None:
    again = load_dataset(REAL_DATA, seed=0)
    other = load_dataset(REAL_DATA, seed=1)
    assert again.manifest() == real.manifest()
    assert ids(other.split("val")) != ids(real.split("val"))
    assert labels(other.split("val")) == labels(real.split("val"))
    assert fingerprint(other.split("test")) == fingerprint(real.split("test"))


@needs_real_data
def test_sample_takes_exactly_n_per_label(real: SymptomDataset) -> None:
    test = real.split("test")
    picked = sample(test, 2, seed=0)
    assert labels(picked) == {label: 2 for label in DIAGNOSES}
    assert set(picked) <= set(test)
    assert len(set(ids(picked))) == len(picked)


@needs_real_data
def test_sample_is_deterministic_and_seeded(real: SymptomDataset) -> None:
    test = real.split("test")
    assert sample(test, 2, seed=0) == sample(test, 2, seed=0)
    assert sample(test, 2, seed=0) == sample(tuple(reversed(test)), 2, seed=0)
    assert sample(test, 2, seed=0) != sample(test, 2, seed=1)


@needs_real_data
def test_sample_none_gives_everything(real: SymptomDataset) -> None:
    test = real.split("test")
    assert sample(test, None) == test
    assert sample(test, 10_000) == tuple(sorted(test, key=lambda e: e.id))


@needs_real_data
def test_manifest_counts(real: SymptomDataset) -> None:
    manifest = real.manifest()
    assert manifest["source"] == str(REAL_DATA.resolve())
    assert manifest["revision"] is None
    assert set(manifest["splits"]) == {"train", "val", "test"}
    for name, entry in manifest["splits"].items():
        rows = real.split(name)
        assert entry["rows"] == len(rows)
        assert entry["fingerprint"] == fingerprint(rows)
        assert entry["labels"] == dict(labels(rows))
        assert sum(entry["labels"].values()) == len(rows)
    assert manifest["splits"]["test"]["labels"] == dict(
        Counter(r["output_text"] for r in raw_rows(REAL_DATA / "test.jsonl"))
    )
    json.dumps(manifest)  # logged as a JSON artifact


def test_unknown_split_name(tiny_data_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown split 'dev'.*train, val, test"):
        load_dataset(tiny_data_dir).split("dev")


# --- fingerprint -----------------------------------------------------------------------------


def tiny_examples() -> list[Example]:
    return [Example(f"test-{i:04d}", f"text number {i}", DIAGNOSES[i % len(DIAGNOSES)]) for i in range(1, 30)]


def test_fingerprint_ignores_order() -> None:
    rows = tiny_examples()
    shuffled = rows[:]
    random.Random(3).shuffle(shuffled)
    assert fingerprint(rows) == fingerprint(shuffled) == fingerprint(reversed(rows))
    assert len(fingerprint(rows)) == 64


def test_fingerprint_changes_with_one_text_label_or_id() -> None:
    rows = tiny_examples()
    base = fingerprint(rows)
    for change in ({"symptoms": "text number 7!"}, {"diagnosis": "migraine"}, {"id": "test-9999"}):
        changed = rows[:]
        changed[6] = dataclasses.replace(rows[6], **change)
        assert fingerprint(changed) != base, change
    assert fingerprint(rows[:-1]) != base


# --- bad input: one readable ConfigError line naming file and line ---------------------------


def corrupt(data_dir: Path, split: str, line: int, text: str) -> Path:
    path = data_dir / f"{split}.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[line - 1] = text
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def replace_field(data_dir: Path, split: str, line: int, **fields: Any) -> Path:
    path = data_dir / f"{split}.jsonl"
    obj = json.loads(path.read_text(encoding="utf-8").splitlines()[line - 1])
    obj.update(fields)
    return corrupt(data_dir, split, line, json.dumps(obj))


def config_error(data_dir: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_dataset(data_dir)
    message = str(info.value)
    assert "\n" not in message, message
    return message


def test_missing_directory(tmp_path: Path) -> None:
    message = config_error(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in message
    assert "not found" in message and "train.jsonl" in message


def test_missing_test_file(tiny_data_dir: Path) -> None:
    (tiny_data_dir / "test.jsonl").unlink()
    message = config_error(tiny_data_dir)
    assert f"{tiny_data_dir / 'test.jsonl'}: dataset file not found" in message


def test_malformed_json_names_the_line(tiny_data_dir: Path) -> None:
    path = corrupt(tiny_data_dir, "train", 17, '{"output_text": "allergy", "input_text": "no closing brace"')
    message = config_error(tiny_data_dir)
    assert message == f"{path}:17: not valid JSON: expecting ',' delimiter at column 60"


def test_line_numbers_count_blank_lines(tiny_data_dir: Path) -> None:
    path = tiny_data_dir / "test.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join(["", "  ", *lines[:3], "not json", *lines[3:]]) + "\n", encoding="utf-8")
    assert config_error(tiny_data_dir) == f"{path}:6: not valid JSON: expecting value at column 1"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"output_text": "allergy", "input_text": "tab\there"}', "invalid control character at column 46"),
        ('{"output_text": "allergy", "input_text": "unterminated', "unterminated string starting at column 42"),
        ('{"output_text": "allergy"} trailing', "extra data at column 28"),
        ("{output_text: 1}", "expecting property name enclosed in double quotes at column 2"),
    ],
)
def test_json_errors_read_naturally(tiny_data_dir: Path, text: str, problem: str) -> None:
    path = corrupt(tiny_data_dir, "test", 17, text)
    message = config_error(tiny_data_dir)
    assert message == f"{path}:17: not valid JSON: {problem}"
    assert " at at " not in message


@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("content", ["", "\n\n", "  \n\t\n \n"])
def test_empty_or_blank_file_is_one_line(tiny_data_dir: Path, split: str, content: str) -> None:
    path = tiny_data_dir / f"{split}.jsonl"
    path.write_text(content, encoding="utf-8")
    assert config_error(tiny_data_dir) == f"{path}: no rows"


def test_no_rows_from_the_hub_is_one_line() -> None:
    from evals.data import validate_rows

    with pytest.raises(ConfigError, match=r"^test split: no rows$"):
        validate_rows([], "test")


def test_blank_lines_are_skipped(tiny_data_dir: Path) -> None:
    path = tiny_data_dir / "test.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n\n".join(lines) + "\n\n", encoding="utf-8")
    test = load_dataset(tiny_data_dir).split("test")
    assert len(test) == len(lines)
    assert ids(test)[:2] == ["test-0001", "test-0003"]


@pytest.mark.parametrize(("text", "found"), [("[1, 2]", "list"), ('"just a string"', "str"), ("42", "int")])
def test_non_object_line(tiny_data_dir: Path, text: str, found: str) -> None:
    path = corrupt(tiny_data_dir, "test", 9, text)
    assert config_error(tiny_data_dir) == f"{path}:9: expected a JSON object, found {found}"


@pytest.mark.parametrize("key", ["input_text", "output_text"])
def test_missing_key(tiny_data_dir: Path, key: str) -> None:
    path = tiny_data_dir / "train.jsonl"
    obj = json.loads(path.read_text(encoding="utf-8").splitlines()[40])
    del obj[key]
    corrupt(tiny_data_dir, "train", 41, json.dumps(obj))
    message = config_error(tiny_data_dir)
    assert message.startswith(f"{path}:41: missing key {key!r}")


def test_unknown_label_lists_the_22(tiny_data_dir: Path) -> None:
    path = replace_field(tiny_data_dir, "test", 5, output_text="flu")
    message = config_error(tiny_data_dir)
    assert message.startswith(f"{path}:5: output_text: unknown diagnosis 'flu'")
    assert all(label in message for label in DIAGNOSES)


@pytest.mark.parametrize("text", ["", "   ", "\u00a0\t \n"])
def test_empty_text(tiny_data_dir: Path, text: str) -> None:
    path = replace_field(tiny_data_dir, "train", 37, input_text=text)
    assert config_error(tiny_data_dir) == f"{path}:37: input_text: empty symptom text"


@pytest.mark.parametrize(("value", "found"), [(42, "int"), (None, "NoneType"), (["itchy"], "list")])
def test_non_string_text(tiny_data_dir: Path, value: Any, found: str) -> None:
    path = replace_field(tiny_data_dir, "train", 37, input_text=value)
    assert config_error(tiny_data_dir) == f"{path}:37: input_text: expected a string, found {found}"


def test_megabyte_text_is_refused_quickly(tiny_data_dir: Path) -> None:
    path = replace_field(tiny_data_dir, "test", 3, input_text="itchy rash " * 100_000)
    started = time.perf_counter()
    message = config_error(tiny_data_dir)
    elapsed = time.perf_counter() - started
    assert message.startswith(f"{path}:3: input_text:")
    assert f"{MAX_SYMPTOM_CHARS:,}" in message or str(MAX_SYMPTOM_CHARS) in message
    assert elapsed < 5, f"took {elapsed:.1f} s"


def test_text_at_the_limit_is_accepted(tiny_data_dir: Path) -> None:
    replace_field(tiny_data_dir, "test", 3, input_text="a" * MAX_SYMPTOM_CHARS)
    test = load_dataset(tiny_data_dir).split("test")
    assert len(test[2].symptoms) == MAX_SYMPTOM_CHARS


def test_invalid_utf8_names_the_line(tiny_data_dir: Path) -> None:
    path = tiny_data_dir / "train.jsonl"
    raw = path.read_bytes().split(b"\n")
    raw[4] = raw[4].replace(b"Patient", b"Pati\xe9nt")
    path.write_bytes(b"\n".join(raw))
    assert config_error(tiny_data_dir).startswith(f"{path}:5:")


# --- the Hub code path (offline, through datasets' local-directory loader) -------------------


@pytest.fixture
def offline_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    import huggingface_hub.constants

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # Both libraries read these once at import time, so the module constants are patched too.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets-cache")


def test_hub_path_matches_local_path(offline_hub: None, tiny_data_dir: Path) -> None:
    hub = load_dataset(None, hub_id=str(tiny_data_dir), revision=HUB_REVISION, seed=4)
    local = load_dataset(tiny_data_dir, seed=4)
    hub_manifest, local_manifest = hub.manifest(), local.manifest()
    assert hub_manifest["revision"] == HUB_REVISION
    assert hub_manifest["source"] == str(tiny_data_dir)
    assert hub_manifest["splits"] == local_manifest["splits"]


@needs_real_data
def test_hub_path_matches_local_path_on_real_data(offline_hub: None, real: SymptomDataset) -> None:
    hub = load_dataset(None, hub_id=str(REAL_DATA), revision=HUB_REVISION, seed=0)
    assert hub.manifest()["splits"] == real.manifest()["splits"]


def test_hub_path_validates_rows(offline_hub: None, tiny_data_dir: Path) -> None:
    replace_field(tiny_data_dir, "test", 4, output_text="flu")
    with pytest.raises(ConfigError) as info:
        load_dataset(None, hub_id=str(tiny_data_dir), revision=HUB_REVISION)
    assert str(info.value).startswith(
        f"{tiny_data_dir}@{HUB_REVISION[:12]}/test.jsonl:4: output_text: unknown diagnosis"
    )


def test_unreachable_hub_id_is_one_line(offline_hub: None) -> None:
    started = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        load_dataset(None, hub_id="no-such-org-evals/no-such-dataset", revision="0" * 40)
    message = str(info.value)
    assert "\n" not in message
    assert "'no-such-org-evals/no-such-dataset'" in message
    assert "--evals-data-dir" in message and "EVALS_DATA_DIR" in message
    assert time.perf_counter() - started < 10


# --- parse_per_diagnosis ---------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [("all", None), ("ALL ", None), ("3", 3), (" 1 ", 1), ("40", 40)])
def test_parse_per_diagnosis(text: str, expected: int | None) -> None:
    assert parse_per_diagnosis(text) == expected


@pytest.mark.parametrize("text", ["0", "x", "-1", "2.5", ""])
def test_parse_per_diagnosis_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="positive integer or 'all'") as info:
        parse_per_diagnosis(text)
    assert repr(text) in str(info.value)


# --- properties ------------------------------------------------------------------------------

WHITESPACE = " \t\n\r\u00a0\u2003\u3000\x0b\x0c"
messy_text = st.text(alphabet=st.sampled_from(WHITESPACE) | st.characters(), max_size=80)


@settings(max_examples=200, deadline=None)
@given(messy_text)
def test_normalize_text_properties(text: str) -> None:
    once = normalize_text(text)
    assert normalize_text(once) == once
    assert once == once.strip()
    if once:
        assert not once[0].isspace() and not once[-1].isspace()
    assert not any(a.isspace() and b.isspace() for a, b in zip(once, once[1:], strict=False))
    assert all(c == " " for c in once if c.isspace())
    assert "".join(c for c in once if not c.isspace()) == "".join(c for c in text if not c.isspace())


label_lists = st.lists(st.sampled_from(DIAGNOSES[:6]), max_size=60)


@settings(max_examples=150, deadline=None)
@given(label_lists, st.sampled_from([0.0, 0.2, 0.5, 0.75, 1.0]), st.integers(0, 2**32))
def test_stratified_split_partitions(diagnoses: list[str], fraction: float, seed: int) -> None:
    examples = [Example(f"train-{i:04d}", f"text {i}", label) for i, label in enumerate(diagnoses, start=1)]
    random.Random(seed).shuffle(examples)
    rest, held = stratified_split(examples, fraction, seed)
    assert not set(rest) & set(held)
    assert sorted(ids(rest + held)) == sorted(e.id for e in examples)
    total, held_labels = Counter(diagnoses), labels(held)
    for label, count in total.items():
        assert abs(held_labels[label] - fraction * count) <= 0.5
    assert (rest, held) == stratified_split(list(reversed(examples)), fraction, seed)
