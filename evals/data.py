"""Load, validate, split and sample gretelai/symptom_to_diagnosis.

The dataset comes from the Hugging Face Hub by id and pinned revision (through
``datasets``), or from a local directory holding the upstream ``train.jsonl`` and
``test.jsonl``. Every row is validated (text, label); any problem raises
:class:`~evals.errors.ConfigError` with one line naming the file and line.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evals.errors import ConfigError
from evals.labels import DIAGNOSES, unknown_label_message

HUB_ID = "gretelai/symptom_to_diagnosis"
HUB_REVISION = "722cfb0e11f8ae37339c7f573b5e10429b94df49"
SPLIT_FILES = {"train": "train.jsonl", "test": "test.jsonl"}
TEXT_KEY, LABEL_KEY = "input_text", "output_text"
MAX_SYMPTOM_CHARS = 4000
VAL_FRACTION = 0.2


@dataclass(frozen=True)
class Example:
    """One symptom description with its diagnosis.

    Attributes:
        id: Stable id: the upstream file and 1-based line, e.g. ``"test-0042"``.
        symptoms: Whitespace-normalised patient text.
        diagnosis: One of the 22 labels.
    """

    id: str
    symptoms: str
    diagnosis: str


@dataclass(frozen=True)
class SymptomDataset:
    """The validated splits (``train``, ``val``, ``test``) and where they came from."""

    source: str
    revision: str | None
    splits: dict[str, tuple[Example, ...]] = field(default_factory=dict)

    def split(self, name: str) -> tuple[Example, ...]:
        if name not in self.splits:
            raise ConfigError(f"unknown split {name!r}; expected one of: {', '.join(self.splits)}")
        return self.splits[name]

    def manifest(self) -> dict[str, Any]:
        """Return source, revision, rows, label counts and fingerprint of every split."""
        return {
            "source": self.source,
            "revision": self.revision,
            "splits": {
                name: {
                    "rows": len(rows),
                    "fingerprint": fingerprint(rows),
                    "labels": dict(sorted(Counter(e.diagnosis for e in rows).items())),
                }
                for name, rows in self.splits.items()
            },
        }


def normalize_text(text: str) -> str:
    """Collapse all whitespace (no-break spaces included) and strip the ends."""
    return " ".join(text.split())


def fingerprint(examples: Iterable[Example]) -> str:
    """Return the sha256 of the canonical rows, independent of row order."""
    digest = hashlib.sha256()
    for row in sorted(json.dumps([e.id, e.symptoms, e.diagnosis]) for e in examples):
        digest.update(row.encode("utf-8") + b"\n")
    return digest.hexdigest()


def load_dataset(
    data_dir: str | Path | None = None,
    *,
    hub_id: str = HUB_ID,
    revision: str = HUB_REVISION,
    seed: int = 0,
) -> SymptomDataset:
    """Load the dataset from a local directory, or else from the Hub, and split it.

    Args:
        data_dir: Directory with ``train.jsonl`` and ``test.jsonl``; ``None`` means the Hub.
        hub_id: Dataset id on the Hub (or a path ``datasets`` understands).
        revision: Pinned Hub revision.
        seed: Seed of the stratified train/val split.
    """
    if data_dir is not None:
        raw = {name: read_jsonl(Path(data_dir) / file) for name, file in SPLIT_FILES.items()}
        source, rev = str(Path(data_dir).resolve()), None
    else:
        raw, source, rev = _read_hub(hub_id, revision), hub_id, revision
    upstream = {name: validate_rows(rows, name) for name, rows in raw.items()}
    train, val = stratified_split(upstream["train"], VAL_FRACTION, seed)
    return SymptomDataset(source=source, revision=rev, splits={"train": train, "val": val, "test": upstream["test"]})


def read_jsonl(path: Path) -> list[tuple[str, int, dict[str, Any]]]:
    """Read a JSON Lines file into ``(file, line, object)`` rows; bad lines raise ConfigError."""
    if not path.parent.is_dir():
        raise ConfigError(f"{path.parent}: dataset directory not found (expected {', '.join(SPLIT_FILES.values())})")
    if not path.is_file():
        raise ConfigError(f"{path}: dataset file not found")
    rows = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ConfigError(f"{path}:{number}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line.rstrip("\r\n"))  # so that an error at the end names its column
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{number}: not valid JSON: {json_problem(exc)}") from None
            if not isinstance(obj, dict):
                raise ConfigError(f"{path}:{number}: expected a JSON object, found {type(obj).__name__}")
            rows.append((str(path), number, obj))
    if not rows:
        raise ConfigError(f"{path}: no rows")
    return rows


def json_problem(exc: json.JSONDecodeError) -> str:
    """``invalid control character at column 66``: the decoder's message, read naturally.

    Some of the decoder's messages end in "at" themselves ("Invalid control character at").
    """
    message = exc.msg.removesuffix(" at").strip()
    return f"{message[:1].lower()}{message[1:]} at column {exc.colno}"


def _read_hub(hub_id: str, revision: str) -> dict[str, list[tuple[str, int, dict[str, Any]]]]:
    import datasets

    try:
        loaded = datasets.load_dataset(hub_id, revision=revision)
    except Exception as exc:  # datasets raises many types; the user needs one line
        raise ConfigError(
            f"could not load dataset {hub_id!r} at revision {revision[:12]} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); offline, pass --evals-data-dir DIR "
            "or set EVALS_DATA_DIR to a directory with train.jsonl and test.jsonl"
        ) from None
    return {
        name: [(f"{hub_id}@{revision[:12]}/{file}", i + 1, dict(row)) for i, row in enumerate(loaded[name])]
        for name, file in SPLIT_FILES.items()
    }


def validate_rows(rows: Sequence[tuple[str, int, dict[str, Any]]], split: str) -> tuple[Example, ...]:
    """Validate raw rows and return them as examples; the first bad row raises ConfigError naming it.

    A row needs a non-empty symptom text (a string of at most :data:`MAX_SYMPTOM_CHARS` characters
    once whitespace is normalised) and one of the 22 diagnoses. Plain Python: a schema library
    cost more than a second of every session's start for these four checks.
    """
    if not rows:
        raise ConfigError(f"{split} split: no rows")
    examples = []
    for file, line, obj in rows:
        missing = [key for key in (TEXT_KEY, LABEL_KEY) if key not in obj]
        if missing:
            raise ConfigError(f"{file}:{line}: missing key {missing[0]!r} (expected {TEXT_KEY!r} and {LABEL_KEY!r})")
        examples.append(
            Example(id=f"{split}-{line:04d}", symptoms=_symptoms(obj, file, line), diagnosis=_label(obj, file, line))
        )
    return tuple(examples)


def _symptoms(obj: dict[str, Any], file: str, line: int) -> str:
    value = obj[TEXT_KEY]
    if not isinstance(value, str):
        raise ConfigError(f"{file}:{line}: {TEXT_KEY}: expected a string, found {type(value).__name__}")
    text = normalize_text(value)
    if not text:
        raise ConfigError(f"{file}:{line}: {TEXT_KEY}: empty symptom text")
    if len(text) > MAX_SYMPTOM_CHARS:
        raise ConfigError(
            f"{file}:{line}: {TEXT_KEY}: symptom text of {len(value):,} characters "
            f"exceeds the limit of {MAX_SYMPTOM_CHARS:,}"
        )
    return text


def _label(obj: dict[str, Any], file: str, line: int) -> str:
    value = obj[LABEL_KEY]
    if not isinstance(value, str) or value not in DIAGNOSES:
        raise ConfigError(f"{file}:{line}: {LABEL_KEY}: {unknown_label_message(value)}")
    return value


def stratified_split(
    examples: Sequence[Example], fraction: float, seed: int
) -> tuple[tuple[Example, ...], tuple[Example, ...]]:
    """Split into (rest, held-out) with ``fraction`` of every diagnosis held out, seeded."""
    rest: list[Example] = []
    held: list[Example] = []
    for label, group in sorted(_by_label(examples).items()):
        shuffled = sorted(group, key=lambda e: e.id)
        random.Random(f"{seed}:{label}").shuffle(shuffled)
        cut = round(len(shuffled) * fraction)
        held.extend(shuffled[:cut])
        rest.extend(shuffled[cut:])
    return tuple(sorted(rest, key=lambda e: e.id)), tuple(sorted(held, key=lambda e: e.id))


def sample(examples: Sequence[Example], per_diagnosis: int | None, seed: int = 0) -> tuple[Example, ...]:
    """Take ``per_diagnosis`` examples of every diagnosis (seeded), or all when ``None``."""
    if per_diagnosis is None:
        return tuple(examples)
    picked: list[Example] = []
    for label, group in sorted(_by_label(examples).items()):
        shuffled = sorted(group, key=lambda e: e.id)
        random.Random(f"{seed}:{label}").shuffle(shuffled)
        picked.extend(shuffled[:per_diagnosis])
    return tuple(sorted(picked, key=lambda e: e.id))


def _by_label(examples: Iterable[Example]) -> dict[str, list[Example]]:
    groups: dict[str, list[Example]] = defaultdict(list)
    for example in examples:
        groups[example.diagnosis].append(example)
    return groups


def parse_per_diagnosis(value: str) -> int | None:
    """Parse ``--evals-per-diagnosis``: a positive integer or ``all``."""
    if value.strip().lower() == "all":
        return None
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise ValueError(f"expected a positive integer or 'all', found {value!r}")
    return number
