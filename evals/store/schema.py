"""The store's format: tag, param and artifact names, and the session bundle (written and read).

The bundle is a directory written at the end of a pytest session and uploaded as it is::

    <bundle>/session.json           session and per-program params, tags and metrics
    <bundle>/artifacts/**           logged to the parent run
    <bundle>/programs/<program>/**  logged to that program's nested run

:func:`session_json` builds ``session.json``; :meth:`Bundle.load` reads and validates it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evals.errors import ConfigError

SESSION_TAG = "evals.session_id"
PROGRAM_TAG = "evals.program"
PARENT_TAG = "mlflow.parentRunId"
VERDICT_TAG = "evals.verdict"
TRIGGER_TAG = "evals.trigger"
COMPLETE_TAG = "evals.complete"
PROGRAMS_TAG = "evals.programs"
BRANCH_TAG = "git.branch"
REGRESSION_TAG = "evals.regression"
"""Session tag: the regression gate's result, pass, fail, unavailable or none (nothing compared)."""
REGRESSION_REASON_TAG = "evals.regression.reason"
ON_UNAVAILABLE_TAG = "evals.regression.on_unavailable"
TOO_WEAK_TAG = "evals.regression.too_weak"
"""Session tag, set when a comparison could not see the drop ``max_detectable_drop`` requires."""
SAMPLE_PARAM = "sample.fingerprint"
"""Program param: fingerprint of the examples it was evaluated on (drift history must match it)."""
FINGERPRINT_PARAM = "drift.lm_fingerprint"
SOURCE_HASH_PARAM = "program.source_hash"
PREDICTIONS_ARTIFACT = "predictions.csv"
COMPILED_ARTIFACT = "compiled_program.json"
CANDIDATE = "candidate"
CHAMPION = "champion"
BUNDLE_FORMAT = 1
SESSION_FILE = "session.json"
SHARD_FILE = "shard.json"
"""In the bundle of a session run with ``--evals-shard K/N``: its part, for ``python -m evals merge``."""
SHARD_TAG = "evals.shard"
"""Session tag of a shard's bundle (``K/N``): its verdict covers a part of the tests, not a session."""
SHARDS_PARAM = "shard.count"
"""Session param of a session merged from shards: how many."""
TERMINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")
SESSION_ID_PATTERN = re.compile(r"[0-9A-Fa-f][0-9A-Fa-f-]{7,63}")


@dataclass(frozen=True)
class RunData:
    """Params, tags and metrics of one run (the session's parent run or a program's)."""

    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, float]


@dataclass(frozen=True)
class Bundle:
    """A parsed, validated session bundle (see the module docstring for the layout)."""

    path: Path
    session_id: str
    experiment: str
    run_name: str
    started_at: float
    finished_at: float
    status: str
    session: RunData
    programs: dict[str, RunData]

    @classmethod
    def load(cls, path: Path) -> Bundle:
        """Read and validate ``<path>/session.json``.

        Raises:
            ConfigError: The file is missing, not JSON, or breaks the bundle contract.
        """
        where = path / "session.json"
        try:
            data = json.loads(where.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"session bundle {where}: cannot read: {exc}") from None
        try:
            return cls._from_json(path, data)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"session bundle {where}: {exc}") from None

    @classmethod
    def _from_json(cls, path: Path, data: Any) -> Bundle:
        if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT:
            raise ValueError(f"expected an object with 'format': {BUNDLE_FORMAT}")
        session_id, status = str(data["session_id"]), str(data["status"])
        if not SESSION_ID_PATTERN.fullmatch(session_id):
            raise ValueError(f"session_id {session_id!r} is not a uuid hex string")
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"status {status!r} is not one of {', '.join(TERMINAL_STATUSES)}")
        programs = {str(name): run_data(entry) for name, entry in data["programs"].items()}
        extra = {p.name for p in (path / "programs").glob("*") if p.is_dir()} - set(programs)
        if extra:
            raise ValueError(f"programs/{sorted(extra)[0]}/ has no entry in 'programs'")
        return cls(
            path=path,
            session_id=session_id,
            experiment=str(data["experiment"]),
            run_name=str(data["run_name"]),
            started_at=float(data["started_at"]),
            finished_at=float(data["finished_at"]),
            status=status,
            session=run_data(data),
            programs=programs,
        )


def session_json(
    *,
    session_id: str,
    experiment: str,
    run_name: str,
    started_at: float,
    finished_at: float,
    status: str,
    params: Mapping[str, str],
    tags: Mapping[str, str],
    metrics: Mapping[str, float],
    programs: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """The content of ``session.json`` (what :meth:`Bundle.load` reads back)."""
    return {
        "format": BUNDLE_FORMAT,
        "session_id": session_id,
        "experiment": experiment,
        "run_name": run_name,
        "started_at": started_at,
        "finished_at": finished_at,
        "status": status,
        "params": dict(params),
        "tags": dict(tags),
        "metrics": dict(metrics),
        "programs": {name: dict(entry) for name, entry in programs.items()},
    }


def write_session_json(bundle: Path, content: Mapping[str, Any]) -> None:
    """Write ``<bundle>/session.json``."""
    (bundle / SESSION_FILE).write_text(json.dumps(content, indent=2))


def run_data(entry: Any) -> RunData:
    """Parse the params, tags and metrics of the session or of one program entry."""
    if not isinstance(entry, dict):
        raise TypeError(f"expected an object, got {type(entry).__name__}")
    params, tags, metrics = (entry.get(key, {}) for key in ("params", "tags", "metrics"))
    if not all(isinstance(values, dict) for values in (params, tags, metrics)):
        raise TypeError("'params', 'tags' and 'metrics' must be objects")
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"metric {key!r}: expected a number, got {value!r}")
    return RunData(
        params={str(k): str(v) for k, v in params.items()},
        tags={str(k): str(v) for k, v in tags.items()},
        metrics={str(k): float(v) for k, v in metrics.items()},
    )
