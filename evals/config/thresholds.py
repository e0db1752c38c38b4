"""Load and validate ``thresholds.yaml`` (pure functions over plain data).

The file says how good each program must be for the gate to pass::

    version: 1
    programs:
      default:            # applies to every program, overridden key by key
        min_accuracy: 0.0
        recall: {default: 0.0, min_support: 5, overrides: {migraine: 0.0}}
      knn_few_shot:
        min_accuracy: 0.3

Every problem raises :class:`~evals.errors.ConfigError` with one line naming the file, the
key path, the value found and what is allowed, so pytest prints it as ``ERROR: ...``. The file
is read strictly (:mod:`evals.config.validation`): a key twice in one mapping, an empty section
(``programs:`` with nothing under it) and absurd values are errors too, so no limit can vanish.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from evals.config.validation import (
    Location,
    found,
    is_int,
    is_number,
    load_yaml_strict,
    parse_yaml_strict,
    read_bounded,
    shorten,
)
from evals.errors import ConfigError
from evals.labels import DIAGNOSIS_SET, unknown_label_message

__all__ = [
    "ProgramThresholds",
    "RecallThresholds",
    "Thresholds",
    "load_thresholds",
    "load_yaml_strict",
    "parse_thresholds",
    "parse_yaml_strict",
]

SUPPORTED_VERSIONS: tuple[int, ...] = (1,)
DEFAULT_SECTION = "default"
"""Name of the ``programs`` section that every program inherits from."""

TOP_LEVEL_KEYS = ("version", "programs", "regression", "drift", "robustness")
PROGRAM_KEYS = (
    "min_accuracy",
    "min_macro_f1",
    "max_invalid_rate",
    "max_p95_latency_ms",
    "max_cost_usd",
    "min_gain_over_reference",
    "recall",
)
RECALL_KEYS = ("default", "min_support", "overrides")

MINIMAL_FILE = "{version: 1, programs: {default: {min_accuracy: 0.0}}}"
"""A one-line valid thresholds file, quoted in the 'file not found' message."""

_T = TypeVar("_T")


@dataclass(frozen=True)
class RecallThresholds:
    """Per-diagnosis recall floors of one program.

    Attributes:
        default: Floor for every diagnosis without an override.
        min_support: Floors on fewer examples than this are reported but not enforced,
            because recall over two or three examples is mostly noise.
        overrides: Diagnosis -> floor, for the diagnoses that need their own.
    """

    default: float = 0.0
    min_support: int = 5
    overrides: Mapping[str, float] = field(default_factory=dict)

    def floor(self, diagnosis: str) -> float:
        """Return the minimum recall required for ``diagnosis``."""
        return self.overrides.get(diagnosis, self.default)


@dataclass(frozen=True)
class ProgramThresholds:
    """The limits one program must meet; values on a 0-1 scale except latency.

    The defaults are the values used when neither the program's section nor the ``default``
    section sets a key: they never fail a run, and ``math.inf`` latency means no latency check.
    """

    min_accuracy: float = 0.0
    min_macro_f1: float = 0.0
    max_invalid_rate: float = 1.0
    max_p95_latency_ms: float = math.inf
    max_cost_usd: float = math.inf
    """Most the program's examples may cost together (provider-reported USD); inf: no cost check."""
    recall: RecallThresholds = field(default_factory=RecallThresholds)
    min_gain_over_reference: float | None = None
    """Least accuracy gain over the reference program (no LM) on the same examples; None: not checked."""


@dataclass(frozen=True)
class Thresholds:
    """A validated thresholds file.

    Attributes:
        source: Where it was read from, as shown in messages.
        sha256: Hex digest of the file bytes, logged so a run names the limits it used.
        programs: Program name -> limits, already merged with ``default``; only programs
            that have a section in the file.
        default: The ``default`` section merged over the built-in defaults.
        regression: The raw ``regression`` section (validated by its own module).
        drift: The raw ``drift`` section.
        robustness: The raw ``robustness`` section.
    """

    source: str
    sha256: str
    programs: Mapping[str, ProgramThresholds]
    default: ProgramThresholds
    regression: Mapping[str, object] = field(default_factory=dict)
    drift: Mapping[str, object] = field(default_factory=dict)
    robustness: Mapping[str, object] = field(default_factory=dict)

    def for_program(self, name: str) -> ProgramThresholds:
        """Return the limits of ``name``, or the ``default`` ones when it has no section."""
        return self.programs.get(name, self.default)


@dataclass(frozen=True)
class _Section:
    """What one ``programs.<name>`` section sets; ``None`` means 'inherit'."""

    min_accuracy: float | None = None
    min_macro_f1: float | None = None
    max_invalid_rate: float | None = None
    max_p95_latency_ms: float | None = None
    max_cost_usd: float | None = None
    min_gain_over_reference: float | None = None
    recall_default: float | None = None
    min_support: int | None = None
    overrides: Mapping[str, float] = field(default_factory=dict)


def load_thresholds(path: Path, programs: Collection[str]) -> Thresholds:
    """Read, parse and validate a thresholds file.

    Args:
        path: The YAML file, usually ``thresholds.yaml`` at the repository root.
        programs: Names of the known programs; other sections (except ``default``) are errors.

    Returns:
        The validated thresholds, with each program section merged over ``default``.

    Raises:
        ConfigError: The file is missing, unreadable, over 1 MB, not YAML, has a duplicate
            key or is not a valid thresholds file.
    """
    source = str(path)
    try:
        raw = read_bounded(path, source)
    except FileNotFoundError:
        raise ConfigError(
            f"{source}: file not found; create it by copying the example thresholds.yaml "
            f"from the README, or start from this minimal content: {MINIMAL_FILE}"
        ) from None
    data = parse_yaml_strict(raw, source)
    return parse_thresholds(data, source, programs, sha256=hashlib.sha256(raw).hexdigest())


def parse_thresholds(data: object, source: str, programs: Collection[str], *, sha256: str = "") -> Thresholds:
    """Validate an already loaded thresholds mapping.

    Args:
        data: What :func:`~evals.config.validation.parse_yaml_strict` returned.
        source: The file name to put in messages.
        programs: Names of the known programs.
        sha256: Digest of the file bytes, when there was a file.

    Raises:
        ConfigError: Any unknown key, wrong type, value out of range, unknown program or
            unknown diagnosis, naming the key path, the value found and what is allowed.
    """
    top = Location(source)
    if data is None:
        raise top.error("file is empty; it needs at least 'version: 1'")
    if not isinstance(data, Mapping):
        raise top.error(f"expected a mapping at the top level, found {found(data)}")
    _check_keys(data, TOP_LEVEL_KEYS, top)
    _check_version(data, top)
    sections = _parse_programs(_section(data, "programs", top), top.child("programs"), programs)
    default = _merge(ProgramThresholds(), sections.pop(DEFAULT_SECTION, _Section()))
    return Thresholds(
        source=source,
        sha256=sha256,
        programs={name: _merge(default, section) for name, section in sections.items()},
        default=default,
        regression=_raw_section(data, "regression", top),
        drift=_raw_section(data, "drift", top),
        robustness=_raw_section(data, "robustness", top),
    )


def _check_version(data: Mapping[object, object], top: Location) -> None:
    where = top.child("version")
    if "version" not in data:
        raise where.error("missing required key; add 'version: 1' at the top of the file")
    version = data["version"]
    if not (is_int(version) and version in SUPPORTED_VERSIONS):
        supported = ", ".join(str(v) for v in SUPPORTED_VERSIONS)
        raise where.error(f"unsupported version {found(version)}; supported: {supported}")


def _parse_programs(value: Mapping[object, object], where: Location, programs: Collection[str]) -> dict[str, _Section]:
    known = [DEFAULT_SECTION, *sorted(set(programs) - {DEFAULT_SECTION})]
    sections: dict[str, _Section] = {}
    for name, section in value.items():
        if name not in known:
            shown = shorten(repr(name))
            raise where.child(name).error(f"unknown program {shown}; known: {', '.join(known)}")
        sections[str(name)] = _parse_section(section, where.child(name))
    return sections


def _parse_section(value: object, where: Location) -> _Section:
    section = _mapping(value, where, f"a mapping with keys {', '.join(PROGRAM_KEYS)}")
    _check_keys(section, PROGRAM_KEYS, where)
    at_recall = where.child("recall")
    recall = _section(section, "recall", where)
    _check_keys(recall, RECALL_KEYS, at_recall)
    return _Section(
        min_accuracy=_optional(section, "min_accuracy", where, _fraction),
        min_macro_f1=_optional(section, "min_macro_f1", where, _fraction),
        max_invalid_rate=_optional(section, "max_invalid_rate", where, _fraction),
        max_p95_latency_ms=_optional(section, "max_p95_latency_ms", where, _milliseconds),
        max_cost_usd=_optional(section, "max_cost_usd", where, _dollars),
        min_gain_over_reference=_optional(section, "min_gain_over_reference", where, _gain),
        recall_default=_optional(recall, "default", at_recall, _fraction),
        min_support=_optional(recall, "min_support", at_recall, _count),
        overrides=_parse_overrides(_section(recall, "overrides", at_recall), at_recall.child("overrides")),
    )


def _parse_overrides(floors: Mapping[object, object], where: Location) -> dict[str, float]:
    overrides: dict[str, float] = {}
    for diagnosis, floor in floors.items():
        if diagnosis not in DIAGNOSIS_SET:
            raise where.child(diagnosis).error(unknown_label_message(diagnosis))
        overrides[str(diagnosis)] = _fraction(floor, where.child(diagnosis))
    return overrides


def _merge(base: ProgramThresholds, section: _Section) -> ProgramThresholds:
    """Apply a section over ``base`` key by key; recall overrides merge dict-wise."""
    recall = RecallThresholds(
        default=_pick(section.recall_default, base.recall.default),
        min_support=_pick(section.min_support, base.recall.min_support),
        overrides={**base.recall.overrides, **section.overrides},
    )
    return ProgramThresholds(
        min_accuracy=_pick(section.min_accuracy, base.min_accuracy),
        min_macro_f1=_pick(section.min_macro_f1, base.min_macro_f1),
        max_invalid_rate=_pick(section.max_invalid_rate, base.max_invalid_rate),
        max_p95_latency_ms=_pick(section.max_p95_latency_ms, base.max_p95_latency_ms),
        max_cost_usd=_pick(section.max_cost_usd, base.max_cost_usd),
        recall=recall,
        min_gain_over_reference=_pick(section.min_gain_over_reference, base.min_gain_over_reference),
    )


def _raw_section(data: Mapping[object, object], key: str, top: Location) -> dict[str, object]:
    """Return a section kept for a later validator, checking only that it is a mapping."""
    section = _section(data, key, top)
    return {str(name): value for name, value in section.items()}


_SECTION_CONTENT = {
    "programs": "a mapping of program name to limits",
    "recall": f"a mapping with keys {', '.join(RECALL_KEYS)}",
    "overrides": "a mapping of diagnosis to recall floor",
}


def _section(mapping: Mapping[object, object], key: str, parent: Location) -> Mapping[object, object]:
    """Return ``mapping[key]`` checked to be a mapping, or ``{}`` when the key is absent.

    A key that is present with nothing under it (``programs:`` alone, or only comments) is an
    error, not "no limits": it is most likely a section whose content was lost.
    """
    if key not in mapping:
        return {}
    return _mapping(mapping[key], parent.child(key), _SECTION_CONTENT.get(key, "a mapping"))


def _mapping(value: object, where: Location, expected: str) -> Mapping[object, object]:
    """Return ``value`` as a mapping; ``None`` (an empty section) is an error."""
    if value is None:
        raise where.error(f"expected {expected}, found nothing (an empty section: fill it in or delete the key)")
    if not isinstance(value, Mapping):
        raise where.error(f"expected {expected}, found {found(value)}")
    return value


def _check_keys(mapping: Mapping[object, object], allowed: tuple[str, ...], where: Location) -> None:
    for key in mapping:
        if key not in allowed:
            shown = shorten(repr(key))
            raise where.child(key).error(f"unknown key {shown}; allowed: {', '.join(allowed)}")


def _optional(
    mapping: Mapping[object, object],
    key: str,
    where: Location,
    convert: Callable[[object, Location], _T],
) -> _T | None:
    return convert(mapping[key], where.child(key)) if key in mapping else None


def _fraction(value: object, where: Location) -> float:
    if is_number(value) and 0.0 <= value <= 1.0:
        return float(value)
    raise where.error(f"expected a number between 0 and 1, found {found(value)}")


def _gain(value: object, where: Location) -> float:
    if is_number(value) and -1.0 <= value <= 1.0:
        return float(value)
    raise where.error(f"expected an accuracy gain between -1 and 1, found {found(value)}")


def _milliseconds(value: object, where: Location) -> float:
    if is_number(value) and math.isfinite(value) and value > 0:
        return float(value)
    raise where.error(f"expected a positive number of milliseconds, found {found(value)}")


def _dollars(value: object, where: Location) -> float:
    if is_number(value) and math.isfinite(value) and value >= 0:
        return float(value)
    raise where.error(f"expected a cost in USD >= 0, found {found(value)}")


def _count(value: object, where: Location) -> int:
    if is_int(value) and value >= 0:
        return value
    raise where.error(f"expected a whole number >= 0, found {found(value)}")


def _pick(value: _T | None, fallback: _T) -> _T:
    return fallback if value is None else value
