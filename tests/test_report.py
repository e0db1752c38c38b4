"""Unit tests of evals.results.report and evals.results.plots over hand-built records."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from evals.gates.thresholds import Check
from evals.labels import DIAGNOSES
from evals.records import ExampleRecord
from evals.results.plots import confusion_figure, confusion_png
from evals.results.report import (
    PREDICTION_COLUMNS,
    ReportContext,
    misclassified_frame,
    per_diagnosis_frame,
    predictions_frame,
    render_markdown,
    render_terminal,
)
from evals.stats.metrics import ProgramMetrics, aggregate

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SCRIPT = "<script>alert('x')</script> itchy | rash"
PROGRAMS = {"zero_shot": 0.55, "cot": 0.7, "knn_few_shot": 0.85}


def make_records(skill: dict[str, float], n: int = 120, seed: int = 0) -> list[ExampleRecord]:
    """``n`` examples per program; each is right with probability ``skill[program]``."""
    rng = random.Random(seed)
    golds = [DIAGNOSES[i % len(DIAGNOSES)] for i in range(n)]
    records = []
    for program, p in skill.items():
        for i, gold in enumerate(golds):
            roll = rng.random()
            predicted = gold if roll < p else (None if roll > 0.97 else rng.choice(DIAGNOSES))
            symptoms = SCRIPT if i == 1 else f"I have had symptom {i} for days"
            error = "no valid label" if predicted is None else None
            latency_ms = rng.uniform(200, 3000)
            record = ExampleRecord(
                program,
                f"test-{i:04d}",
                symptoms,
                gold,
                predicted,
                latency_ms,
                prompt_tokens=300,
                completion_tokens=12,
                error=error,
            )
            records.append(record)
    return records


def make_checks(metrics: dict[str, ProgramMetrics]) -> dict[str, list[Check]]:
    """An accuracy floor of 0.6 (zero_shot fails), a latency cap, one unenforced floor."""
    checks: dict[str, list[Check]] = {}
    for program, m in metrics.items():
        checks[program] = [
            Check(program, "accuracy", m.accuracy, 0.6, "min"),
            Check(program, "latency_p95_ms", m.latency_p95_ms, 10_000.0, "max"),
            Check(
                program,
                "recall.migraine",
                m.per_diagnosis["migraine"].recall,
                1.01,
                "min",
                enforced=False,
                support=m.per_diagnosis["migraine"].support,
            ),
        ]
    return checks


def make_context(tmp_path: Path, **extra: Any) -> ReportContext:
    records = make_records(PROGRAMS)
    metrics = aggregate(records)
    pngs = {p: confusion_png(m, tmp_path / f"{p}_confusion.png") for p, m in metrics.items()}
    return ReportContext(
        title="Symptom diagnosis evals",
        params={"model": "smollm2-360m", "split": "test", "seed": "0"},
        metrics=metrics,
        checks=make_checks(metrics),
        records=records,
        confusion_pngs=pngs,
        **extra,
    )


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> ReportContext:
    return make_context(tmp_path_factory.mktemp("report"), mlflow_hint="run abc123", html_path="out/report.html")


def test_context_has_a_failing_and_a_passing_program(ctx: ReportContext) -> None:
    # The report tests below rely on this mix; fail loudly if the fixture drifts.
    assert ctx.metrics["zero_shot"].accuracy < 0.6 < ctx.metrics["knn_few_shot"].accuracy


def test_confusion_png_is_a_real_png(tmp_path: Path, ctx: ReportContext) -> None:
    path = confusion_png(ctx.metrics["cot"], tmp_path / "sub" / "cot.png")
    data = path.read_bytes()
    assert path == tmp_path / "sub" / "cot.png"
    assert data[:8] == PNG_MAGIC
    assert len(data) > 10_000
    assert [p.name for p in path.parent.iterdir()] == ["cot.png"]  # no temp file left
    umask = os.umask(0o22)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # readable like any other report file


def test_confusion_png_leaves_pyplot_alone(tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from evals.stats.metrics import aggregate
        from evals.results.plots import confusion_png
        from evals.records import ExampleRecord
        m = aggregate([ExampleRecord("p", "1", "x", "allergy", "allergy", 1.0)])["p"]
        confusion_png(m, Path({str(tmp_path / "p.png")!r}))
        assert "matplotlib.pyplot" not in sys.modules, "pyplot was imported"
    """)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "MPLBACKEND": "TkAgg"}
    result = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "p.png").read_bytes()[:8] == PNG_MAGIC


def test_predictions_frame_columns_and_redaction(ctx: ReportContext) -> None:
    frame = predictions_frame(ctx.records, redact=lambda text: "[redacted]")
    assert tuple(frame.columns) == PREDICTION_COLUMNS
    assert len(frame) == len(ctx.records)
    assert set(frame["symptoms"]) == {"[redacted]"}
    assert frame["correct"].sum() == sum(r.correct for r in ctx.records)


def test_misclassified_frame_keeps_only_wrong_answers(ctx: ReportContext) -> None:
    frame = misclassified_frame(ctx.records)
    wrong = [r for r in ctx.records if not r.correct]
    assert len(frame) == len(wrong) > 0
    assert not frame["correct"].any()
    assert frame["predicted"].isna().sum() == sum(r.predicted is None for r in wrong) > 0


def test_per_diagnosis_frame(ctx: ReportContext) -> None:
    m = ctx.metrics["cot"]
    frame = per_diagnosis_frame(m)
    assert list(frame.columns) == ["diagnosis", "support", "predicted", "precision", "recall", "f1"]
    assert list(frame["diagnosis"]) == list(DIAGNOSES)
    assert frame["support"].sum() == m.n
    assert frame.loc[frame.diagnosis == "migraine", "recall"].item() == pytest.approx(
        m.per_diagnosis["migraine"].recall
    )


def test_markdown_applies_redaction(tmp_path: Path) -> None:
    ctx = make_context(tmp_path, redact=lambda text: "[redacted]")
    for text in (render_markdown(ctx),):
        assert "I have had symptom" not in text and "alert" not in text
        assert "[redacted]" in text


def test_markdown_content(ctx: ReportContext) -> None:
    text = render_markdown(ctx)
    assert text.startswith("# Symptom diagnosis evals\n")
    for program in PROGRAMS:
        assert f"## Program: {program}" in text
        assert f"![confusion matrix of {program}]({program}_confusion.png)" in text
    assert "| model | smollm2-360m |" in text
    assert "✅" in text and "❌" in text
    assert "&lt;script&gt;" in text and "<script>" not in text
    assert "itchy \\| rash" in text  # a pipe in user text must not split the table
    counts = re.findall(r"Misclassified examples \((?:first 20 of )?(\d+)\)", text)
    wrong = {p: sum(r.program == p and not r.correct for r in ctx.records) for p in ctx.metrics}
    assert [int(c) for c in counts] == list(wrong.values())
    assert "first 20 of" in text and not re.search(r"first 20 of (1?\d|20)\)", text)
    tables = text.split("### Misclassified examples")[1:]
    assert [t.count("| test-") for t in tables] == [min(n, 20) for n in wrong.values()]
    assert "run abc123" in text


def test_markdown_tables_are_rectangular(ctx: ReportContext) -> None:
    tables = re.findall(r"((?:^\|.*\|\n)+)", render_markdown(ctx), flags=re.M)
    assert len(tables) > 5
    for table in tables:
        widths = {len(re.findall(r"(?<!\\)\|", row)) for row in table.splitlines()}
        assert len(widths) == 1, table


def test_render_terminal(ctx: ReportContext) -> None:
    console = Console(record=True, width=100, color_system=None)
    render_terminal(ctx, console)
    out = console.export_text()
    for program in PROGRAMS:
        assert program in out
    assert re.search(r"accuracy[\s│]+0\.\d{3}[\s│]+≥ 0\.600[\s│]+FAIL", out)
    assert re.search(r"accuracy[\s│]+0\.\d{3}[\s│]+≥ 0\.600[\s│]+PASS", out)
    assert re.search(r"per-diagnosis[\s│]+0/1 met[\s│]+WARN", out)
    assert "FAIL zero_shot accuracy" in out
    assert "WARN cot recall.migraine" in out and "not enforced" in out
    assert "FAIL knn_few_shot accuracy" not in out
    assert "Worst diagnoses" in out
    assert "MLflow: run abc123" in out and "HTML report: out/report.html" in out
    assert max(len(line) for line in out.splitlines()) <= 100


def test_render_terminal_without_checks_or_hints(tmp_path: Path, ctx: ReportContext) -> None:
    bare = replace(ctx, checks={}, mlflow_hint=None, html_path=None)
    console = Console(record=True, width=100, color_system=None)
    render_terminal(bare, console)
    out = console.export_text()
    assert "zero_shot" in out
    assert "FAIL" not in out and "PASS" not in out
    assert "MLflow" not in out and "HTML report" not in out
    assert "No thresholds were checked." in render_markdown(bare)


def test_the_confusion_figure_shows_every_label_whole() -> None:
    """Fixed margins (no tight_layout pass) must still fit the longest diagnosis names and every label."""
    rng = random.Random(1)
    records = [
        ExampleRecord("p", f"t{i}", "x", d, rng.choice((*DIAGNOSES, None)), 1.0, 1, 1)
        for i, d in enumerate(DIAGNOSES * 3)
    ]
    figure = confusion_figure(aggregate(records)["p"])
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()  # type: ignore[attr-defined]
    box = figure.bbox
    texts = [t for t in figure.findobj(lambda a: hasattr(a, "get_text")) if t.get_visible() and t.get_text()]
    assert len(texts) > 2 * len(DIAGNOSES)
    outside = [
        t.get_text()
        for t in texts
        if not (
            (extent := t.get_window_extent(renderer)).x0 >= box.x0 - 0.5
            and extent.y0 >= box.y0 - 0.5
            and extent.x1 <= box.x1 + 0.5
            and extent.y1 <= box.y1 + 0.5
        )
    ]
    assert outside == []
