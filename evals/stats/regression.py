"""Paired comparison of a candidate session against a champion session (pure functions).

Both sessions ran one program on the same examples, so the comparison is paired: per
example we know whether each run was right. That removes the example-to-example variance,
which dominates on ~200 examples, and leaves only the run-to-run noise.

Decision rules (``alpha``, ``max_drop`` and the others come from :class:`RegressionPolicy`):

* **Accuracy** regresses when McNemar's exact test on the discordant pairs gives
  ``p < alpha`` *and* the observed delta is below ``-max_drop``; improvement mirrors it.
  False alarms: when the two runs are exchangeable (pure noise) the exact two-sided test
  rejects at most at rate ``alpha``, and by symmetry at most half of those rejections point
  down, so the false-alarm rate is at most ``alpha / 2`` (the tolerance only lowers it).
  Power: on n=212 with ~8% run-to-run flips, a true 10-point drop is caught in ~99% of
  simulated sessions (``evals/tests/test_regression.py``). A drop that is real but smaller
  than the tolerance is ``ok``: the tolerance says what the team accepts.
* **Macro-F1** has no exact paired test, so it uses the paired bootstrap: regression when the
  whole ``1 - alpha`` percentile interval is below 0 *and* the observed delta is below
  ``-max_drop`` (the same shape as accuracy, with about the same ``alpha / 2`` false alarms).
* **Recall of one diagnosis** regresses when it has at least ``min_diagnosis_support``
  examples and the candidate's Wilson upper bound is below the champion's recall minus
  ``max_diagnosis_drop``. Over ~10 examples that needs a large drop (10/10 to 5/10), so noise
  rarely fires it; diagnoses with less support are ``report only``.

Each comparison also states its power (:mod:`evals.stats.power`): the smallest true accuracy drop
the accuracy rule would catch with 80% probability on these ``n`` examples. On 22 examples
that is ~0.5, so a passing comparison there says little; ``max_detectable_drop`` makes
promotion refuse such a comparison.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from evals.config.policies import MismatchMode, RegressionPolicy
from evals.labels import DIAGNOSES, slug, unknown_label_message
from evals.records import ExampleRecord

Verdict = Literal["regression", "improvement", "ok", "report only"]
_K = len(DIAGNOSES)  # label index _K stands for an invalid answer
_LABEL_INDEX = {diagnosis: i for i, diagnosis in enumerate(DIAGNOSES)}
_Array = NDArray[Any]


class ComparisonRefused(Exception):
    """The sessions cannot be compared example by example; the message says what to do."""


@dataclass(frozen=True)
class Paired:
    """One program's records of both sessions, aligned on sorted ``example_id``; the
    ``only_in_*`` counts are the ids left out under ``on_mismatch="intersect"``."""

    program: str
    candidate: tuple[ExampleRecord, ...]
    champion: tuple[ExampleRecord, ...]
    only_in_candidate: int = 0
    only_in_champion: int = 0


@dataclass(frozen=True)
class Delta:
    """One metric of both runs, the interval of its delta and the verdict.

    Attributes:
        metric: ``"accuracy"``, ``"macro_f1"`` or ``"recall.<slug>"``.
        label: How lines name it: ``"accuracy"``, ``"macro-F1"``, ``"recall of 'migraine'"``.
        champion: The champion's value; ``candidate`` likewise.
        ci_low: Lower end of the ``1 - alpha`` interval of the delta; ``ci_high`` likewise.
            Paired bootstrap for accuracy and macro-F1; for recall, Newcombe's interval
            built from the two Wilson intervals (it ignores the pairing: on the wide side).
        p_value: McNemar's exact p-value for accuracy, else None.
        support: Examples of the diagnosis (recall only).
        champion_ci: Wilson interval of the champion's recall; ``candidate_ci`` likewise.
    """

    metric: str
    label: str
    champion: float
    candidate: float
    ci_low: float
    ci_high: float
    verdict: Verdict
    p_value: float | None = None
    support: int | None = None
    champion_ci: tuple[float, float] | None = None
    candidate_ci: tuple[float, float] | None = None

    @property
    def delta(self) -> float:
        """Candidate minus champion."""
        return self.candidate - self.champion


@dataclass(frozen=True)
class Comparison:
    """What :func:`compare` measured and decided. ``mcnemar_b`` counts examples the
    champion got right and the candidate wrong, ``mcnemar_c`` the reverse."""

    program: str
    n: int
    policy: RegressionPolicy
    accuracy: Delta
    macro_f1: Delta
    per_diagnosis: tuple[Delta, ...]
    mcnemar_b: int
    mcnemar_c: int
    only_in_candidate: int = 0
    only_in_champion: int = 0

    @cached_property
    def min_detectable_drop(self) -> float:
        """Smallest true accuracy drop the accuracy rule catches with 80% probability on these
        ``n`` examples, at the observed discordance (:mod:`evals.stats.power`); 1.0 when none is."""
        from evals.stats.power import discordance_estimate, minimum_detectable_drop

        discordance = discordance_estimate(self.n, self.mcnemar_b, self.mcnemar_c)
        return minimum_detectable_drop(self.n, discordance, self.policy.alpha, self.policy.max_drop)

    def too_weak(self) -> str | None:
        """Why the comparison is too weak for ``max_detectable_drop``, or None."""
        limit = self.policy.max_detectable_drop
        found = self.min_detectable_drop
        if limit is None or found <= limit:
            return None
        return (
            f"{self.program}: comparison too weak: on n={self.n} it could only see accuracy drops of "
            f"≥ {found:.2f}, thresholds require {limit:.2f} (regression.max_detectable_drop)"
        )

    @property
    def deltas(self) -> tuple[Delta, ...]:
        """Accuracy, macro-F1, then recall of each diagnosis present, in label order."""
        return (self.accuracy, self.macro_f1, *self.per_diagnosis)

    def regressions(self) -> list[str]:
        """One readable line per metric or diagnosis judged a regression."""
        return [_line(self, d) for d in self.deltas if d.verdict == "regression"]

    def improvements(self) -> list[str]:
        """One readable line per metric or diagnosis judged an improvement."""
        return [_line(self, d) for d in self.deltas if d.verdict == "improvement"]

    def notes(self) -> list[str]:
        """Report-only lines: diagnoses whose recall moved enough to be flagged but that
        have fewer than ``min_diagnosis_support`` examples."""
        lines = []
        for d in self.per_diagnosis:
            assert d.candidate_ci is not None and d.support is not None  # recall deltas
            fired = _recall_rule(d.champion, d.candidate_ci, self.policy)
            if d.verdict == "report only" and fired != "ok":
                lines.append(
                    f"{_line(self, d, fired)}, but report only: n={d.support} < "
                    f"min_diagnosis_support {self.policy.min_diagnosis_support}"
                )
        return lines

    def as_rows(self) -> list[dict[str, Any]]:
        """Rows of a comparison table, one per :attr:`deltas` entry, with keys ``metric``,
        ``champion``, ``candidate``, ``delta``, ``ci_low``, ``ci_high``, ``p_value``,
        ``verdict`` and ``support`` (None for accuracy and macro-F1)."""
        keys = ("metric", "champion", "candidate", "delta", "ci_low", "ci_high", "p_value", "verdict", "support")
        return [{key: getattr(d, key) for key in keys} for d in self.deltas]

    def to_markdown(self) -> str:
        """A GitHub job summary: verdict lines, the session table, per-diagnosis details."""
        return _markdown(self)


def pair_records(
    candidate: Sequence[ExampleRecord],
    champion: Sequence[ExampleRecord],
    on_mismatch: MismatchMode = "refuse",
) -> Paired:
    """Align one program's records of two sessions on ``example_id``.

    Args:
        candidate: The new session's records of one program.
        champion: The champion session's records of the same program.
        on_mismatch: ``"refuse"`` to raise when the id sets differ, ``"intersect"`` to
            keep the shared ids only.

    Raises:
        ComparisonRefused: The id sets differ (under ``"refuse"``), no id is shared, or a
            shared id has another gold label (the sessions ran on different data).
        ValueError: A session holds two records of one id, or records of several programs.
    """
    new, old = _by_id(candidate, "candidate"), _by_id(champion, "champion")
    program = next(iter([*candidate, *champion]), None)
    name = program.program if program else "?"
    only_new, only_old = len(new.keys() - old.keys()), len(old.keys() - new.keys())
    common = sorted(new.keys() & old.keys())
    advice = "run both sessions on the same split, sample size and seed"
    if (only_new or only_old) and on_mismatch != "intersect":
        raise ComparisonRefused(
            f"{name}: cannot compare with the champion: {only_new} example ids only in the "
            f"candidate, {only_old} only in the champion; {advice} (or set "
            f"regression.on_mismatch: intersect to compare the {len(common)} shared ids)"
        )
    if not common:
        raise ComparisonRefused(f"{name}: no example id in common with the champion; {advice}")
    changed = [i for i in common if new[i].gold != old[i].gold]
    if changed:
        raise ComparisonRefused(
            f"{name}: {len(changed)} shared example ids have another gold label in the "
            f"champion (first: {changed[0]!r}), so the sessions ran on different data; {advice}"
        )
    return Paired(name, tuple(new[i] for i in common), tuple(old[i] for i in common), only_new, only_old)


def _by_id(records: Sequence[ExampleRecord], side: str) -> dict[str, ExampleRecord]:
    by_id: dict[str, ExampleRecord] = {}
    for record in records:
        if record.example_id in by_id:
            raise ValueError(f"{side} session: duplicate record for example {record.example_id!r}")
        by_id[record.example_id] = record
    programs = sorted({record.program for record in records})
    if len(programs) > 1:
        raise ValueError(f"{side} session: records of several programs {programs}; pass one")
    return by_id


def compare(
    candidate: Sequence[ExampleRecord],
    champion: Sequence[ExampleRecord],
    policy: RegressionPolicy | None = None,
) -> Comparison:
    """Compare one program's candidate session with its champion session.

    Args:
        candidate: The new session's records of one program.
        champion: The champion's records of the same program.
        policy: Decision parameters; :class:`RegressionPolicy` defaults when None.

    Returns:
        Accuracy and macro-F1 deltas with paired bootstrap intervals, McNemar's exact test,
        per-diagnosis recall deltas with Wilson intervals, and a verdict for each.

    Raises:
        ComparisonRefused: See :func:`pair_records`.
        ValueError: See :func:`pair_records`; or a label is not one of the 22 diagnoses.
    """
    policy = policy or RegressionPolicy()
    paired = pair_records(candidate, champion, policy.on_mismatch)
    gold = _encode(paired.candidate, lambda r: r.gold)
    new = _encode(paired.candidate, lambda r: r.predicted)
    old = _encode(paired.champion, lambda r: r.predicted)
    n = len(gold)
    samples = np.random.default_rng(policy.seed).integers(0, n, (policy.bootstrap_samples, n))
    b, c = int(np.sum((old == gold) & (new != gold))), int(np.sum((old != gold) & (new == gold)))
    return Comparison(
        program=paired.program,
        n=n,
        policy=policy,
        accuracy=_accuracy_delta(gold, new, old, samples, policy),
        macro_f1=_macro_f1_delta(gold, new, old, samples, policy),
        per_diagnosis=_recall_deltas(gold, new, old, policy),
        mcnemar_b=b,
        mcnemar_c=c,
        only_in_candidate=paired.only_in_candidate,
        only_in_champion=paired.only_in_champion,
    )


def _encode(records: Sequence[ExampleRecord], label_of: Callable[[ExampleRecord], str | None]) -> _Array:
    """Label indices in ``DIAGNOSES`` order; None (invalid) becomes ``_K``."""
    codes = np.empty(len(records), dtype=np.int64)
    for i, record in enumerate(records):
        label = label_of(record)
        if label is not None and label not in _LABEL_INDEX:
            raise ValueError(f"example {record.example_id!r}: {unknown_label_message(label)}")
        codes[i] = _K if label is None else _LABEL_INDEX[label]
    return codes


def mcnemar_p(b: int, c: int) -> float:
    """McNemar's exact two-sided p-value from the discordant counts (1.0 when none)."""
    from statsmodels.stats.contingency_tables import mcnemar  # slow import: used here only

    # Only the discordant cells enter the exact test; the diagonal is a placeholder.
    return 1.0 if b + c == 0 else min(1.0, float(mcnemar([[0, b], [c, 0]], exact=True).pvalue))


def _accuracy_delta(gold: _Array, new: _Array, old: _Array, samples: _Array, policy: RegressionPolicy) -> Delta:
    diff = (new == gold).astype(np.float64) - (old == gold).astype(np.float64)
    low, high = _percentile_interval(diff[samples].mean(axis=1), policy.alpha)
    champion, candidate = float(np.mean(old == gold)), float(np.mean(new == gold))
    p_value = mcnemar_p(int(np.sum(diff < 0)), int(np.sum(diff > 0)))
    delta = candidate - champion
    verdict: Verdict = "ok"
    if p_value < policy.alpha and abs(delta) > policy.max_drop:
        verdict = "regression" if delta < 0 else "improvement"
    return Delta("accuracy", "accuracy", champion, candidate, low, high, verdict, p_value)


def _macro_f1_delta(gold: _Array, new: _Array, old: _Array, samples: _Array, policy: RegressionPolicy) -> Delta:
    whole = np.arange(len(gold))[None, :]
    champion, candidate = float(macro_f1(gold, old, whole)[0]), float(macro_f1(gold, new, whole)[0])
    resampled = macro_f1(gold, new, samples) - macro_f1(gold, old, samples)
    low, high = _percentile_interval(resampled, policy.alpha)
    delta = candidate - champion
    verdict: Verdict = "ok"
    if high < 0 and delta < -policy.max_drop:
        verdict = "regression"
    elif low > 0 and delta > policy.max_drop:
        verdict = "improvement"
    return Delta("macro_f1", "macro-F1", champion, candidate, low, high, verdict)


def macro_f1(gold: _Array, predicted: _Array, samples: _Array) -> _Array:
    """Macro-F1 of each resample (row of the ``(B, n)`` index array ``samples``).

    Label indices as in ``DIAGNOSES``, 22 for invalid. Per diagnosis F1 = 2·hits /
    (support + predicted), which equals 2PR/(P+R) and is 0 without a hit; the mean runs
    over the diagnoses with support > 0 in that resample, as in :func:`evals.stats.metrics.aggregate`.
    """
    rows = samples.shape[0]
    offset = (np.arange(rows) * (_K + 1))[:, None]
    g, p = gold[samples], predicted[samples]

    def counts(keys: _Array) -> _Array:
        flat = np.bincount((keys + offset).ravel(), minlength=rows * (_K + 1))
        return flat.reshape(rows, _K + 1)[:, :_K]

    support, hits = counts(g), counts(np.where(g == p, g, _K))
    denominator = support + counts(p)
    f1 = np.divide(2.0 * hits, denominator, out=np.zeros(hits.shape), where=denominator > 0)
    present = support > 0
    result: _Array = (f1 * present).sum(axis=1) / np.maximum(present.sum(axis=1), 1)
    return result


def _percentile_interval(values: _Array, alpha: float) -> tuple[float, float]:
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def _recall_deltas(gold: _Array, new: _Array, old: _Array, policy: RegressionPolicy) -> tuple[Delta, ...]:
    """Recall deltas of the diagnoses present among the paired examples, in label order."""
    from statsmodels.stats.proportion import proportion_confint  # slow import

    present = np.flatnonzero(np.bincount(gold, minlength=_K))
    n = np.bincount(gold, minlength=_K)[present]
    old_hits = np.bincount(gold[old == gold], minlength=_K)[present]
    new_hits = np.bincount(gold[new == gold], minlength=_K)[present]
    old_low, old_high = proportion_confint(old_hits, n, alpha=policy.alpha, method="wilson")
    new_low, new_high = proportion_confint(new_hits, n, alpha=policy.alpha, method="wilson")
    deltas = []
    for j, label in enumerate(present):
        before, after = float(old_hits[j] / n[j]), float(new_hits[j] / n[j])
        old_ci = (float(old_low[j]), float(old_high[j]))
        new_ci = (float(new_low[j]), float(new_high[j]))
        # Newcombe's hybrid score interval of after - before.
        low = after - before - math.hypot(after - new_ci[0], old_ci[1] - before)
        high = after - before + math.hypot(new_ci[1] - after, before - old_ci[0])
        fired = _recall_rule(before, new_ci, policy)
        verdict: Verdict = "report only" if n[j] < policy.min_diagnosis_support else fired
        diagnosis = DIAGNOSES[label]
        deltas.append(
            Delta(
                f"recall.{slug(diagnosis)}",
                f"recall of {diagnosis!r}",
                before,
                after,
                low,
                high,
                verdict,
                None,
                int(n[j]),
                old_ci,
                new_ci,
            )
        )
    return tuple(deltas)


def _recall_rule(before: float, new_ci: tuple[float, float], policy: RegressionPolicy) -> Verdict:
    """The per-diagnosis rule without the support condition."""
    if new_ci[1] < before - policy.max_diagnosis_drop:
        return "regression"
    return "improvement" if new_ci[0] > before + policy.max_diagnosis_drop else "ok"


def _line(c: Comparison, d: Delta, verdict: str | None = None) -> str:
    """One line, e.g. ``knn: accuracy 0.610 → 0.520 (Δ −0.090, ...) is a regression``."""
    level = c.policy.confidence
    if d.candidate_ci is None:
        test = "paired bootstrap" if d.p_value is None else f"McNemar {_p(d.p_value)}"
        why = f"Δ {_signed(d.delta)}, {level} CI [{_num(d.ci_low)}, {_num(d.ci_high)}], {test}"
    else:
        drop = _num(c.policy.max_diagnosis_drop)
        bound = (
            f"upper bound {_num(d.candidate_ci[1])} < {_num(d.champion)} − {drop}"
            if (verdict or d.verdict) == "regression"
            else f"lower bound {_num(d.candidate_ci[0])} > {_num(d.champion)} + {drop}"
        )
        why = f"n={d.support}, candidate {level} Wilson {bound}"
    verdict = verdict or d.verdict
    article = "an" if verdict[0] in "aeiou" else "a"
    return f"{c.program}: {d.label} {_num(d.champion)} → {_num(d.candidate)} ({why}) is {article} {verdict}"


def _markdown(c: Comparison) -> str:
    level = c.policy.confidence
    lines = [f"### {c.program}: candidate vs champion (n={c.n}, {level} intervals)", ""]
    if c.only_in_candidate or c.only_in_champion:
        lines += [
            f"Compared on the {c.n} shared examples; {c.only_in_candidate} only in the "
            f"candidate and {c.only_in_champion} only in the champion were left out.",
            "",
        ]
    flagged = [f"- ❌ {line}" for line in c.regressions()]
    flagged += [f"- ✅ {line}" for line in c.improvements()]
    flagged += [f"- ℹ️ {line}" for line in c.notes()]
    lines += [*(flagged or ["No regression and no improvement beyond noise and tolerance."]), ""]
    lines += [
        f"Power: on these {c.n} examples the gate catches a true accuracy drop of "
        f"{_num(c.min_detectable_drop)} or more with 80% probability (minimum detectable drop).",
        "",
    ]
    lines += [
        f"| Metric | Champion | Candidate | Δ | {level} CI of Δ | p | Verdict |",
        "|---|---:|---:|---:|---|---:|---|",
    ]
    for d in (c.accuracy, c.macro_f1):
        p_value = "—" if d.p_value is None else _p(d.p_value)[1:].lstrip("=")
        lines.append(
            f"| {d.label} | {_num(d.champion)} | {_num(d.candidate)} | "
            f"{_signed(d.delta)} | [{_num(d.ci_low)}, {_num(d.ci_high)}] | "
            f"{p_value} | {d.verdict} |"
        )
    lines += [
        "",
        f"<details><summary>Recall per diagnosis (Wilson {level} intervals; McNemar "
        f"b={c.mcnemar_b}, c={c.mcnemar_c})</summary>",
        "",
        "| Diagnosis | n | Champion | Candidate | Δ | Verdict |",
        "|---|---:|---|---|---:|---|",
    ]
    for d in c.per_diagnosis:
        diagnosis = d.metric.removeprefix("recall.").replace("_", " ")  # undoes labels.slug
        lines.append(
            f"| {diagnosis} | {d.support} | {_with_ci(d.champion, d.champion_ci)} | "
            f"{_with_ci(d.candidate, d.candidate_ci)} | {_signed(d.delta)} | "
            f"{d.verdict} |"
        )
    return "\n".join([*lines, "", "</details>", ""])


def _num(value: float) -> str:
    """Three decimals with a true minus sign, never ``−0.000``."""
    text = f"{value:.3f}"
    return "0.000" if text == "-0.000" else text.replace("-", "−")


def _signed(value: float) -> str:
    text = _num(value)
    return text if text.startswith("−") or text == "0.000" else f"+{text}"


def _p(p_value: float) -> str:
    return "p<0.001" if p_value < 0.001 else f"p={p_value:.3f}"


def _with_ci(value: float, ci: tuple[float, float] | None) -> str:
    return _num(value) if ci is None else f"{_num(value)} [{_num(ci[0])}, {_num(ci[1])}]"
