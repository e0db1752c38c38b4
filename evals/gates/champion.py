"""The regression gate against the champion, run once on the controller after the tests.

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

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from evals.records import ExampleRecord

if TYPE_CHECKING:
    from evals.stats.regression import Comparison
    from evals.results.report import Section
    from evals.harness.session import EvalsSession

PROMOTION_KEY = "promote_requires"
"""Key of ``regression:`` in thresholds.yaml: params a session must match to be promoted."""
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
        from evals.store.champions import REGRESSION_REASON_TAG, REGRESSION_TAG, TOO_WEAK_TAG

        tags = {REGRESSION_TAG: self.status, REGRESSION_REASON_TAG: self.reason}
        if self.status == "unavailable":
            tags["evals.regression.on_unavailable"] = self.on_unavailable
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
        return {"status": self.status, "reason": self.reason, "on_unavailable": self.on_unavailable,
                "programs": programs}

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


def split_policy(raw: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """Separate the promotion requirements from the statistical policy of ``regression:``."""
    section = dict(raw or {})
    required = section.pop(PROMOTION_KEY, None) or {}
    return section, {str(k): str(v) for k, v in dict(required).items()}


def check_regressions(session: EvalsSession, records: Sequence[ExampleRecord]) -> RegressionOutcome:
    """Compare each program with its champion (or the explicit baseline run)."""
    from evals.stats.regression import parse_regression_policy
    from evals.store.upload import TrackingUnavailable

    outcome = RegressionOutcome()
    settings = session.settings
    programs = sorted({r.program for r in records})
    skipped = "--evals-no-regression" if settings["no-regression"] else "--evals-no-mlflow" if settings["no-mlflow"] else ""
    if skipped:
        outcome.programs = {p: ProgramGate("skipped", f"regression gate skipped ({skipped})") for p in programs}
        return outcome
    thresholds = session.thresholds()
    policy = parse_regression_policy(split_policy(thresholds.regression)[0], thresholds.source)
    outcome.on_unavailable = policy.unavailable_mode(settings.trigger, bool(settings["promote"]))
    uri = settings["tracking-uri"]
    if settings.trigger == "ci" and is_local_store(uri):
        outcome.warnings.append(ephemeral_store_warning(uri))
        outcome.notes.append(ephemeral_store_warning(uri))
    down = ""  # once the server is unreachable, do not wait for it once per program
    for program in programs:
        mine = [r for r in records if r.program == program]
        try:
            gate = ProgramGate("unavailable", down) if down else _check_one(session, program, mine, policy, outcome)
        except TrackingUnavailable as exc:
            gate, down = ProgramGate("unavailable", str(exc)), str(exc) if exc.unreachable else ""
        outcome.programs[program] = gate
    _report_unavailable(outcome)
    return outcome


def _check_one(session: EvalsSession, program: str, mine: list[ExampleRecord], policy: Any,
               outcome: RegressionOutcome) -> ProgramGate:
    """Look up the baseline of one program and compare; lookup failures raise TrackingUnavailable."""
    from evals.store.registry import registered_name
    from evals.stats.regression import ComparisonRefused, compare

    baseline = _baseline(session, program)
    if baseline is None and session.settings["baseline-run"]:
        return ProgramGate("unavailable", f"baseline run {session.settings['baseline-run']} has no run of {program}")
    if baseline is None:
        line = (f"No champion yet for {program} (registered as {registered_name(program)}): nothing to compare; "
                "promote a session to create one")
        outcome.info.append(line)
        return ProgramGate("no champion", line)
    try:
        comparison = compare(mine, list(baseline.records), policy)
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
        f"it catches a true accuracy drop of {comparison.min_detectable_drop:.3f} or more with 80% power")
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


def _baseline(session: EvalsSession, program: str) -> Any:
    """The champion (or the explicit baseline run) of ``program``, None when it has none.

    Raises:
        TrackingUnavailable: The lookup failed (server down, HTTP 5xx, broken store, ...).
    """
    from evals.store.champions import baseline_from_run, find_champion
    from evals.store.upload import mlflow_errors

    uri = session.settings["tracking-uri"]
    with mlflow_errors(uri):
        if session.settings["baseline-run"]:
            return baseline_from_run(uri, session.settings["baseline-run"], program)
        return find_champion(uri, program)


def is_local_store(tracking_uri: str) -> bool:
    """True for a sqlite file or a file store: on an ephemeral CI runner it is gone after the job."""
    if tracking_uri.split(":")[0].lower() in ("databricks", "databricks-uc"):
        return False  # `databricks` alone is a remote workspace, not a path
    scheme = urlsplit(tracking_uri).scheme.lower()
    return scheme in ("", "file", "sqlite") or len(scheme) == 1  # one letter: a Windows drive


def ephemeral_store_warning(tracking_uri: str) -> str:
    """The warning for a CI session that tracks into a local store."""
    from evals.store.upload import display_uri

    return (f"the tracking store {display_uri(tracking_uri)} is a local file: on an ephemeral CI runner it cannot "
            "keep a champion between runs, so the regression gate has nothing to compare with; point "
            "EVALS_TRACKING_URI (or MLFLOW_TRACKING_URI) at a persistent `mlflow server`")


def regression_section(outcome: RegressionOutcome) -> Section | None:
    """The comparison table of the report, with the gate's result for programs not compared."""
    from evals.results.report import Section

    rows = []
    for program, comparison in outcome.comparisons.items():
        for row in comparison.as_rows():
            if row["verdict"] == "ok" and row["metric"] not in ("accuracy", "macro_f1"):
                continue
            power = _fmt(comparison.min_detectable_drop) if row["metric"] == "accuracy" else ""
            rows.append((program, str(row["metric"]), _fmt(row["champion"]), _fmt(row["candidate"]),
                         _fmt(row["delta"], signed=True), f"[{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}]",
                         _fmt(row["p_value"]), str(row["verdict"]), power))
    missing = {p: g for p, g in outcome.programs.items() if p not in outcome.comparisons and g.status != "skipped"}
    rows += [(program, "(not compared)", "", "", "", "", "", gate.status, "") for program, gate in missing.items()]
    if not rows:
        return None
    baselines = "; ".join(f"{p}: {b}" for p, b in outcome.baselines.items())
    reasons = " ".join(f"{p}: {g.reason}." for p, g in missing.items() if g.reason)
    note = (f"Gate: {outcome.status}. Paired on the same examples. Baselines: {baselines or 'none'}. "
            "Detectable drop: the smallest true accuracy drop the gate catches with 80% power on these examples "
            f"(exact McNemar at the observed discordance). {reasons}")
    return Section("Regression against the champion",
                   ("program", "metric", "champion", "candidate", "delta", "interval", "p", "verdict",
                    "detectable drop"), tuple(rows), note.strip())


def _fmt(value: Any, signed: bool = False) -> str:
    if value is None:
        return ""
    return f"{float(value):+.3f}" if signed else f"{float(value):.3f}"


def gate_markdown(outcome: RegressionOutcome) -> str:
    """The gate's result per program and its warnings, as Markdown (the GitHub job summary)."""
    lines = [f"### Regression gate: {outcome.status}", ""]
    lines += [f"> [!WARNING]\n> {warning}\n" for warning in outcome.warnings]
    for program, gate in outcome.programs.items():
        comparison = outcome.comparisons.get(program)
        power = (f" (n={comparison.n}; minimum detectable accuracy drop {comparison.min_detectable_drop:.3f} "
                 "at 80% power)" if comparison else "")
        reason = f": {gate.reason}" if gate.reason else ""
        lines.append(f"- **{program}**: {gate.status}{power}{reason}")
    lines += [f"- ⚠️ {line}" for line in outcome.too_weak()]
    if outcome.status == "unavailable":
        lines.append(f"- regression.on_unavailable: {outcome.on_unavailable}; the session cannot be promoted")
    return "\n".join(lines) + "\n"


def comparison_markdown(outcome: RegressionOutcome) -> str:
    """All programs' comparisons as Markdown (the GitHub job summary)."""
    return "\n\n".join(comparison.to_markdown() for comparison in outcome.comparisons.values())
