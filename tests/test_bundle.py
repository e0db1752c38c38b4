"""write_bundle() over a hand-built context and summary: the files, and session.json read back."""

from __future__ import annotations

import json
from pathlib import Path

from evals.results.bundle import write_bundle
from evals.results.summary import summarize
from evals.store.schema import Bundle
from evals.store.view import StoreView
from tests.contexts import SESSION_ID, make_context, records


def _write(tmp_path: Path, **fields: object) -> Path:
    context = make_context(tmp_path, records("knn", 22) + records("zero_shot+knn_few_shot", 1), **fields)
    bundle = tmp_path / "bundle"
    write_bundle(bundle, context, summarize(context, StoreView()), str.upper)
    return bundle


def test_the_bundle_holds_the_reports_tables_and_a_directory_per_program(tmp_path: Path) -> None:
    bundle = _write(tmp_path)

    files = sorted(str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file())
    for name in (
        "session.json",
        "artifacts/report.html",
        "artifacts/report.md",
        "artifacts/predictions.parquet",
        "artifacts/predictions.csv",
        "artifacts/misclassified.csv",
        "artifacts/per_diagnosis.csv",
        "artifacts/manifest.json",
        "artifacts/verdict.json",
        "artifacts/confusion_knn.png",
        "programs/knn/compiled_program.json",
        "programs/knn/predictions.csv",
        "programs/knn/confusion.png",
    ):
        assert name in files
    assert json.loads((bundle / "artifacts" / "manifest.json").read_text())["source"] == "hand-built"


def test_session_json_reads_back_as_a_bundle(tmp_path: Path) -> None:
    loaded = Bundle.load(_write(tmp_path))

    assert loaded.session_id == SESSION_ID and loaded.status == "FINISHED"
    assert loaded.run_name == "session-" + loaded.run_name.split("-", 1)[1]
    assert loaded.session.tags["evals.verdict"] == "pass"
    assert loaded.session.tags["evals.regression"] == "none"
    assert loaded.session.metrics["knn.accuracy"] == 1.0
    assert "zero_shot/knn_few_shot.accuracy" in loaded.session.metrics  # '+' is not allowed in metric names
    assert set(loaded.programs) == {"knn", "zero_shot+knn_few_shot"}


def test_an_interrupted_session_is_killed_and_states_are_redacted(tmp_path: Path) -> None:
    bundle = _write(
        tmp_path,
        interrupted=True,
        program_states={
            "knn": {"program": "knn", "state": {"demo": "secret text"}},
            "zero_shot+knn_few_shot": {"program": "x", "state": {}},
        },
    )

    assert Bundle.load(bundle).status == "KILLED"
    state = json.loads((bundle / "programs" / "knn" / "compiled_program.json").read_text())
    assert state["state"]["demo"] == "SECRET TEXT"  # the redact function ran over the program state
    assert Bundle.load(bundle).session.tags["evals.complete"] == "false"
