"""Stability under meaning-preserving perturbations: records, aggregation, regression cases.

One :class:`StabilityRecord` is made per (program, example, perturbed text): the
diagnosis for the original text and for its perturbed copy. :func:`stability`
aggregates them per program (overall, per gold diagnosis, per perturbation), and
:func:`flat_stability_metrics` names the values for MLflow. Counterexamples worth
replaying on every run are kept in a JSON file in the repository through
:class:`RegressionCases`.
"""

from __future__ import annotations

import json
import os
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evals.errors import ConfigError
from evals.labels import DIAGNOSES, DIAGNOSIS_SET, slug

DEFAULT_CASES_PATH = Path("suites") / "robustness_regressions.json"
CASE_KEYS: tuple[str, ...] = (
    "program",
    "example_id",
    "text",
    "perturbations",
    "original_prediction",
    "perturbed_prediction",
    "found_at",
)


@dataclass(frozen=True)
class StabilityRecord:
    """The diagnoses one program gave for an original text and a perturbed copy of it.

    Attributes:
        program: Name of the evaluated program.
        example_id: Id of the original example, e.g. ``"test-0042"``.
        gold: The true diagnosis of the example.
        perturbations: Names of the perturbations applied, in order.
        original: Diagnosis for the original text, or ``None`` when no valid label came back.
        perturbed: Diagnosis for the perturbed text, or ``None`` likewise.
        error: One readable line when a call failed, else ``None``.
    """

    program: str
    example_id: str
    gold: str
    perturbations: tuple[str, ...]
    original: str | None
    perturbed: str | None
    error: str | None = None

    @property
    def valid(self) -> bool:
        """Both answers are one of the 22 labels."""
        return self.original in DIAGNOSIS_SET and self.perturbed in DIAGNOSIS_SET

    @property
    def stable(self) -> bool:
        """Both answers are valid labels and they are the same one."""
        return self.valid and self.original == self.perturbed

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["perturbations"] = list(self.perturbations)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StabilityRecord:
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        values["perturbations"] = tuple(values.get("perturbations", ()))
        return cls(**values)


@dataclass(frozen=True)
class StabilityMetrics:
    """Stability of one program; every rate is on a 0-1 scale.

    An invalid answer (on either side) counts as unstable. A record with several
    perturbations counts towards each of them in ``per_perturbation``.

    Attributes:
        program: Name of the program.
        n: Number of records.
        stability: Share of records that are :attr:`StabilityRecord.stable`.
        valid_rate: Share of records with two valid labels.
        per_diagnosis: Stability per gold diagnosis (only those with records), label order.
        per_perturbation: Stability per perturbation name, sorted by name.
    """

    program: str
    n: int
    stability: float
    valid_rate: float
    per_diagnosis: dict[str, float]
    per_perturbation: dict[str, float]


def _rate(records: Sequence[StabilityRecord]) -> float:
    return sum(r.stable for r in records) / len(records) if records else 0.0


def _label_order(label: str) -> tuple[int, str]:
    return (DIAGNOSES.index(label) if label in DIAGNOSIS_SET else len(DIAGNOSES), label)


def _program_stability(program: str, records: Sequence[StabilityRecord]) -> StabilityMetrics:
    by_gold: dict[str, list[StabilityRecord]] = defaultdict(list)
    by_perturbation: dict[str, list[StabilityRecord]] = defaultdict(list)
    for record in records:
        by_gold[record.gold].append(record)
        for name in dict.fromkeys(record.perturbations):
            by_perturbation[name].append(record)
    return StabilityMetrics(
        program=program,
        n=len(records),
        stability=_rate(records),
        valid_rate=sum(r.valid for r in records) / len(records) if records else 0.0,
        per_diagnosis={gold: _rate(by_gold[gold]) for gold in sorted(by_gold, key=_label_order)},
        per_perturbation={name: _rate(by_perturbation[name]) for name in sorted(by_perturbation)},
    )


def stability(records: Iterable[StabilityRecord]) -> dict[str, StabilityMetrics]:
    """Aggregate records into one :class:`StabilityMetrics` per program, sorted by program.

    The result does not depend on the order the records arrive in.
    """
    by_program: dict[str, list[StabilityRecord]] = defaultdict(list)
    for record in records:
        by_program[record.program].append(record)
    return {program: _program_stability(program, by_program[program]) for program in sorted(by_program)}


def flat_stability_metrics(m: StabilityMetrics) -> dict[str, float]:
    """Return MLflow-ready ``name -> value`` pairs of one program.

    Names: ``stability``, ``robust_valid_rate``, ``robust_n``, ``stability.<diagnosis slug>``
    and ``stability.by.<perturbation>``.
    """
    flat = {"stability": m.stability, "robust_valid_rate": m.valid_rate, "robust_n": float(m.n)}
    flat.update({f"stability.{slug(gold)}": value for gold, value in m.per_diagnosis.items()})
    flat.update({f"stability.by.{name}": value for name, value in m.per_perturbation.items()})
    return flat


# --- regression cases ------------------------------------------------------------------------


def case_from_record(record: StabilityRecord, text: str, found_at: str | None = None) -> dict[str, Any]:
    """Return the regression case of an unstable record; ``text`` is the perturbed text.

    Args:
        record: The record (usually one that is not :attr:`~StabilityRecord.stable`).
        text: The perturbed text that changed the answer.
        found_at: ISO timestamp; now (UTC, seconds) when ``None``.
    """
    return {
        "program": record.program,
        "example_id": record.example_id,
        "text": text,
        "perturbations": list(record.perturbations),
        "original_prediction": record.original,
        "perturbed_prediction": record.perturbed,
        "found_at": found_at or datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _case_problem(case: Any) -> str | None:
    """Why ``case`` is not a well-formed regression case, or ``None`` when it is."""
    if not isinstance(case, dict):
        return f"expected an object, found {type(case).__name__}"
    missing = [key for key in CASE_KEYS if key not in case]
    if missing:
        return f"missing key {missing[0]!r} (expected {', '.join(CASE_KEYS)})"
    for key in ("program", "example_id", "text", "found_at"):
        if not isinstance(case[key], str) or not case[key]:
            return f"{key}: expected a non-empty string, found {case[key]!r}"
    perturbations = case["perturbations"]
    if not isinstance(perturbations, list) or not all(isinstance(p, str) for p in perturbations):
        return f"perturbations: expected a list of strings, found {perturbations!r}"
    for key in ("original_prediction", "perturbed_prediction"):
        if case[key] is not None and not isinstance(case[key], str):
            return f"{key}: expected a string or null, found {case[key]!r}"
    return None


def _canonical(case: Mapping[str, Any]) -> dict[str, Any]:
    return {key: list(case[key]) if key == "perturbations" else case[key] for key in CASE_KEYS}


def _sort_key(case: Mapping[str, Any]) -> tuple[str, str, str]:
    return (case["program"], case["example_id"], case["text"])


def merge_cases(existing: Iterable[Mapping[str, Any]], new: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Union of two case lists, one case per ``(program, text)``, sorted.

    The first occurrence wins, so a known case keeps the date it was first found.
    """
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for case in (*existing, *new):
        merged.setdefault((case["program"], case["text"]), _canonical(case))
    return sorted(merged.values(), key=_sort_key)


def load_cases(path: str | Path) -> list[dict[str, Any]]:
    """Read regression cases; a missing file means none.

    Raises:
        ConfigError: The file is not valid JSON, not a list, or holds a malformed case;
            the message names the file and the reason.
    """
    path = Path(path)
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: corrupt regression cases file (not valid UTF-8: {exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path}: corrupt regression cases file (malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    if not isinstance(data, list):
        raise ConfigError(f"{path}: corrupt regression cases file (expected a JSON list, found {type(data).__name__})")
    for index, case in enumerate(data):
        problem = _case_problem(case)
        if problem:
            raise ConfigError(f"{path}: corrupt regression cases file (case {index}: {problem})")
    return [_canonical(case) for case in data]


def save_cases(path: str | Path, cases: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Write ``cases`` deduplicated and sorted, atomically (temp file, then ``os.replace``).

    Returns:
        The cases as written.

    Raises:
        ValueError: A malformed case (nothing is written).
    """
    path = Path(path)
    cases = list(cases)
    for index, case in enumerate(cases):
        problem = _case_problem(dict(case) if isinstance(case, Mapping) else case)
        if problem:
            raise ValueError(f"regression case {index}: {problem}")
    written = merge_cases([], cases)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A plain open() (unlike mkstemp) keeps the umask's permissions for a committed file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as stream:
            json.dump(written, stream, indent=2, ensure_ascii=False)
            stream.write("\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return written


@dataclass(frozen=True)
class RegressionCases:
    """The counterexamples file of the repository (``suites/robustness_regressions.json``)."""

    path: Path = DEFAULT_CASES_PATH

    def load(self) -> list[dict[str, Any]]:
        """All cases in the file (none when it is missing)."""
        return load_cases(self.path)

    def for_program(self, program: str) -> list[dict[str, Any]]:
        """The cases of one program, in file order."""
        return [case for case in self.load() if case["program"] == program]

    def add(self, cases: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Merge ``cases`` into the file (known ``(program, text)`` pairs are kept as they are).

        Returns:
            Every case now in the file.
        """
        return save_cases(self.path, [*self.load(), *cases])
