"""A shard's part of a session: ``<bundle>/shard.json``, written and read back.

A session run with ``--evals-shard K/N`` writes its bundle as any session does, plus
``shard.json``: what :func:`evals.merge.merge` needs to rebuild the whole session's
:class:`~evals.context.SessionContext` from the N shards (the records, settings, params, the
thresholds file, program states and models). Everything in it is cleaned like the rest of the
bundle: secrets masked, patient texts redacted. A shard is no session: it logs nothing to MLflow
and its session gates (computed on a part of the tests) are reported as notes, not failures.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evals import secrets
from evals.config.settings import Settings
from evals.config.shard import Shard, parse_shard
from evals.context import SessionContext
from evals.errors import ConfigError
from evals.records import ExampleRecord
from evals.results.summary import SessionSummary
from evals.store.publish import clean_json
from evals.store.schema import SHARD_FILE

SHARD_FORMAT = 1


def shard_of(settings: Settings) -> Shard | None:
    """The session's ``--evals-shard``, or None for a whole session."""
    shard = settings.values.get("shard")
    return shard if isinstance(shard, Shard) else None


def shard_summary(summary: SessionSummary, shard: Shard) -> SessionSummary:
    """A shard's summary: its session gates saw a part of the tests, so their red lines become notes."""
    prefix = f"shard {shard} (the merged session is gated, not a shard): "
    return dataclasses.replace(
        summary, error_lines=[], notes=[*summary.notes, *(prefix + line for line in summary.error_lines)]
    )


def write_shard_json(
    bundle: Path, context: SessionContext, summary: SessionSummary, clean: Callable[[str], str]
) -> None:
    """Write ``<bundle>/shard.json`` from the context and its cleaned summary (records, params).

    Args:
        bundle: The shard's bundle directory.
        context: The shard's context.
        summary: Its summary, already cleaned (:func:`evals.results.finish.publishable`).
        clean: The text function applied to patient texts and program states.
    """
    settings, policies = context.settings, context.policies
    path = settings.path("thresholds")
    text = path.read_bytes() if path.is_file() else None
    if text is not None and hashlib.sha256(text).hexdigest() != policies.thresholds.sha256:
        text = None  # changed since the session read it: the merge must not gate with other limits
    values = {name: _plain(value) for name, value in settings.values.items()}
    content = {
        "format": SHARD_FORMAT,
        "shard": str(shard_of(settings)),
        "session_id": context.session_id,
        "started_at": context.started_at,
        "settings": {**values, **secrets.scrub({k: v for k, v in values.items() if isinstance(v, str)})},
        "thresholds": {
            "text": text.decode("utf-8") if text is not None else None,
            "source": policies.thresholds.source,
            "programs": list(policies.thresholds.programs),
            "problem": context.policies_problem,
        },
        "records": [record.to_dict() for record in summary.records],
        "stability": clean_json([dict(item) for item in context.stability], clean),
        "compile_events": [dict(event) for event in context.compile_events],
        "crashed_workers": list(context.crashed_workers),
        "interrupted": context.interrupted,
        "manifest": dict(context.manifest),
        "params": dict(summary.params),
        "program_params": {name: dict(params) for name, params in summary.program_params.items()},
        "program_states": {n: clean_json(dict(s), clean) for n, s in context.program_states.items()},
        "program_models": {n: clean_json(dict(m), clean) for n, m in context.program_models.items()},
        "redact_patterns": list(context.redact_patterns),
        "references": list(context.references),
    }
    (bundle / SHARD_FILE).write_text(json.dumps(content, indent=1, default=str))


def _plain(value: Any) -> Any:
    """A setting as JSON: tuples as lists, a shard as its ``K/N`` text."""
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Shard):
        return str(value)
    return value


@dataclass(frozen=True)
class ShardPart:
    """One shard's ``shard.json``, read back.

    Attributes:
        path: The bundle directory.
        shard: Which shard it is.
        data: The rest of the file (see :func:`write_shard_json`), as JSON.
        records: Its example records.
    """

    path: Path
    shard: Shard
    data: Mapping[str, Any]
    records: tuple[ExampleRecord, ...]

    @property
    def settings(self) -> Mapping[str, Any]:
        return dict(self.data["settings"])

    @property
    def params(self) -> Mapping[str, str]:
        return dict(self.data["params"])

    @property
    def program_params(self) -> Mapping[str, Mapping[str, str]]:
        return dict(self.data["program_params"])


def read_shard(bundle: Path) -> ShardPart:
    """Read ``<bundle>/shard.json``.

    Raises:
        ConfigError: No such file (not a shard's bundle), or it breaks the format.
    """
    where = bundle / SHARD_FILE
    if not where.is_file():
        raise ConfigError(f"{bundle}: no {SHARD_FILE}; only bundles of sessions run with --evals-shard K/N merge")
    try:
        data = json.loads(where.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("format") != SHARD_FORMAT:
            raise ValueError(f"expected an object with 'format': {SHARD_FORMAT}")
        shard = parse_shard(str(data["shard"]))
        records = tuple(ExampleRecord.from_dict(item) for item in data["records"])
        for key in ("settings", "params", "program_params", "thresholds", "manifest"):
            if not isinstance(data[key], dict):
                raise ValueError(f"{key!r} must be an object")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{where}: cannot read: {exc}") from None
    return ShardPart(path=bundle, shard=shard, data=data, records=records)
