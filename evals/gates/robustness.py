"""The controller's side of the robustness suite: stability metrics, the floor, saved counterexamples."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evals.errors import ConfigError

if TYPE_CHECKING:
    from evals.results.report import Section
    from evals.harness.session import EvalsSession

REGRESSIONS_FILE = Path("suites") / "robustness_regressions.json"
KEYS = ("min_stability", "min_valid_rate")


@dataclass(frozen=True)
class RobustnessPolicy:
    """The ``robustness:`` section of thresholds.yaml."""

    min_stability: float = 0.0
    min_valid_rate: float = 0.0


@dataclass
class RobustnessOutcome:
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    error_lines: list[str] = field(default_factory=list)
    saved: int = 0


def parse_robustness_policy(raw: Mapping[str, object] | None, source: str) -> RobustnessPolicy:
    """Validate the ``robustness:`` section; one ConfigError line naming file, key and value."""
    values = {}
    for key, value in dict(raw or {}).items():
        if key not in KEYS:
            raise ConfigError(f"{source}: robustness.{key}: unknown key {key!r}; allowed: {', '.join(KEYS)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ConfigError(f"{source}: robustness.{key}: expected a number between 0 and 1, found {value!r}")
        values[str(key)] = float(value)
    return RobustnessPolicy(**values)


def check_robustness(session: EvalsSession, items: Sequence[Mapping[str, Any]]) -> RobustnessOutcome:
    """Aggregate stability per program, check the floors and save the unstable cases (controller only)."""
    from evals.stats.robustness import StabilityRecord, flat_stability_metrics, stability

    outcome = RobustnessOutcome()
    if not items:
        return outcome
    records = [StabilityRecord.from_dict(item["record"]) for item in items]
    thresholds = session.thresholds()
    policy = parse_robustness_policy(thresholds.robustness, thresholds.source)
    for program, m in stability(records).items():
        outcome.metrics[program] = flat_stability_metrics(m)
        if m.stability < policy.min_stability:
            outcome.error_lines.append(f"{program}: stability {m.stability:.2f} < min {policy.min_stability:.2f} "
                                       f"(n={m.n} perturbed examples)")
        if m.valid_rate < policy.min_valid_rate:
            outcome.error_lines.append(f"{program}: robust valid rate {m.valid_rate:.2f} < min "
                                       f"{policy.min_valid_rate:.2f}")
    outcome.saved = save_counterexamples(session.settings.rootdir / REGRESSIONS_FILE, items)
    return outcome


def save_counterexamples(path: Path, items: Sequence[Mapping[str, Any]]) -> int:
    """Add every unstable (or invalid) perturbed text to the regression file; return how many were new."""
    from evals.stats.robustness import RegressionCases, StabilityRecord, case_from_record

    cases = RegressionCases(path)
    before = len(cases.load())
    new = []
    for item in items:
        record = StabilityRecord.from_dict(item["record"])
        if not record.stable:
            new.append(case_from_record(record, item["text"]))
    if not new:
        return 0
    return len(cases.add(new)) - before


def robustness_section(outcome: RobustnessOutcome) -> Section | None:
    from evals.results.report import Section

    rows = [(program, f"{m.get('stability', 0):.3f}", f"{m.get('robust_valid_rate', 0):.3f}",
             str(int(m.get("robust_n", 0))))
            for program, m in outcome.metrics.items()]
    if not rows:
        return None
    note = f"{outcome.saved} new counterexample(s) saved to {REGRESSIONS_FILE}." if outcome.saved else ""
    return Section("Robustness (meaning-preserving perturbations)", ("program", "stability", "valid rate", "n"),
                   tuple(rows), note)
