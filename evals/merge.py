"""``python -m evals merge``: make ONE session of the bundles of N shards (``--evals-shard K/N``).

The shards' ``shard.json`` files (:mod:`evals.results.shard`) are checked to be the N parts of
one configuration (same LM and decoding, dataset, sample, seed, thresholds, programs and their
compile keys, git commit and package versions; each of 1..N once), then the union of their
records becomes one :class:`~evals.context.SessionContext`, which takes the controller's path:
:func:`~evals.store.view.read_store` (the champions), :func:`~evals.results.summary.summarize`
(every gate), :func:`~evals.results.finish.finish` (bundle, HTML report, one parent MLflow run
with a nested run per program, candidates, ``--evals-promote`` when the shards had it).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evals.config.optimizers import split_name
from evals.config.policies import Policies, parse_policies
from evals.config.settings import Settings
from evals.config.thresholds import parse_thresholds
from evals.config.validation import parse_yaml_strict
from evals.context import SessionContext
from evals.errors import ConfigError
from evals.gates.drift import lm_fingerprint_of, sample_fingerprint
from evals.harness.params import compile_params
from evals.results.finish import SessionEnd, finish
from evals.results.shard import ShardPart, read_shard
from evals.results.summary import SessionSummary, summarize
from evals.store.schema import FINGERPRINT_PARAM, SAMPLE_PARAM, SHARD_FILE, SHARDS_PARAM
from evals.store.view import read_store

LOCAL_SETTINGS = frozenset(
    {"shard", "report-dir", "spool-dir", "cache-dir", "data-dir", "concurrency", "lm-server", "no-cache", "recompile"}
    | {"tracking-uri"}
)
"""Settings that may differ between shards: where things are kept on each machine, how fast it calls.
The dataset itself is compared by fingerprint (params and manifest), the tracking URI is the merge's."""
LOCAL_PARAMS = frozenset({"xdist.workers", "thresholds.path", "dataset.source"})
"""Session params that may differ: worker count (summed), and paths on each machine (the thresholds file's
sha256 and the dataset's fingerprints are compared)."""
PER_SHARD_PROGRAM_PARAMS = frozenset(
    {SAMPLE_PARAM, FINGERPRINT_PARAM, "compile.action", "compile.count", "compile.duration_s", "compile.lm_calls"}
    | {"compile.path"}
)
"""Program params computed from a shard's own records or compile events: recomputed over the union."""


@dataclass(frozen=True)
class Merged:
    """What a merge did: the merged session, its summary, and where it went."""

    context: SessionContext
    summary: SessionSummary
    end: SessionEnd


def merge(
    bundles: Sequence[Path], *, tracking_uri: str | None, out: Path, no_mlflow: bool = False, cwd: Path | None = None
) -> Merged:
    """Check, merge and finish the shards' bundles as one session.

    Args:
        bundles: Shard bundle directories, or directories holding them (searched for ``shard.json``).
        tracking_uri: Where to log the session (None: the URI the shards recorded).
        out: Directory for the merged session's bundle (a subdirectory per session, like ``--evals-report-dir``).
        no_mlflow: Write the bundle only.
        cwd: The directory relative paths are resolved from (default: the current one).

    Raises:
        ConfigError: A bundle is no shard's, or the shards are not the N parts of one configuration.
    """
    parts = load_parts(bundles)
    check_parts(parts)
    context = merged_context(parts, tracking_uri=tracking_uri, out=out, no_mlflow=no_mlflow, cwd=cwd or Path.cwd())
    summary = summarize(context, read_store(context))
    return Merged(context, summary, finish(context, summary))


def load_parts(bundles: Sequence[Path]) -> list[ShardPart]:
    """Read every shard; a directory without ``shard.json`` stands for the shard bundles under it."""
    dirs: list[Path] = []
    for bundle in bundles:
        if not bundle.is_dir():
            raise ConfigError(f"{bundle}: not a directory (expected a shard's bundle directory)")
        found = [bundle] if (bundle / SHARD_FILE).is_file() else sorted(p.parent for p in bundle.rglob(SHARD_FILE))
        dirs.extend(found or [bundle])  # none found: read_shard names what is missing
    return [read_shard(path) for path in dirs]


def check_parts(parts: Sequence[ShardPart]) -> None:
    """Refuse shards of different configurations, duplicates and missing shards (one line each)."""
    if not parts:
        raise ConfigError("nothing to merge: give the shards' bundle directories")
    first = parts[0]
    for part in parts[1:]:
        field, mine, theirs = first_difference(first, part)
        if field:
            raise ConfigError(
                f"cannot merge {first.path} and {part.path}: they differ in {field} ({mine!r} vs {theirs!r})"
            )
    seen: dict[int, Path] = {}
    for part in parts:
        if part.shard.index in seen:
            raise ConfigError(f"cannot merge: {seen[part.shard.index]} and {part.path} are both shard {part.shard}")
        seen[part.shard.index] = part.path
    owner: dict[tuple[str, str], Path] = {}
    for part in parts:
        for record in part.records:
            key = (record.program, record.example_id)
            if key in owner:
                raise ConfigError(
                    f"cannot merge: {owner[key]} and {part.path} both hold {record.program} on {record.example_id}"
                )
            owner[key] = part.path
    count = first.shard.count
    missing = [f"{k}/{count}" for k in range(1, count + 1) if k not in seen]
    if missing:
        have = ", ".join(str(p.shard) for p in sorted(parts, key=lambda p: p.shard.index))
        raise ConfigError(f"cannot merge: shard {', '.join(missing)} missing (given {have})")


def first_difference(a: ShardPart, b: ShardPart) -> tuple[str, Any, Any]:
    """The first configuration field in which two shards differ, with both values; ``("", None, None)`` if none."""
    if a.shard.count != b.shard.count:
        return "shard count (--evals-shard K/N)", str(a.shard), str(b.shard)
    pairs: list[tuple[str, Mapping[str, Any], Mapping[str, Any], frozenset[str]]] = [
        ("setting", a.settings, b.settings, LOCAL_SETTINGS),
        ("param", a.params, b.params, LOCAL_PARAMS),
    ]
    for program in sorted(set(a.program_params) & set(b.program_params)):
        pairs.append(
            (f"{program} param", a.program_params[program], b.program_params[program], PER_SHARD_PROGRAM_PARAMS)
        )
    for kind, left, right, ignored in pairs:
        for key in sorted((set(left) | set(right)) - ignored):
            if left.get(key) != right.get(key):
                return f"{kind} {key}", left.get(key), right.get(key)
    for program in sorted(set(a.data["program_states"]) & set(b.data["program_states"])):
        # The same compile key can still give different programs (sampled proposals of an API LM,
        # compiled by each shard's own job): one program's records must come from one program.
        mine, theirs = _digest(a.data["program_states"][program]), _digest(b.data["program_states"][program])
        if mine != theirs:
            return f"{program} compiled state (sha256; compile once and share .evals/cache)", mine, theirs
    shared: list[tuple[str, Any, Any]] = [
        ("dataset splits", a.data["manifest"].get("splits"), b.data["manifest"].get("splits")),
        ("thresholds file", _thresholds(a), _thresholds(b)),
        ("references", a.data.get("references"), b.data.get("references")),
        ("redact patterns", a.data.get("redact_patterns"), b.data.get("redact_patterns")),
    ]
    for name, mine, theirs in shared:
        if mine != theirs:
            return name, _short(mine), _short(theirs)
    return "", None, None


def _digest(state: Any) -> str:
    return hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _thresholds(part: ShardPart) -> dict[str, Any]:
    """The thresholds file as the shard gated with it, less its path on the shard's machine."""
    return {k: v for k, v in part.data["thresholds"].items() if k != "source"}


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def merged_context(
    parts: Sequence[ShardPart], *, tracking_uri: str | None, out: Path, no_mlflow: bool, cwd: Path
) -> SessionContext:
    """One session's context from checked shards: the union of their records and what they share."""
    first = parts[0]
    records = tuple(sorted((r for p in parts for r in p.records), key=lambda r: (r.program, r.example_id)))
    events = [dict(e) for p in parts for e in p.data["compile_events"]]
    params = {
        **first.params,
        "xdist.workers": str(sum(int(p.params.get("xdist.workers", "1")) for p in parts)),
        SHARDS_PARAM: str(first.shard.count),
    }
    policies, problem = merged_policies(first)
    return SessionContext(
        session_id=uuid.uuid4().hex,
        started_at=min(float(p.data["started_at"]) for p in parts),
        settings=merged_settings(first, tracking_uri=tracking_uri, out=out, no_mlflow=no_mlflow, cwd=cwd),
        policies=policies,
        policies_problem=problem,
        records=records,
        stability=tuple(item for p in parts for item in p.data["stability"]),
        compile_events=tuple(events),
        crashed_workers=tuple(f"{w} (shard {p.shard})" for p in parts for w in p.data["crashed_workers"]),
        interrupted=any(bool(p.data["interrupted"]) for p in parts),
        manifest=dict(first.data["manifest"]),
        params=params,
        program_params=merged_program_params(parts, records, params, events),
        program_states=_union(parts, "program_states"),
        program_models=_union(parts, "program_models"),
        redact_patterns=tuple(first.data["redact_patterns"]),
        references=tuple(first.data["references"]),
    )


def merged_settings(part: ShardPart, *, tracking_uri: str | None, out: Path, no_mlflow: bool, cwd: Path) -> Settings:
    """The shards' settings, minus the shard, with the merge's tracking URI and directories."""
    values = {name: tuple(value) if isinstance(value, list) else value for name, value in part.settings.items()}
    values.update(
        {
            "shard": None,
            "report-dir": str(out.resolve()),
            "spool-dir": str((cwd / ".evals" / "spool").resolve()),
            "tracking-uri": tracking_uri or values["tracking-uri"],
            "no-mlflow": bool(no_mlflow or values["no-mlflow"]),
        }
    )
    return Settings(values=values, rootdir=cwd, invocation_dir=cwd)


def merged_policies(part: ShardPart) -> tuple[Policies, str | None]:
    """The shards' thresholds file, parsed again; all-default limits and the reason when it cannot be."""
    thresholds = part.data["thresholds"]
    problem, text = thresholds.get("problem"), thresholds.get("text")
    if not problem and text is None:
        problem = f"{thresholds.get('source')}: not recorded by the shards (missing, or changed during the session)"
    if not problem:
        import hashlib

        raw = text.encode("utf-8")
        source = str(thresholds["source"])
        try:
            data = parse_yaml_strict(raw, source)
            parsed = parse_thresholds(data, source, thresholds["programs"], sha256=hashlib.sha256(raw).hexdigest())
            return parse_policies(parsed), None
        except ConfigError as exc:
            problem = str(exc)
    return parse_policies(parse_thresholds({"version": 1}, "<defaults>", [])), problem


def merged_program_params(
    parts: Sequence[ShardPart], records: Sequence[Any], session: Mapping[str, str], events: Sequence[Mapping[str, Any]]
) -> dict[str, dict[str, str]]:
    """Each program's params as a shard logged them, with the sample, LM fingerprint and compile over the union."""
    params: dict[str, dict[str, str]] = {}
    for name in dict.fromkeys(r.program for r in records):
        shared = next(dict(p.program_params[name]) for p in parts if name in p.program_params)
        mine = [r for r in records if r.program == name]
        shared[SAMPLE_PARAM] = sample_fingerprint(mine)
        shared[FINGERPRINT_PARAM] = lm_fingerprint_of(dict(session), mine)
        if split_name(name)[1] is not None:
            shared.update(compile_params(name, events))
        params[name] = shared
    return params


def _union(parts: Sequence[ShardPart], key: str) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for part in parts:
        for name, value in part.data[key].items():
            merged.setdefault(name, value)
    return merged
