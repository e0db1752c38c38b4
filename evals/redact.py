"""Redact personal data (e-mail addresses, phone numbers, custom patterns) from text.

Symptom texts are full of harmless numbers ("for 3 days", "38.5 degrees", "150/95"), so the
default phone pattern only matches runs of at least 7 digits joined by phone-like separators.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from evals.errors import ConfigError

EMAIL_PATTERN = r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"

PHONE_PATTERN = (
    r"(?<![\w+])(?<!\d[\s.-])"  # not glued to a word or to a longer run of numbers
    r"(?=[+(]?\d(?:\)?[\s.-]?\(?\d){6})"  # at least 7 digits, joined as the groups below
    r"(?!\d{1,2}([./-])\d{1,2}\1(?:\d{4}|\d{2})(?![\s.-]?\d))"  # not a date: 12.03.2024
    r"(?:\+\d{1,3}[\s.-]?)?"  # international prefix: +1, +44, +358
    r"(?:\(\d{1,4}\)[\s.-]?)?"  # area code in parentheses: (555), (0)
    r"\d{1,4}"
    r"(?:[\s.-]?\(?\d{1,4}\)?){1,6}"  # more groups: 123-4567, 20 7946 0958, 12.34.56.78
    r"(?!\w)(?![\s.-]?\d)"  # and nothing phone-like right after it
)

DEFAULT_PATTERNS: tuple[tuple[str, str], ...] = (
    ("email", EMAIL_PATTERN),
    ("phone", PHONE_PATTERN),
)
"""``(name, regex)`` pairs used by :meth:`Redactor.default`; e-mail first so that the digits
of an address are not taken for a phone number."""


@dataclass(frozen=True, init=False)
class Redactor:
    """Replace every match of a set of named regexes by ``[REDACTED:<name>]``.

    Patterns are applied in order, so an earlier one (e-mail) can hide text from a later one
    (phone).

    Attributes:
        patterns: ``(name, regex)`` pairs.

    Raises:
        ConfigError: A regex does not compile; the message names the pattern.
    """

    patterns: tuple[tuple[str, str], ...]
    _compiled: tuple[tuple[str, re.Pattern[str]], ...] = field(init=False, repr=False, compare=False)

    def __init__(self, patterns: Sequence[tuple[str, str]]) -> None:
        pairs = tuple((str(name), str(regex)) for name, regex in patterns)
        object.__setattr__(self, "patterns", pairs)
        object.__setattr__(self, "_compiled", tuple((n, _compile(n, r)) for n, r in pairs))

    @classmethod
    def default(cls) -> Redactor:
        """Return a redactor for e-mail addresses and phone numbers."""
        return cls(DEFAULT_PATTERNS)

    @classmethod
    def from_config(cls, patterns: Mapping[str, str] | None, use_defaults: bool = True) -> Redactor:
        """Build a redactor from configuration.

        Args:
            patterns: Extra ``name -> regex`` pairs (e.g. from ``thresholds.yaml``), or ``None``.
            use_defaults: Also apply the e-mail and phone patterns, before the extra ones.

        Raises:
            ConfigError: A regex does not compile.
        """
        pairs: list[tuple[str, str]] = list(DEFAULT_PATTERNS) if use_defaults else []
        pairs.extend((patterns or {}).items())
        return cls(pairs)

    def text(self, s: str) -> str:
        """Return ``s`` with every match replaced by ``[REDACTED:<name>]``."""
        for name, pattern in self._compiled:
            # Backslashes escaped: the replacement is a template, the name must stay literal.
            s = pattern.sub(f"[REDACTED:{name}]".replace("\\", "\\\\"), s)
        return s

    def mapping(self, values: Mapping[str, str]) -> dict[str, str]:
        """Return a copy of ``values`` with every value redacted (keys are kept)."""
        return {key: self.text(value) for key, value in values.items()}


def _compile(name: str, regex: str) -> re.Pattern[str]:
    try:
        return re.compile(regex)
    except re.error as exc:
        raise ConfigError(f"redaction pattern {name!r}: invalid regex {regex!r}: {exc}") from None
