"""Render a :class:`ReportData` as one self-contained HTML page (a pure function).

The page reads top-down in the order a reviewer asks: did it pass and what failed; how
each program did (and by how much it beats the no-LM reference); where each program is
weak (recall bars, confusion matrix); how it compares with its champion and how large a
drop that comparison could see; how accuracy moved over recent sessions; the examples
themselves; the parameters last, folded. CSS, script, chart (SVG) and data (JSON) are
inline: the file works offline, mailed or attached to a CI run. Every text is escaped;
the examples' JSON is escaped so that no ``</script>`` can end its block.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Iterable, Mapping, Sequence

from evals.results.html_assets import CSS, JS, PALETTE
from evals.results.html_data import (
    CheckRow,
    Confusion,
    ExampleRow,
    ExtraSection,
    GateRow,
    ProgramRow,
    RecallBar,
    ReportData,
    TrendPoint,
)

SECTION_IDS = ("verdict", "checks", "summary", "recall", "confusion", "regression", "trend", "explorer", "parameters")
"""Sections every report has, in page order (extra tables come between trend and explorer)."""
UNMET_SHOWN = 40
"""Checks not met listed before the fold; the full list is one click away."""
EXAMPLE_COLUMNS = ("program", "id", "symptoms", "gold", "predicted", "correct", "invalid", "error", "latency_ms")
_TITLES = {
    "verdict": "Verdict",
    "checks": "Checks not met",
    "summary": "Programs",
    "recall": "Recall per diagnosis",
    "confusion": "Confusion matrix",
    "regression": "Champion comparison",
    "trend": "Accuracy over sessions",
    "explorer": "Examples",
    "parameters": "Parameters",
}


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def render_html(data: ReportData) -> str:
    """Return the whole page for ``data``."""
    nav = "".join(f'<a href="#{i}">{esc(_TITLES[i])}</a>' for i in SECTION_IDS)
    body = [
        _verdict(data),
        _checks(data),
        _summary(data),
        _recall(data),
        _confusion(data),
        _regression(data),
        _trend(data.trends),
        *(_extra(i, s) for i, s in enumerate(data.extras)),
        _explorer(data),
        _parameters(data),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(data.title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<header><nav><h1>{esc(data.title)}</h1>{nav}</nav></header>\n<main>\n"
        + "\n".join(body)
        + f"\n</main>\n{_examples_json(data.examples)}\n<script>{JS}</script>\n</body>\n</html>\n"
    )


def _section(ident: str, inner: str, title: str | None = None, css: str = "") -> str:
    heading = esc(title or _TITLES.get(ident, ident))
    classes = f' class="{css}"' if css else ""
    return f'<section id="{ident}"{classes}>\n<h2>{heading}</h2>\n{inner}\n</section>'


def _badge(status: str) -> str:
    """An ASCII word on a coloured badge: no glyph a headless browser's fonts may lack."""
    tone = {"PASS": "pass", "FAIL": "fail", "WARN": "warn", "pass": "pass", "fail": "fail", "unavailable": "warn"}.get(
        status, "none"
    )
    return f'<span class="badge {tone}">{esc(status.upper())}</span>'


def _table(headers: Sequence[str], rows: Iterable[str], numeric: Sequence[int] = (), ident: str = "") -> str:
    head = "".join(f"<th{' class=num' if i in numeric else ''}>{esc(h)}</th>" for i, h in enumerate(headers))
    attr = f' id="{ident}"' if ident else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>\n" + "\n".join(rows) + "\n</tbody></table>"


def _tr(cells: Iterable[str], bad: bool = False) -> str:
    return f"<tr{' class=bad' if bad else ''}>" + "".join(cells) + "</tr>"


def _td(text: object, numeric: bool = False, raw: bool = False, css: str = "") -> str:
    classes = " ".join(c for c in (css, "num" if numeric else "") if c)
    attribute = f' class="{classes}"' if classes else ""
    return f"<td{attribute}>{text if raw else esc(text)}</td>"


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _signed(value: float | None) -> str:
    if value is None:
        return "-"
    tone = "pos" if value > 0 else "neg" if value < 0 else ""
    return f'<span class="{tone}">{value:+.3f}</span>'


def _verdict(data: ReportData) -> str:
    verdict = "PASS" if data.passed else "FAIL"
    met = sum(c.verdict == "PASS" for c in data.checks)
    n = max((p.n for p in data.programs), default=0)
    facts = [
        f"{len(data.programs)} programs",
        f"{n} examples each",
        f"{met}/{len(data.checks)} checks met",
        f"regression gate: {data.gate_status}",
    ]
    if data.reference:
        facts.append(f"reference: {data.reference}")
    inner = f'<p><span class="big">{verdict}</span><span class="facts">{esc("; ".join(facts))}</span></p>'
    if data.error_lines:
        inner += '<ul class="errors">' + "".join(f"<li>ERROR: {esc(line)}</li>" for line in data.error_lines) + "</ul>"
    if data.notes:
        inner += '<ul class="warnings">' + "".join(f"<li>{esc(line)}</li>" for line in data.notes) + "</ul>"
    if data.mlflow_hint:
        inner += f'<p class="note">MLflow: {esc(data.mlflow_hint)}</p>'
    return _section("verdict", inner, css=verdict.lower())


def _check_rows(checks: Iterable[CheckRow]) -> str:
    headers = ("check", "program", "metric", "value", "limit", "support")
    rows = (
        _tr(
            (
                _td(_badge(c.verdict), raw=True),
                _td(c.program),
                _td(c.metric),
                _td(c.value, True),
                _td(c.limit, True),
                _td("" if c.support is None else c.support, True),
            ),
            c.verdict == "FAIL",
        )
        for c in checks
    )
    return _table(headers, rows, numeric=(3, 4, 5))


def _checks(data: ReportData) -> str:
    unmet = data.unmet
    if not data.checks:
        inner = '<p class="note">No thresholds were checked.</p>'
    elif unmet:
        failing = sum(c.verdict == "FAIL" for c in unmet)
        inner = (
            f'<p class="note">{failing} failing, {len(unmet) - failing} missed but not enforced '
            "(support below min_support).</p>" + _check_rows(unmet[:UNMET_SHOWN])
        )
        if len(unmet) > UNMET_SHOWN:
            inner += f'<p class="note">... and {len(unmet) - UNMET_SHOWN} more, in the full list below.</p>'
    else:
        inner = f'<p class="note">All {len(data.checks)} checks met.</p>'
    if data.checks:
        inner += f"<details><summary>All {len(data.checks)} checks</summary>{_check_rows(data.checks)}</details>"
    return _section("checks", inner)


def _bar(value: float | None, bad: bool = False) -> str:
    if value is None:
        return '<span class="bar empty"></span>'
    width = max(0.0, min(1.0, value)) * 100
    return f'<span class="bar{" bad" if bad else ""}"><i style="width:{width:.1f}%"></i></span>'


def _summary(data: ReportData) -> str:
    gain_header = f"gain over {data.reference}" if data.reference else "gain over reference"
    headers = (
        "program",
        "status",
        "n",
        "accuracy",
        gain_header,
        "macro-F1",
        "invalid",
        "errors",
        "latency p50 / p95",
        "tokens in / out",
        "cost / per example",
    )
    rows = (_summary_row(p) for p in data.programs)
    note = (
        "Gain: accuracy minus the reference's on the same examples (a program with LM that does not beat it "
        "is not worth its cost)."
        if data.reference
        else "No reference program ran: no gain to report."
    )
    return _section("summary", _table(headers, rows, numeric=tuple(range(2, 11))) + f'<p class="note">{esc(note)}</p>')


def _summary_row(p: ProgramRow) -> str:
    name = _breakable(p.name) + (' <span class="badge none">REF</span>' if p.reference else "")
    return _tr(
        (
            _td(name, raw=True),
            _td(_badge("FAIL" if p.failed else "PASS"), raw=True),
            _td(p.n, True),
            _td(_bar(p.accuracy) + _score(p.accuracy), True, raw=True),
            _td(_signed(p.gain_over_reference), True, raw=True),
            _td(_score(p.macro_f1), True),
            _td(_score(p.invalid_rate), True),
            _td(_score(p.error_rate), True),
            _td(f"{p.latency_p50_ms / 1000:,.1f} / {p.latency_p95_ms / 1000:,.1f} s", True),
            _td(f"{p.prompt_tokens:,} / {p.completion_tokens:,}", True),
            _td(cost_text(p.cost_usd, p.cost_per_example_usd), True),
        ),
        p.failed,
    )


def cost_text(total_usd: float, per_example_usd: float) -> str:
    """``$0.0123 / $0.0001`` (total / per example), or ``—`` when the LM reported no cost (local models)."""
    return f"${total_usd:,.4f} / ${per_example_usd:,.4f}" if total_usd > 0 else "—"


def _breakable(name: str) -> str:
    """A program name that may wrap after ``+`` (``zero_shot+bootstrap_few_shot``)."""
    return "+<wbr>".join(esc(part) for part in name.split("+"))


def _recall(data: ReportData) -> str:
    programs = list(data.recalls)
    if not programs:
        return _section("recall", '<p class="note">No programs were evaluated.</p>')
    by_program = {p: {b.diagnosis: b for b in bars} for p, bars in data.recalls.items()}
    diagnoses = list(dict.fromkeys(b.diagnosis for bars in data.recalls.values() for b in bars))
    rows = []
    for diagnosis in diagnoses:
        cells = [_td(diagnosis)]
        for program in programs:
            bar = by_program[program].get(diagnosis)
            cells.append(_td(_recall_cell(bar), raw=True, css="rc"))
        rows.append(_tr(cells, any(by_program[p].get(diagnosis, _NO_BAR).floor_failed for p in programs)))
    note = "Hits / examples of each diagnosis; red: a recall floor of thresholds.yaml failed; striped: no example."
    head = _table(("diagnosis", *programs), rows)
    for program in programs:
        head = head.replace(f"<th>{esc(program)}</th>", f"<th>{_breakable(program)}</th>", 1)
    return _section("recall", f'<p class="note">{note}</p>' + head)


_NO_BAR = RecallBar("", 0, 0)


def _recall_cell(bar: RecallBar | None) -> str:
    if bar is None or not bar.support:
        return _bar(None) + "<small>no example</small>"
    return f"{_bar(bar.recall, bar.floor_failed)}{bar.recall:.2f} <small>{bar.hits}/{bar.support}</small>"


def _confusion(data: ReportData) -> str:
    if not data.confusions:
        return _section("confusion", '<p class="note">No programs were evaluated.</p>')
    options = "".join(f'<option value="{esc(p)}">{esc(p)}</option>' for p in data.confusions)
    picker = f'<div class="controls"><label>program <select id="cm-program">{options}</select></label></div>'
    boxes = "".join(
        f'<div class="cm-box" data-program="{esc(p)}"><h3>{esc(p)}</h3>{_heat_table(c)}</div>'
        for p, c in data.confusions.items()
    )
    note = "Rows: true diagnosis; columns: answer (last: no valid label). Shade: share of the row."
    return _section("confusion", f'<p class="note">{note}</p>{picker}{boxes}')


def _heat_table(c: Confusion) -> str:
    head = "<th></th>" + "".join(f'<th class="rot">{esc(col)}</th>' for col in c.columns)
    rows = []
    for i, (label, counts) in enumerate(zip(c.rows, c.counts, strict=True)):
        total = sum(counts)
        cells = []
        for j, count in enumerate(counts):
            share = count / total if total else 0.0
            rgb = "26,127,55" if i == j else "198,40,40"
            colour = "#fff" if share > 0.55 else "#222"
            style = f' style="background:rgba({rgb},{share:.2f});color:{colour}"' if count else ""
            title = f"{label} -> {c.columns[j]}: {count}"
            cells.append(f'<td{" class=diag" if i == j else ""}{style} title="{esc(title)}">{count or ""}</td>')
        rows.append(f'<tr><th class="row">{esc(label)}</th>{"".join(cells)}</tr>')
    return f'<table class="cm"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _regression(data: ReportData) -> str:
    if not data.gates:
        return _section("regression", '<p class="note">The regression gate did not run.</p>')
    headers = (
        "program",
        "gate",
        "champion",
        "candidate",
        "change",
        "95% interval",
        "McNemar p",
        "n",
        "min detectable drop",
    )
    rows = (_gate_row(g) for g in data.gates)
    reasons = "".join(f"<li>{esc(g.program)}: {esc(g.reason)}</li>" for g in data.gates if g.reason)
    weak = "".join(f"<li>{esc(g.too_weak)}</li>" for g in data.gates if g.too_weak)
    note = (
        "Paired on the same examples. Min detectable drop: the smallest true accuracy drop this comparison "
        "catches with 80% power (exact McNemar at the observed disagreement); a real drop smaller than it "
        "usually passes unseen."
    )
    inner = f'<p class="note">Gate: {_badge(data.gate_status)} {esc(note)}</p>' + _table(
        headers, rows, numeric=tuple(range(2, 9))
    )
    inner += f'<ul class="warnings">{reasons}{weak}</ul>' if reasons or weak else ""
    return _section("regression", inner)


def _gate_row(g: GateRow) -> str:
    ci = "-" if g.ci is None else f"[{g.ci[0]:+.3f}, {g.ci[1]:+.3f}]"
    p = "-" if g.p_value is None else ("<0.001" if g.p_value < 0.001 else f"{g.p_value:.3f}")
    return _tr(
        (
            _td(g.program),
            _td(_badge(g.status), raw=True),
            _td(_score(g.champion), True),
            _td(_score(g.candidate), True),
            _td(_signed(g.delta), True, raw=True),
            _td(ci, True),
            _td(p, True),
            _td("-" if g.n is None else g.n, True),
            _td(_score(g.min_detectable_drop), True),
        ),
        g.status == "fail",
    )


def _trend(trends: Mapping[str, Sequence[TrendPoint]]) -> str:
    if not any(trends.values()):
        return _section("trend", '<p class="note">No session history in MLflow yet.</p>')
    return _section(
        "trend",
        '<p class="note">Accuracy of each program in the recent sessions logged to MLflow '
        "(oldest left, this session right).</p>" + trend_svg(trends),
    )


def trend_svg(trends: Mapping[str, Sequence[TrendPoint]], width: int = 880, height: int = 280) -> str:
    """A line chart of accuracy (0-1) per program over sessions, evenly spaced by session, as inline SVG."""
    left, right, top, bottom = 44, 48, 12, 34
    times = sorted({p.started_at for points in trends.values() for p in points})
    index = {t: i for i, t in enumerate(times)}
    span = max(len(times) - 1, 1)

    def x(t: float) -> float:
        return left + (width - left - right) * (index[t] / span if len(times) > 1 else 0.5)

    def y(v: float) -> float:
        return top + (height - top - bottom) * (1 - max(0.0, min(1.0, v)))

    parts = [
        f'<svg id="trend-chart" role="img" aria-label="accuracy per session" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">'
    ]
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#e5e7eb"/>')
        parts.append(f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:.2f}</text>')
    for t in _ticks(times):
        label = time.strftime("%m-%d %H:%M", time.localtime(t))
        parts.append(f'<text x="{x(t):.1f}" y="{height - 12}" text-anchor="middle">{label}</text>')
    legend = []
    for k, (program, points) in enumerate(trends.items()):
        colour = PALETTE[k % len(PALETTE)]
        coords = " ".join(f"{x(p.started_at):.1f},{y(p.accuracy):.1f}" for p in points)
        if len(points) > 1:
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{coords}"/>')
        for p in points:
            tip = f"{program}: {p.accuracy:.3f} ({time.strftime('%Y-%m-%d %H:%M', time.localtime(p.started_at))})"
            parts.append(
                f'<circle cx="{x(p.started_at):.1f}" cy="{y(p.accuracy):.1f}" r="3.5" fill="{colour}">'
                f"<title>{esc(tip)}</title></circle>"
            )
        legend.append(f'<span><i style="background:{colour}"></i>{esc(program)}</span>')
    parts.append("</svg>")
    return "".join(parts) + f'<div class="legend">{"".join(legend)}</div>'


def _ticks(times: Sequence[float], most: int = 6) -> list[float]:
    """At most ``most`` session times to label, always the first and the last."""
    if len(times) <= most:
        return list(times)
    step = (len(times) - 1) / (most - 1)
    return [times[round(i * step)] for i in range(most)]


def _extra(position: int, section: ExtraSection) -> str:
    title = section.title
    slug = "".join(ch if ch.isalnum() else "-" for ch in title.lower()).strip("-")
    note = section.note
    inner = (f'<p class="note">{esc(note)}</p>' if note else "") + _table(
        section.headers, (_tr(_td(cell) for cell in row) for row in section.rows)
    )
    return _section(f"extra-{position}-{slug}", inner, title=title)


def _explorer(data: ReportData) -> str:
    controls = (
        '<div class="controls">'
        '<label>program <select id="f-program"><option value="">all</option></select></label>'
        '<label>diagnosis <select id="f-gold"><option value="">all</option></select></label>'
        '<label>answer <select id="f-outcome"><option value="">all</option>'
        '<option value="wrong" selected>wrong</option><option value="right">right</option>'
        '<option value="invalid">no valid label</option></select></label>'
        '<label>search <input id="f-text" type="search" placeholder="symptoms, id, answer"></label>'
        '<span id="explorer-count" class="note"></span></div>'
    )
    headers = ("program", "id", "symptoms", "gold", "answer", "error", "latency ms")
    table = _table(headers, [], ident="explorer-table").replace("<tbody>", '<tbody id="explorer-body">')
    table = f'<div class="scroll">{table}</div>'
    fallback = "<noscript><p>The explorer needs JavaScript; predictions.csv has the same rows.</p></noscript>"
    note = f'<p class="note">{len(data.examples)} examples; texts are redacted.</p>'
    return _section("explorer", note + controls + table + fallback)


def _examples_json(examples: Sequence[ExampleRow]) -> str:
    rows = [
        [e.program, e.example_id, e.symptoms, e.gold, e.predicted, e.correct, e.invalid, e.error, e.latency_ms]
        for e in examples
    ]
    payload = script_json({"columns": EXAMPLE_COLUMNS, "rows": rows})
    return f'<script type="application/json" id="examples-data">{payload}</script>'


def script_json(value: object) -> str:
    """JSON safe inside ``<script>``: ``<``, ``>`` and ``&`` are escaped, so ``</script>`` or ``<!--`` cannot occur."""
    text = json.dumps(value, ensure_ascii=True, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _parameters(data: ReportData) -> str:
    rows = (_tr((_td(k), _td(v))) for k, v in data.params)
    inner = f"<details><summary>{len(data.params)} parameters</summary>{_table(('parameter', 'value'), rows)}</details>"
    return _section("parameters", inner)
