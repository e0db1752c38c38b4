"""What the gates need from the store, read in one place before they run: the :class:`StoreView`.

Every lookup a session's gates need (each program's champion or explicit baseline run, and in
drift mode its recent history, and the recent sessions for the report's trend chart) happens in
:func:`read_store`; a failed lookup is kept as an
:class:`Unavailable` marker with its reason, so that the gates themselves are pure functions of
the session context and this view.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from evals.context import SessionContext
from evals.errors import ConfigError
from evals.store.champions import Champion, HistoryEntry, baseline_from_run, drift_history, find_champion
from evals.store.client import TrackingUnavailable, mlflow_errors
from evals.store.history import Session, recent_sessions
from evals.store.schema import SAMPLE_PARAM


@dataclass(frozen=True)
class Unavailable:
    """A lookup that failed (server down, HTTP 5xx, a broken database), with its one-line reason."""

    reason: str
    unreachable: bool = True


Baseline = Champion | None | Unavailable
"""A program's champion (or explicit baseline run), None when it has none, or why it is unknown."""


@dataclass(frozen=True)
class StoreView:
    """What the store returned for one session.

    Attributes:
        baselines: Program -> its baseline; only programs looked up (the regression gate ran).
        history: Program -> its recent sessions on the same examples, newest first (drift mode).
        recent: The experiment's last sessions, newest first, for the report's accuracy trend (empty when
            MLflow is off, has none yet, or could not be read: a chart is not worth failing a session).
    """

    baselines: Mapping[str, Baseline] = field(default_factory=dict)
    history: Mapping[str, list[HistoryEntry] | Unavailable] = field(default_factory=dict)
    recent: tuple[Session, ...] = ()


TREND_SESSIONS = 20
"""Past sessions read for the trend chart."""


def regression_skipped(context: SessionContext) -> str:
    """The flag that turned the regression gate off, or ``""`` when it runs."""
    settings = context.settings
    if settings.values.get("shard"):  # a shard's records are a part: the merge of the shards compares
        return "--evals-shard"
    return (
        "--evals-no-regression" if settings["no-regression"] else "--evals-no-mlflow" if settings["no-mlflow"] else ""
    )


def drift_enabled(context: SessionContext) -> bool:
    """True in drift mode with MLflow on (and not in a shard: the merge of the shards checks drift)."""
    settings = context.settings
    return bool(settings["drift"]) and not settings["no-mlflow"] and not settings.values.get("shard")


def read_store(context: SessionContext) -> StoreView:
    """Look up everything the gates of ``context`` need; nothing when thresholds.yaml could not be read."""
    if context.policies_problem:
        return StoreView()
    baselines = read_baselines(context)
    down = any(isinstance(b, Unavailable) and b.unreachable for b in baselines.values())
    return StoreView(baselines=baselines, history=read_history(context), recent=() if down else read_recent(context))


def read_recent(context: SessionContext) -> tuple[Session, ...]:
    """The experiment's last :data:`TREND_SESSIONS` complete sessions (newest first), or none."""
    settings = context.settings
    if settings["no-mlflow"] or settings.values.get("shard"):
        return ()
    try:
        return tuple(recent_sessions(settings["tracking-uri"], settings["experiment"], TREND_SESSIONS))
    except (ConfigError, TrackingUnavailable):  # no store or experiment yet, or unreachable
        return ()


def read_baselines(context: SessionContext) -> dict[str, Baseline]:
    """Each program's champion (or the ``--evals-baseline-run``); once the server is unreachable, ask no more."""
    if regression_skipped(context):
        return {}
    uri, run = context.settings["tracking-uri"], context.settings["baseline-run"]
    baselines: dict[str, Baseline] = {}
    down: Unavailable | None = None
    for program in context.programs:
        if down is not None:
            baselines[program] = down
            continue
        try:
            with mlflow_errors(uri):
                baselines[program] = baseline_from_run(uri, run, program) if run else find_champion(uri, program)
        except TrackingUnavailable as exc:
            baselines[program] = Unavailable(str(exc), exc.unreachable)
            down = baselines[program] if exc.unreachable else None  # type: ignore[assignment]
    return baselines


def read_history(context: SessionContext) -> dict[str, list[HistoryEntry] | Unavailable]:
    """Each program's recent sessions on the same examples (drift mode only)."""
    if not drift_enabled(context):
        return {}
    settings, window = context.settings, context.policies.drift.window
    history: dict[str, list[HistoryEntry] | Unavailable] = {}
    for program in context.programs:
        sample_fp = context.program_params[program][SAMPLE_PARAM]
        try:
            with mlflow_errors(settings["tracking-uri"]):
                history[program] = drift_history(
                    settings["tracking-uri"], settings["experiment"], program, sample_fp, window
                )
        except TrackingUnavailable as exc:
            history[program] = Unavailable(str(exc), exc.unreachable)
    return history
