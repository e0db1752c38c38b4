"""Constants of the benchmark and its one error type."""

from __future__ import annotations

import operator
from pathlib import Path

from evals.labels import DIAGNOSES

ROOT = Path(__file__).resolve().parents[1]
SEED = 0
QUICK_DIAGNOSES = DIAGNOSES[::3]
"""``--quick``: every third diagnosis (8 of 22), the same ones every time."""
SYNTHETIC_PROGRAMS = ("zero_shot", "chain_of_thought", "knn_few_shot")
UPLOAD_SIZES = (1_000, 10_000)
SAMPLE_INTERVAL_S = 0.2
PROMPT_REPEATS = 5
UPLOAD_REPEATS = 3
SUBPROCESS_TIMEOUT_S = 1800
SCRUBBED_ENV = ("EVALS_", "MLFLOW_", "PYTEST_ADDOPTS", "PYTEST_XDIST_AUTO_NUM_WORKERS")
OPS = {"<=": (operator.le, "≤"), ">=": (operator.ge, "≥"), "<": (operator.lt, "<")}


class BenchError(Exception):
    """A measurement could not be taken; the message is one readable line."""
