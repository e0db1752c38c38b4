"""Strict YAML loading for configuration files (thresholds.yaml, optimizers.yaml).

``yaml.safe_load`` lets the last of two equal keys win, so a stricter limit written earlier
in the file silently vanishes; it also raises tracebacks (not ``YAMLError``) on absurd input
such as an integer of thousands of digits. :func:`load_yaml_strict` refuses both with one
:class:`~evals.errors.ConfigError` line naming the file and, where known, the line and key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import yaml

from evals.errors import ConfigError

MAX_YAML_BYTES = 1_000_000
"""Configuration files larger than this are refused unread: no real one is near it."""

MAX_NUMBER_CHARS = 100
"""Numbers written with more characters are kept as :class:`OversizedNumber`, never converted."""

SHOWN_CHARS = 40
"""How much of a long key or value an error message quotes."""

_MERGE_TAG = "tag:yaml.org,2002:merge"


def shorten(text: str, limit: int = SHOWN_CHARS) -> str:
    """Return ``text`` cut to ``limit`` characters, with ``…`` when something was cut."""
    return text if len(text) <= limit else text[:limit] + "…"


@dataclass(frozen=True)
class OversizedNumber:
    """A YAML number too long to be meant (``min_accuracy: 1111…`` with thousands of digits).

    It is not an ``int`` or ``float``, so every validator rejects it, and its ``repr`` is its
    first characters, so the rejection stays one short line.

    Attributes:
        text: The number as written in the file.
    """

    text: str

    def __repr__(self) -> str:
        return f"{shorten(self.text)} (a number of {len(self.text)} characters)"


class DuplicateKeyError(yaml.YAMLError):
    """The same key twice in one mapping.

    Attributes:
        path: Dotted key path of the second occurrence, e.g. ``programs.zero_shot.min_accuracy``.
        line: 1-based line of the second occurrence.
        first_line: 1-based line of the first occurrence.
    """

    def __init__(self, path: str, line: int, first_line: int) -> None:
        super().__init__(f"{path}: duplicate key (first at line {first_line})")
        self.path, self.line, self.first_line = path, line, first_line


class StrictLoader(yaml.SafeLoader):
    """A ``SafeLoader`` that refuses duplicate keys and keeps absurdly long numbers as text."""

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        self.check_duplicates(node)
        return self.construct_document(node)

    def check_duplicates(self, root: yaml.Node) -> None:
        """Raise :class:`DuplicateKeyError` for the first mapping with two equal keys.

        Keys are compared as constructed values (``1`` and ``01`` are the same int), which
        is what decides whether ``safe_load`` would have dropped one. Each node is visited
        once, so aliases neither loop nor multiply the work.
        """
        seen: set[int] = set()
        pending: list[tuple[yaml.Node, str]] = [(root, "")]
        while pending:
            node, path = pending.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            if isinstance(node, yaml.SequenceNode):
                pending.extend((item, f"{path}[{index}]") for index, item in enumerate(node.value))
            elif isinstance(node, yaml.MappingNode):
                pending.extend(self._mapping_children(node, path))

    def _mapping_children(self, node: yaml.MappingNode, path: str) -> list[tuple[yaml.Node, str]]:
        first_lines: dict[object, int] = {}
        children = []
        for key_node, value_node in node.value:
            child = path
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
                name = shorten(str(key_node.value))
                child = f"{path}.{name}" if path else name
                key = self.construct_object(key_node)
                line = key_node.start_mark.line + 1
                if key in first_lines:
                    raise DuplicateKeyError(child, line, first_lines[key])
                first_lines[key] = line
            children.append((value_node, child))
        return children

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int | OversizedNumber:
        if len(node.value) > MAX_NUMBER_CHARS:
            return OversizedNumber(node.value)
        return super().construct_yaml_int(node)

    def construct_yaml_float(self, node: yaml.ScalarNode) -> float | OversizedNumber:
        if len(node.value) > MAX_NUMBER_CHARS:
            return OversizedNumber(node.value)
        return super().construct_yaml_float(node)


StrictLoader.add_constructor("tag:yaml.org,2002:int", StrictLoader.construct_yaml_int)
StrictLoader.add_constructor("tag:yaml.org,2002:float", StrictLoader.construct_yaml_float)


def read_bounded(path: Path, source: str) -> bytes:
    """Return the bytes of ``path``, refusing a file over :data:`MAX_YAML_BYTES`.

    Raises:
        FileNotFoundError: The file does not exist (callers word their own hint).
        ConfigError: It cannot be read or is too large.
    """
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_YAML_BYTES + 1)
    except FileNotFoundError:
        raise
    except OSError as error:
        raise ConfigError(f"{source}: cannot read the file: {error.strerror or error}") from None
    if len(raw) > MAX_YAML_BYTES:
        try:
            size = f"{path.stat().st_size / 1e6:.1f} MB"
        except OSError:
            size = "larger than that"
        raise ConfigError(f"{source}: file is {size}; a configuration file may be at most {MAX_YAML_BYTES / 1e6:g} MB")
    return raw


def parse_yaml_strict(text: str | bytes, source: str) -> Any:
    """Parse one YAML document with :class:`StrictLoader`.

    Args:
        text: The document; bytes are decoded as YAML says (UTF-8 or a BOM's encoding).
        source: The file name to put in messages.

    Returns:
        What ``yaml.safe_load`` would return, with over-long numbers as :class:`OversizedNumber`.

    Raises:
        ConfigError: Not YAML, a duplicate key (``source:12: a.b: duplicate key (first at
            line 9)``), nesting too deep or a value YAML cannot build, in one line.
    """
    try:
        loader = StrictLoader(text)
    except yaml.YAMLError as error:
        raise yaml_error(error, source) from None
    try:
        return loader.get_single_data()
    except DuplicateKeyError as error:
        raise ConfigError(f"{source}:{error.line}: {error}") from None
    except yaml.YAMLError as error:
        raise yaml_error(error, source) from None
    except RecursionError:
        raise ConfigError(f"{source}: not valid YAML: nested too deeply") from None
    except (ValueError, OverflowError) as error:
        # e.g. a timestamp like 2024-13-45, or `!!int abc`: PyYAML lets these escape as-is.
        problem = shorten(" ".join(str(error).split()), 120)
        raise ConfigError(f"{source}: not valid YAML: {problem}") from None
    finally:
        loader.dispose()


def load_yaml_strict(path: Path) -> Any:
    """Read and parse a YAML configuration file strictly (see :func:`parse_yaml_strict`).

    Raises:
        ConfigError: The file is missing, unreadable, over :data:`MAX_YAML_BYTES`, or not
            strictly valid YAML.
    """
    source = str(path)
    try:
        raw = read_bounded(path, source)
    except FileNotFoundError:
        raise ConfigError(f"{source}: file not found") from None
    return parse_yaml_strict(raw, source)


def yaml_error(error: yaml.YAMLError, source: str) -> ConfigError:
    """Turn a PyYAML error into one line with the 1-based line and column."""
    problem = shorten(" ".join(str(getattr(error, "problem", None) or error).split()), 200)
    mark = getattr(error, "problem_mark", None)
    if mark is None:
        return ConfigError(f"{source}: not valid YAML: {problem}")
    return ConfigError(f"{source}: line {mark.line + 1}, column {mark.column + 1}: not valid YAML: {problem}")


@dataclass(frozen=True)
class Location:
    """A key path inside a file, used to build error messages."""

    source: str
    path: str = ""

    def child(self, key: object) -> Location:
        name = shorten(str(key))
        return Location(self.source, f"{self.path}.{name}" if self.path else name)

    def error(self, problem: str) -> ConfigError:
        where = f"{self.source}: {self.path}" if self.path else self.source
        return ConfigError(f"{where}: {problem}")


def is_number(value: object) -> TypeGuard[int | float]:
    # bool is an int subclass, but `min_accuracy: yes` is a mistake, not 1.0.
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def found(value: object) -> str:
    """Describe a found value in YAML terms, short enough for one line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, OversizedNumber):
        return repr(value)
    if is_number(value):
        try:
            return shorten(repr(value))
        except ValueError:  # an int beyond Python's 4300-digit str() limit
            return f"an integer of about {int(int(value).bit_length() * 0.30103)} digits"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"{shown!r} (a string)"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


Rule = tuple[Callable[[Any], bool], str]
"""A config value's test and the words for what it allows."""


def parse_section(raw: object, source: str, name: str, rules: Mapping[str, Rule], defaults: object) -> dict[str, Any]:
    """Validate a flat config section against ``rules`` (the regression and drift sections).

    Returns:
        The keys set in ``raw``, each converted to the type of its attribute on
        ``defaults`` (``max_drop: 0`` becomes ``0.0``).

    Raises:
        ConfigError: e.g. ``thresholds.yaml: regression.alpha: expected a number strictly
            between 0 and 1, found 1.5``; also for a non-mapping or an unknown key.
    """
    where = Location(source, name)
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise where.error(f"expected a mapping with keys {', '.join(rules)}, found {found(raw)}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in rules:
            raise where.child(key).error(f"unknown key {key!r}; allowed: {', '.join(rules)}")
        accepts, allowed = rules[key]
        if not accepts(value):
            raise where.child(key).error(f"expected {allowed}, found {found(value)}")
        default = getattr(defaults, key)
        # Optional keys (default None) keep their value; numbers become floats.
        values[key] = type(default)(value) if default is not None else (float(value) if is_number(value) else value)
    return values
