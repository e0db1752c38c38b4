"""Nightly drift of the champion against its own recent history (pure functions).

The champion program is run every night on the same examples. Three signals say whether
something moved, and two fingerprints say what probably moved it:

* **Control band**: tonight's accuracy against mean ± ``band_k`` sample standard deviations
  of the last ``window`` nights (no verdict with fewer than ``min_history``).
* **Churn**: the share of shared examples whose prediction changed since the previous
  night. Accuracy can stay flat while a third of the answers change; churn sees that.
* **Label shift**: a chi-square test of homogeneity of the predicted-label distributions
  of tonight and the previous night (an LM that starts answering "common cold" to
  everything). Both nights ran on the same examples, so the samples are positively
  correlated and the test is conservative: it fires less often than ``alpha`` under noise.
* **Cause**: the LM fingerprint (spec, backend version, answers to fixed probe prompts) and
  the program hash, compared with the previous night's, give "model drift", "program drift",
  "both", or "data or noise" when neither changed.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from evals.config.policies import DriftPolicy
from evals.records import ExampleRecord
from evals.stats.metrics import INVALID

BandVerdict = Literal["within band", "below band", "above band", "not enough history"]
_CAUSES = {
    (True, False): "model drift",
    (False, True): "program drift",
    (True, True): "both",
    (False, False): "data or noise",
}
_WHY = {
    "model drift": "the LM fingerprint changed",
    "program drift": "the program hash changed",
    "both": "the LM fingerprint and the program hash changed",
    "data or noise": "neither the LM fingerprint nor the program hash changed",
}


def control_band(history_accuracies: Sequence[float], k: float, *, min_sd: float = 0.0) -> tuple[float, float, float]:
    """Return ``(mean - k·sd, mean, mean + k·sd)`` of past accuracies.

    Args:
        history_accuracies: Accuracy of each past night (at least two).
        k: Half-width in sample standard deviations (``ddof=1``).
        min_sd: Floor of the standard deviation, so that identical past nights do not
            give a band of zero width.

    Raises:
        ValueError: Fewer than two values: a sample standard deviation needs two.
    """
    values = [float(value) for value in history_accuracies]
    if len(values) < 2:
        raise ValueError(f"a control band needs at least 2 past accuracies, got {len(values)}")
    mean = math.fsum(values) / len(values)
    sd = math.sqrt(math.fsum((value - mean) ** 2 for value in values) / (len(values) - 1))
    half = k * max(sd, min_sd)
    return mean - half, mean, mean + half


def churn(current: Sequence[ExampleRecord], previous: Sequence[ExampleRecord]) -> float:
    """Share of the shared example ids whose prediction changed (None is a value too).

    Raises:
        ValueError: No example id in common, or an id twice in one run.
    """
    changed, common = _churn_counts(current, previous)
    return changed / common


def _churn_counts(current: Sequence[ExampleRecord], previous: Sequence[ExampleRecord]) -> tuple[int, int]:
    now, before = _predictions(current, "current"), _predictions(previous, "previous")
    common = now.keys() & before.keys()
    if not common:
        raise ValueError("the two runs share no example id, so churn is undefined")
    return sum(now[i] != before[i] for i in common), len(common)


def _predictions(records: Sequence[ExampleRecord], run: str) -> dict[str, str | None]:
    predictions: dict[str, str | None] = {}
    for record in records:
        if record.example_id in predictions:
            raise ValueError(f"{run} run: duplicate record for example {record.example_id!r}")
        predictions[record.example_id] = record.predicted
    return predictions


def label_shift(current: Sequence[ExampleRecord], previous: Sequence[ExampleRecord]) -> tuple[float, float]:
    """Chi-square test of homogeneity of the predicted-label distributions of two runs.

    The table is 2 × K over the labels predicted in either run, with invalid answers as a
    category of their own. A single category (both runs answer the same one label) leaves
    nothing to compare and gives ``(0.0, 1.0)``.

    Returns:
        ``(chi2, p_value)``.

    Raises:
        ValueError: One of the runs has no records.
    """
    from scipy.stats import chi2_contingency  # slow import: used here only

    if not current or not previous:
        raise ValueError("label_shift needs records in both runs")
    now, before = _label_counts(current), _label_counts(previous)
    labels = sorted(now.keys() | before.keys())  # only labels seen, so no all-zero column
    if len(labels) < 2:
        return 0.0, 1.0
    table = [[now.get(label, 0) for label in labels], [before.get(label, 0) for label in labels]]
    result = chi2_contingency(table)
    return float(result.statistic), float(result.pvalue)


def _label_counts(records: Sequence[ExampleRecord]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in records:
        label = INVALID if record.predicted is None else record.predicted
        counts[label] = counts.get(label, 0) + 1
    return counts


def lm_fingerprint(spec_params: Mapping[str, str], backend_version: str, probe_answers: Sequence[str]) -> str:
    """Hex sha256 of the canonical JSON of what identifies the LM's behaviour.

    Args:
        spec_params: The LM spec (model, revision, temperature, ...); key order is ignored.
        backend_version: Version of the serving backend (llama.cpp, mlx-lm, ...).
        probe_answers: Answers to fixed probe prompts, in probe order: they change when the
            weights or the serving stack change even if every name stays the same.
    """
    canonical = json.dumps(
        {
            "backend_version": backend_version,
            "probe_answers": list(probe_answers),
            "spec_params": {str(key): str(value) for key, value in spec_params.items()},
        },
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def classify_drift(lm_changed: bool, program_changed: bool) -> str:
    """Name the likely cause: "model drift", "program drift", "both" or "data or noise"."""
    return _CAUSES[(bool(lm_changed), bool(program_changed))]


@dataclass(frozen=True)
class DriftReport:
    """What :func:`assess` measured for one program's nightly run.

    Attributes:
        program: The program's name.
        n: Records tonight.
        accuracy: Tonight's accuracy.
        history: The past accuracies the band was computed from (at most ``window``).
        band: ``(low, mean, high)``, or None with fewer than ``min_history`` past nights.
        changed: Shared examples whose prediction changed (None without a previous run).
        common: Shared example ids (0 without a previous run).
        chi2: Label-shift statistic (None without a previous run); ``p_value`` likewise.
        lm_changed: The LM fingerprint differs from the previous night's.
        program_changed: The program hash differs from the previous night's.
        policy: The limits applied.
    """

    program: str
    n: int
    accuracy: float
    history: tuple[float, ...]
    band: tuple[float, float, float] | None
    changed: int | None
    common: int
    chi2: float | None
    p_value: float | None
    lm_changed: bool
    program_changed: bool
    policy: DriftPolicy

    @property
    def churn(self) -> float | None:
        return None if self.changed is None or not self.common else self.changed / self.common

    @property
    def cause(self) -> str:
        return classify_drift(self.lm_changed, self.program_changed)

    @property
    def band_verdict(self) -> BandVerdict:
        if self.band is None:
            return "not enough history"
        if self.accuracy < self.band[0]:
            return "below band"
        return "above band" if self.accuracy > self.band[2] else "within band"

    @property
    def churn_alarm(self) -> bool:
        return self.churn is not None and self.churn > self.policy.max_churn

    @property
    def shift_alarm(self) -> bool:
        return self.p_value is not None and self.p_value < self.policy.alpha

    def alarms(self) -> list[str]:
        """One readable line per signal that fired, each naming the likely cause."""
        because = f"likely cause: {self.cause} ({_WHY[self.cause]})"
        lines = []
        if self.band is not None and self.band_verdict != "within band":
            low, mean, high = self.band
            lines.append(
                f"{self.program}: accuracy {self.accuracy:.3f} is {self.band_verdict.split()[0]} "
                f"the control band [{low:.3f}, {high:.3f}] (mean {mean:.3f} ± "
                f"{self.policy.band_k:g} sd of the last {len(self.history)} nights); {because}"
            )
        if self.churn_alarm:
            lines.append(
                f"{self.program}: {self.churn:.1%} of predictions changed since the previous "
                f"night ({self.changed} of {self.common} examples, max_churn "
                f"{self.policy.max_churn:.1%}); {because}"
            )
        if self.shift_alarm:
            lines.append(
                f"{self.program}: the predicted-label distribution shifted (chi² "
                f"{self.chi2:.1f}, {_p(self.p_value)} < alpha {self.policy.alpha:g}); {because}"
            )
        return lines

    def as_rows(self) -> list[dict[str, Any]]:
        """Rows ``{check, value, limit, verdict}`` for a table; verdicts are ``ok``,
        ``alarm``, ``no verdict`` or, for the fingerprints, ``changed``/``unchanged``."""
        policy = self.policy
        band = "" if self.band is None else f"[{self.band[0]:.3f}, {self.band[2]:.3f}]"
        no_band = f"needs {policy.min_history} nights, have {len(self.history)}"
        return [
            _row(
                "accuracy",
                self.accuracy,
                band or no_band,
                None if self.band is None else self.band_verdict != "within band",
            ),
            _row("churn", self.churn, f"≤ {policy.max_churn:.3f}", None if self.churn is None else self.churn_alarm),
            _row(
                "label shift p-value",
                self.p_value,
                f"≥ {policy.alpha:g}",
                None if self.p_value is None else self.shift_alarm,
            ),
            {
                "check": "LM fingerprint",
                "value": None,
                "limit": "",
                "verdict": "changed" if self.lm_changed else "unchanged",
            },
            {
                "check": "program hash",
                "value": None,
                "limit": "",
                "verdict": "changed" if self.program_changed else "unchanged",
            },
        ]

    def to_markdown(self) -> str:
        """A GitHub job summary: alarm lines, then the table of checks."""
        alarms = [f"- ⚠️ {line}" for line in self.alarms()]
        lines = [
            f"### {self.program}: nightly drift (n={self.n})",
            "",
            *(alarms or [f"No drift alarm (cause if anything moved: {self.cause})."]),
            "",
            "| Check | Value | Limit | Verdict |",
            "|---|---:|---|---|",
        ]
        for row in self.as_rows():
            value = row["value"]
            tiny = value is not None and value < 1e-3 and row["check"].endswith("p-value")
            value = "—" if value is None else (f"{value:.1e}" if tiny else f"{value:.3f}")
            lines.append(f"| {row['check']} | {value} | {row['limit']} | {row['verdict']} |")
        return "\n".join([*lines, ""])


def _row(check: str, value: float | None, limit: str, alarm: bool | None) -> dict[str, Any]:
    verdict = "no verdict" if alarm is None else ("alarm" if alarm else "ok")
    return {"check": check, "value": value, "limit": limit, "verdict": verdict}


def assess(
    current_records: Sequence[ExampleRecord],
    previous_records: Sequence[ExampleRecord],
    history_accuracies: Sequence[float],
    current_accuracy: float,
    lm_fp_now: str,
    lm_fp_before: str | None,
    program_hash_now: str,
    program_hash_before: str | None,
    policy: DriftPolicy | None = None,
) -> DriftReport:
    """Assess one program's nightly run against its recent history.

    Args:
        current_records: Tonight's records of one program.
        previous_records: The previous night's records (empty on the first night).
        history_accuracies: Past nights' accuracies, oldest first, tonight excluded; the
            last ``policy.window`` are used.
        current_accuracy: Tonight's accuracy.
        lm_fp_now: Tonight's :func:`lm_fingerprint`; ``lm_fp_before`` the previous night's
            (None when unknown: then it counts as unchanged).
        program_hash_now: Tonight's program hash; ``program_hash_before`` likewise.
        policy: Limits; :class:`DriftPolicy` defaults when None.

    Returns:
        The report; the band's standard deviation is floored at one example (``1/n``)
        because identical cached nights would otherwise alarm on a single changed answer.
    """
    policy = policy or DriftPolicy()
    n = len(current_records)
    history = tuple(float(value) for value in history_accuracies)[-policy.window :]
    band = None
    if len(history) >= policy.min_history:
        band = control_band(history, policy.band_k, min_sd=1 / n if n else 0.0)
    changed, common, chi2, p_value = None, 0, None, None
    if current_records and previous_records:
        now_ids = {r.example_id for r in current_records}
        if now_ids & {r.example_id for r in previous_records}:
            changed, common = _churn_counts(current_records, previous_records)
        chi2, p_value = label_shift(current_records, previous_records)
    return DriftReport(
        program=current_records[0].program if current_records else "?",
        n=n,
        accuracy=float(current_accuracy),
        history=history,
        band=band,
        changed=changed,
        common=common,
        chi2=chi2,
        p_value=p_value,
        lm_changed=lm_fp_before not in (None, lm_fp_now),
        program_changed=program_hash_before not in (None, program_hash_now),
        policy=policy,
    )


def _p(p_value: float | None) -> str:
    return "p=n/a" if p_value is None else ("p<0.0001" if p_value < 1e-4 else f"p={p_value:.4f}")
