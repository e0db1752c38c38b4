"""Shards: which eval tests ``--evals-shard K/N`` keeps (a pure rule, stable under ``-k``).

A test's shard depends on the test alone, never on which other tests are selected, so every
machine of a matrix (and every xdist worker) computes the same split, and ``-k`` only removes
tests from their shards. The rule, for an eval test of a program and a diagnosis, is::

    shard = (crc32(program) + index of the diagnosis among the 22) mod N + 1

so each program deals its 22 diagnoses round-robin over the N shards, starting at a shard
chosen by its name: a shard holds 22/N tests of every program, rounded down or up. The default
6 programs (4 registered, 2 optimizer pairs) x 22 diagnoses over 4 shards: 32, 33, 34 and 33
tests; over 2: 66 and 66. Any other eval test (e.g. a robustness test of one program) goes to
``crc32(its node id) mod N + 1``; tests that are no eval tests run in every shard.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

from evals.labels import DIAGNOSES

SHARD_PATTERN = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (1-based)."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, program: str | None, diagnosis: str | None, nodeid: str) -> bool:
        """True when the eval test of ``program`` and ``diagnosis`` (else of ``nodeid``) is in this shard."""
        return shard_index(program, diagnosis, nodeid, self.count) == self.index


def parse_shard(text: str) -> Shard:
    """Parse ``K/N`` with ``1 <= K <= N``.

    Raises:
        ValueError: The text is not of that form (the settings layer names the option).
    """
    match = SHARD_PATTERN.fullmatch(text)
    if match is None:
        raise ValueError(f"expected K/N (shard K of N, e.g. 2/4), found {text!r}")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 1 <= index <= count:
        raise ValueError(f"expected K/N with 1 <= K <= N, found {text!r}")
    return Shard(index, count)


def shard_index(program: str | None, diagnosis: str | None, nodeid: str, count: int) -> int:
    """The 1-based shard of one eval test (the rule in the module docstring)."""
    if program is not None and diagnosis in DIAGNOSES:
        offset = zlib.crc32(program.encode("utf-8"))
        return (offset + DIAGNOSES.index(diagnosis)) % count + 1
    return zlib.crc32(nodeid.encode("utf-8")) % count + 1
