"""The HTML report as a pure function of ReportData: order, content, escaping, self-containment."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest

from evals.results.html import SECTION_IDS, render_html, script_json, trend_svg
from evals.results.html_data import CheckRow, ReportData, TrendPoint
from evals.stats.metrics import aggregate
from evals.stats.reference import gains_over_reference
from tests.report_samples import HOSTILE, sample_data, sample_records


@pytest.fixture(scope="module")
def data() -> ReportData:
    return sample_data()


@pytest.fixture(scope="module")
def page(data: ReportData) -> str:
    return render_html(data)


def _section(page: str, ident: str) -> str:
    match = re.search(rf'<section id="{ident}"[^>]*>(.*?)</section>', page, re.S)
    assert match, f"no section {ident}"
    return match.group(1)


def test_sections_in_reading_order(page: str) -> None:
    positions = [page.index(f'<section id="{ident}"') for ident in SECTION_IDS]
    assert positions == sorted(positions)
    # Extra tables come between the trend and the explorer; parameters are last and folded.
    assert page.index("<h2>Parameters</h2>") > page.index('<section id="explorer"')
    assert "<details><summary>28 parameters</summary>" in _section(page, "parameters")


def test_verdict_first_with_the_failing_lines(page: str, data: ReportData) -> None:
    verdict = _section(page, "verdict")
    assert page.index('<section id="verdict" class="fail">') < page.index('<section id="summary"')
    assert '<span class="big">FAIL</span>' in verdict
    assert "ERROR: knn_few_shot: accuracy" in verdict
    assert "incomplete: worker gw1 crashed" in verdict
    passing = render_html(replace(data, passed=True, error_lines=(), notes=()))
    assert '<span class="big">PASS</span>' in _section(passing, "verdict")


def test_checks_lead_with_the_unmet_and_fold_the_rest(page: str, data: ReportData) -> None:
    checks = _section(page, "checks")
    shown, folded = checks.split("<details>", 1)
    assert shown.count("<tr") == 1 + len(data.unmet)  # header + unmet rows only
    assert "knn_few_shot" in shown and "recall.allergy" not in shown
    assert folded.count('<span class="badge') == len(data.checks)
    all_met = replace(
        data, checks=tuple(CheckRow("p", f"recall.d{i}", "1.000", ">= 0.000", "PASS") for i in range(110))
    )
    shown = _section(render_html(all_met), "checks").split("<details>", 1)[0]
    assert "All 110 checks met." in shown and "<table" not in shown
    all_failed = replace(all_met, checks=tuple(replace(c, verdict="FAIL") for c in all_met.checks))
    shown = _section(render_html(all_failed), "checks").split("<details>", 1)[0]
    assert shown.count("<tr") == 1 + 40 and "and 70 more" in shown


def test_no_glyphs_a_headless_browser_lacks(page: str) -> None:
    assert not {"\u2705", "\u274c", "\u2713", "\u2717", "\u2714"} & set(page)
    assert '<span class="badge pass">PASS</span>' in page and '<span class="badge fail">FAIL</span>' in page


def test_self_contained(page: str) -> None:
    assert "<link" not in page
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert not re.search(r"<script[^>]+src=", page)
    assert "url(" not in page


def test_examples_json_cannot_end_its_script_block(page: str, data: ReportData) -> None:
    block = re.search(r'<script type="application/json" id="examples-data">(.*?)</script>', page, re.S)
    assert block is not None
    text = block.group(1)
    assert "<" not in text and ">" not in text
    rows = json.loads(text)["rows"]
    assert len(rows) == len(data.examples)
    hostile = [row for row in rows if row[2].startswith("chest pain")]
    assert hostile and hostile[0][2] == HOSTILE.replace("555-0100", "<PHONE>")  # redacted, intact
    assert "<b>bold</b>" not in page and 'alert("x")' not in page
    assert json.loads(script_json({"t": "</script><!--"})) == {"t": "</script><!--"}


def test_summary_reports_the_gain_over_the_reference(page: str, data: ReportData) -> None:
    summary = _section(page, "summary")
    assert "gain over tfidf_logreg" in summary
    knn = next(p for p in data.programs if p.name == "knn_few_shot")
    reference = next(p for p in data.programs if p.name == "tfidf_logreg")
    assert knn.gain_over_reference == pytest.approx(knn.accuracy - reference.accuracy)
    assert reference.gain_over_reference is None and reference.reference
    assert f"{knn.gain_over_reference:+.3f}" in summary
    no_reference = sample_data({"zero_shot": 0.2, "knn_few_shot": 0.7}, with_gate=False)
    assert "No reference program ran" in _section(render_html(no_reference), "summary")


def test_gains_skip_the_reference_and_its_compiled_pairs() -> None:
    metrics = aggregate(sample_records({"a": 0.5, "ref": 0.9, "ref+opt": 0.9, "a+opt": 0.6}))
    gains = gains_over_reference(metrics, ["ref"])
    assert set(gains) == {"a", "a+opt"}
    assert gains["a"] == pytest.approx(metrics["a"].accuracy - metrics["ref"].accuracy)
    assert gains_over_reference(metrics, ["other"]) == {}


def test_recall_bars_and_confusion(page: str, data: ReportData) -> None:
    recall = _section(page, "recall")
    bars = data.recalls["knn_few_shot"]
    half = next(b for b in bars if b.hits == 1 and b.support == 2)
    assert half.recall == 0.5 and '<i style="width:50.0%">' in recall
    assert recall.count('class="bar bad"') == sum(b.floor_failed for bars in data.recalls.values() for b in bars) > 0
    confusion = _section(page, "confusion")
    assert confusion.count('<div class="cm-box"') == len(data.programs)
    assert confusion.count('<th class="rot">') == 23 * len(data.programs)


def test_champion_comparison_shows_the_minimum_detectable_drop(page: str, data: ReportData) -> None:
    regression = _section(page, "regression")
    gate = next(g for g in data.gates if g.program == "knn_few_shot")
    assert gate.min_detectable_drop is not None and 0 < gate.min_detectable_drop <= 1
    assert f"{gate.min_detectable_drop:.3f}" in regression and "min detectable drop" in regression
    assert '<span class="badge none">NO CHAMPION</span>' in regression
    assert "did not run" in _section(render_html(replace(data, gates=())), "regression")


def test_trend_chart() -> None:
    trends = {"a": (TrendPoint(1.0, 0.5), TrendPoint(2.0, 0.75)), "b": (TrendPoint(2.0, 1.0),)}
    svg = trend_svg(trends, width=200, height=100)
    assert svg.count("<polyline") == 1 and svg.count("<circle") == 3  # one line per program with history
    assert "No session history" in _section(render_html(ReportData("t", True)), "trend")


def test_every_text_is_escaped() -> None:
    nasty = "<img src=x onerror=alert(1)>"
    page = render_html(
        ReportData(
            nasty,
            False,
            error_lines=(nasty,),
            params=((nasty, nasty),),
            checks=(CheckRow(nasty, nasty, "1", "2", "FAIL"),),
        )
    )
    assert nasty not in page and html_escape(nasty) in page


def html_escape(text: str) -> str:
    import html

    return html.escape(text, quote=True)


def costed_data() -> ReportData:
    """Two programs whose records carry the provider's cost, one on a local model (no cost)."""
    from evals.results.html_build import build_report_data

    records = [
        replace(r, cost_usd=0.0125 if r.program == "zero_shot" else 0.0)
        for r in sample_records({"zero_shot": 0.5, "tfidf_logreg": 0.9})
    ]
    return build_report_data(
        title="costed", metrics=aggregate(records), checks={}, records=records, redact=lambda text: text
    )


def test_summary_has_a_cost_column_total_and_per_example() -> None:
    data = costed_data()
    summary = _section(render_html(data), "summary")
    assert "<th class=num>cost / per example</th>" in summary
    rows = {row.split("</td>", 1)[0]: row for row in re.findall(r"<tr[^>]*>(.*?)</tr>", summary, re.S)[1:]}
    zero_shot = next(row for name, row in rows.items() if "zero_shot" in name)
    local = next(row for name, row in rows.items() if "tfidf_logreg" in name)
    n = next(p.n for p in data.programs if p.name == "zero_shot")
    assert n == 44
    assert f"${0.0125 * n:,.4f} / $0.0125</td></tr>" in zero_shot + "</tr>"  # 44 examples at $0.0125
    assert local.rstrip().endswith("—</td>")  # a local model reports no cost: a dash, not $0.0000
