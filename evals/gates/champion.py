"""The regression gate against the champion: a pure check over the session context and the store view.

For every evaluated program that has a champion (or with ``--evals-baseline-run``, the
given run), the session's records are compared with the champion's on the same examples
(:mod:`evals.stats.regression`). A regression is a red ``ERROR:`` line and a failed session; the
comparison goes into the terminal, the reports (a section) and MLflow (metrics + a table).

The gate never passes silently: each program's result is ``pass``, ``fail``,
``unavailable`` (the champion could not be looked up: the reason is kept), ``no champion``
or ``skipped``. Unavailable fails the session under ``regression.on_unavailable: fail``
(the default in CI and with ``--evals-promote``) and warns otherwise; either way the session
is tagged ``evals.regression=unavailable`` and cannot be promoted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from evals.config.policies import RegressionPolicy
from evals.context import SessionContext
from evals.stats.regression import Comparison, ComparisonRefused, compare
from evals.store.champions import Champion
from evals.store.client import display_uri
from evals.store.registry import registered_name
from evals.store.schema import ON_UNAVAILABLE_TAG, REGRESSION_REASON_TAG, REGRESSION_TAG, TOO_WEAK_TAG
from evals.store.view import StoreView, Unavailable, regression_skipped

GateStatus = Literal["pass", "fail", "unavailable", "no champion", "skipped"]
_OVERALL = (("fail", "fail"), ("unavailable", "unavailable"), ("pass", "pass"))
"""Overall status: the first of these any program has, else ``none`` (nothing was compared)."""
MAX_REASON = 500


@dataclass(frozen=True)
class ProgramGate:
    """One program's gate result and why (the regression lines, the lookup error, ...)."""

    status: GateStatus
    reason: str = ""


@dataclass
class RegressionOutcome:
    """Comparisons and gate results per program, and the lines a user should read.

    Attributes:
        comparisons: Program -> its comparison with the champion.
        baselines: Program -> what it was compared with, in words.
        programs: Program -> its gate result.
        error_lines: Red lines; each fails the session.
        notes: Yellow ``WARNING:`` lines.
        info: Plain lines (no champion yet, what each comparison could see).
        warnings: Warnings that also belong in the GitHub job summary.
        on_unavailable: The policy applied to unavailable programs.
    """

    comparisons: dict[str, Comparison] = field(default_factory=dict)
    baselines: dict[str, str] = field(default_factory=dict)
    error_lines: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    programs: dict[str, ProgramGate] = field(default_factory=dict)
    info: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    on_unavailable: str = "warn"

    @property
    def status(self) -> str:
        """``fail``, ``unavailable``, ``pass`` or ``none``, in that order of precedence."""
        found = {gate.status for gate in self.programs.values()}
        return next((overall for status, overall in _OVERALL if status in found), "none")

    @property
    def reason(self) -> str:
        """The reasons of the programs that decided :attr:`status`, one line."""
        status = self.status
        wanted = {"none": ("no champion", "skipped")}.get(status, (status,))
        reasons = dict.fromkeys(g.reason for g in self.programs.values() if g.status in wanted and g.reason)
        return "; ".join(reasons)[:MAX_REASON]

    def too_weak(self) -> list[str]:
        """The comparisons too weak for ``regression.max_detectable_drop``."""
        return [line for c in self.comparisons.values() if (line := c.too_weak())]

    def tags(self) -> dict[str, str]:
        """Session tags: ``evals.regression`` (+ reason) and ``evals.regression.too_weak``."""
        tags = {REGRESSION_TAG: self.status, REGRESSION_REASON_TAG: self.reason}
        if self.status == "unavailable":
            tags[ON_UNAVAILABLE_TAG] = self.on_unavailable
        weak = self.too_weak()
        if weak:
            tags[TOO_WEAK_TAG] = "; ".join(weak)[:MAX_REASON]
        return tags

    def to_json(self) -> dict[str, Any]:
        """The gate's part of verdict.json."""
        programs = {}
        for name, gate in self.programs.items():
            entry: dict[str, Any] = {"status": gate.status, "reason": gate.reason}
            if name in self.comparisons:
                entry["min_detectable_drop"] = self.comparisons[name].min_detectable_drop
                entry["too_weak"] = self.comparisons[name].too_weak()
            programs[name] = entry
        return {
            "status": self.status,
            "reason": self.reason,
            "on_unavailable": self.on_unavailable,
            "programs": programs,
        }

    def program_metrics(self, program: str) -> dict[str, float]:
        """MLflow metrics of one program's comparison (deltas, interval bounds, McNemar p, power)."""
        comparison = self.comparisons.get(program)
        if comparison is None:
            return {}
        metrics: dict[str, float] = {}
        for row in comparison.as_rows()[:2]:
            for key in ("delta", "ci_low", "ci_high", "p_value"):
                if row.get(key) is not None:
                    metrics[f"regression.{row['metric']}.{key}"] = float(row[key])
        metrics["regression.accuracy.min_detectable_drop"] = comparison.min_detectable_drop
        return metrics


def check_regressions(context: SessionContext, view: StoreView) -> RegressionOutcome:
    """Compare each program with its baseline as the store returned it (pure: no lookup here)."""
    outcome = RegressionOutcome()
    settings = context.settings
    skipped = regression_skipped(context)
    if skipped:
        outcome.programs = {p: ProgramGate("skipped", f"regression gate skipped ({skipped})") for p in context.programs}
        return outcome
    policy = context.policies.regression
    outcome.on_unavailable = policy.unavailable_mode(settings.trigger, bool(settings["promote"]))
    uri = settings["tracking-uri"]
    if settings.trigger == "ci" and is_local_store(uri):
        outcome.warnings.append(ephemeral_store_warning(uri))
        outcome.notes.append(ephemeral_store_warning(uri))
    for program in context.programs:
        baseline = view.baselines.get(program)
        if isinstance(baseline, Unavailable):
            outcome.programs[program] = ProgramGate("unavailable", baseline.reason)
        else:
            outcome.programs[program] = _check_one(context, program, baseline, policy, outcome)
    _report_unavailable(outcome)
    return outcome


def _check_one(
    context: SessionContext,
    program: str,
    baseline: Champion | None,
    policy: RegressionPolicy,
    outcome: RegressionOutcome,
) -> ProgramGate:
    """Compare one program with its baseline."""
    if baseline is None and context.settings["baseline-run"]:
        return ProgramGate("unavailable", f"baseline run {context.settings['baseline-run']} has no run of {program}")
    if baseline is None:
        line = (
            f"No champion yet for {program} (registered as {registered_name(program)}): nothing to compare; "
            "promote a session to create one"
        )
        outcome.info.append(line)
        return ProgramGate("no champion", line)
    try:
        comparison = compare(context.records_of(program), list(baseline.records), policy)
    except ComparisonRefused as exc:
        outcome.error_lines.append(str(exc))
        return ProgramGate("fail", str(exc))
    outcome.comparisons[program] = comparison
    outcome.baselines[program] = f"version {baseline.version} (run {baseline.run_id})"
    regressions = comparison.regressions()
    outcome.error_lines.extend(regressions)
    status: GateStatus = "fail" if regressions else "pass"
    outcome.info.append(
        f"regression gate for {program}: {status} against {outcome.baselines[program]} on n={comparison.n}; "
        f"it catches a true accuracy drop of {comparison.min_detectable_drop:.3f} or more with 80% power"
    )
    weak = comparison.too_weak()
    if weak:
        outcome.notes.append(f"{weak}; this session cannot be promoted")
    return ProgramGate(status, "; ".join(regressions))


def _report_unavailable(outcome: RegressionOutcome) -> None:
    """One line per distinct reason: red (fails the session) or yellow, by ``on_unavailable``."""
    by_reason: dict[str, list[str]] = {}
    for program, gate in outcome.programs.items():
        if gate.status == "unavailable":
            by_reason.setdefault(gate.reason, []).append(program)
    for reason, programs in by_reason.items():
        policy = f"regression.on_unavailable: {outcome.on_unavailable}"
        line = f"regression gate could not run: {reason} ({', '.join(programs)}; {policy})"
        if outcome.on_unavailable == "fail":
            outcome.error_lines.append(line)
        else:
            outcome.notes.append(f"{line}; the session cannot be promoted")


def is_local_store(tracking_uri: str) -> bool:
    """True for a sqlite file or a file store: on an ephemeral CI runner it is gone after the job."""
    if tracking_uri.split(":")[0].lower() in ("databricks", "databricks-uc"):
        return False  # `databricks` alone is a remote workspace, not a path
    scheme = urlsplit(tracking_uri).scheme.lower()
    return scheme in ("", "file", "sqlite") or len(scheme) == 1  # one letter: a Windows drive


def ephemeral_store_warning(tracking_uri: str) -> str:
    """The warning for a CI session that tracks into a local store."""
    return (
        f"the tracking store {display_uri(tracking_uri)} is a local file: on an ephemeral CI runner it cannot "
        "keep a champion between runs, so the regression gate has nothing to compare with; point "
        "EVALS_TRACKING_URI (or MLFLOW_TRACKING_URI) at a persistent `mlflow server`"
    )
