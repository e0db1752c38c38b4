"""One MLflow trace per example, with assessments, in bulk (issue #13)."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest

from evals.store import traces
from evals.store.traces import assessment_specs, log_traces, span_dicts, trace_id
from tests.mlflow_native_helpers import examples, new_run


def test_outcomes_spans_and_assessments_of_one_example() -> None:
    invalid, wrong, correct = examples(6)[3], examples(6)[5], examples(6)[1]
    assert (invalid.outcome, wrong.outcome, correct.outcome) == ("invalid", "wrong", "correct")
    spans = span_dicts(wrong, trace_id("s", "zero_shot", wrong.example_id))
    assert [s["name"] for s in spans] == ["zero_shot", "LM openai/fake"]
    assert spans[1]["parent_span_id"] == spans[0]["span_id"]
    assert '"evals.outcome"' not in spans[0]["attributes"]  # tags are mlflow.traceTag.* attributes
    assert spans[0]["attributes"]["mlflow.traceTag.evals.outcome"] == '"wrong"'
    names = [(kind, name) for kind, name, _, _ in assessment_specs(invalid)]
    assert names == [("expectation", "expected_diagnosis"), ("feedback", "correct"), ("feedback", "invalid")]
    assert [name for _, name, _, _ in assessment_specs(correct)] == ["expected_diagnosis", "correct"]


def test_trace_ids_are_stable_per_session_program_and_example() -> None:
    assert trace_id("s1", "a", "x") == trace_id("s1", "a", "x")
    assert len({trace_id("s1", "a", "x"), trace_id("s2", "a", "x"), trace_id("s1", "b", "x")}) == 3
    assert trace_id("s1", "a", "x").startswith("tr-") and len(trace_id("s1", "a", "x")) == 35


def test_assessments_go_to_the_not_correct_traces_first_within_the_cap() -> None:
    planned = [("run", example, str(i)) for i, example in enumerate(examples(10))]
    chosen = traces.assessed(planned, 3)
    assert [example.outcome for _, example, _ in chosen] == ["invalid", "invalid", "wrong"]
    assert len(traces.assessed(planned, 100)) == 10


def check_upload(uri: str, root: Path, n: int = 30) -> None:
    client, experiment, run = new_run(uri, root)
    other_run = client.create_run(experiment).info.run_id
    batch = examples(n)
    stats = log_traces(client, experiment, "session-1", {run: batch, other_run: examples(4, "knn_few_shot")})
    assert (stats.traces, stats.assessed) == (n + 4, n + 4)
    assert stats.calls["log_spans"] == math.ceil(2 * (n + 4) / traces.SPANS_PER_BATCH)
    if uri.startswith("sqlite"):  # a database store: trace infos, assessments and run links in bulk
        assert stats.calls == {"delete_traces": 1, "insert_traces": 1, "log_spans": 1}  # delete: a retried upload
    else:  # a server has no bulk route: one start_trace per trace
        assert stats.calls["start_trace"] == n + 4 and "insert_traces" not in stats.calls
    found = client.search_traces(locations=[experiment], run_id=run, max_results=500)
    assert len(found) == n  # one trace per example, linked to its program's run
    by_id = {t.info.tags["evals.example_id"]: t for t in found}
    first = by_id["test-0000"]
    assert sorted((a.name, a.value) for a in first.info.assessments) == [
        ("correct", False),
        ("expected_diagnosis", "migraine"),
        ("invalid", True),
    ]
    assert [s.name for s in first.data.spans] == ["zero_shot", "LM openai/fake"]
    assert first.data.spans[1].inputs["messages"][0]["content"] == "symptoms: text 0"
    not_correct = client.search_traces(
        locations=[experiment], run_id=run, max_results=500, filter_string="tags.`evals.outcome` != 'correct'"
    )
    expected = sum(1 for e in batch if e.outcome != "correct")
    assert len(not_correct) == expected
    failed = client.search_traces(
        locations=[experiment], run_id=run, max_results=500, filter_string="feedback.correct = 'false'"
    )
    assert len(failed) == expected
    # The upload repeated (a retry, a re-sync) writes every trace once, assessments included.
    log_traces(client, experiment, "session-1", {run: batch, other_run: examples(4, "knn_few_shot")})
    again = client.search_traces(locations=[experiment], run_id=run, max_results=500)
    assert len(again) == n
    assert len({t.info.trace_id: t for t in again}["" + first.info.trace_id].info.assessments) == 3
    assert len(client.search_traces(locations=[experiment], max_results=500)) == n + 4


def test_traces_with_assessments_in_sqlite(tmp_path: Path) -> None:
    check_upload(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path)


def test_traces_with_assessments_through_a_real_mlflow_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.mlflow_server import MlflowServer

    server = MlflowServer(tmp_path / "server").start()
    try:
        check_upload(server.uri, tmp_path)
        # Through a server the session's assessments stop at the cap (one call per trace there).
        monkeypatch.setattr(traces, "MAX_ASSESSED_TRACES", 2)
        client, experiment, run = new_run(server.uri, tmp_path)
        stats = log_traces(client, experiment, "s", {run: examples(6)}, replace=False)
        assert (stats.traces, stats.assessed, stats.calls["start_trace"]) == (6, 2, 2)
        found = client.search_traces(locations=[experiment], run_id=run, max_results=100)
        assert sorted(len(t.info.assessments) for t in found) == [0, 0, 0, 0, 3, 3]  # the two invalid ones
    finally:
        server.kill()


def test_a_database_store_gets_every_trace_info_and_assessment_in_a_few_transactions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(traces, "MAX_ASSESSED_TRACES", 2)  # the server cap does not apply here
    monkeypatch.setattr(traces, "TRACES_PER_TRANSACTION", 5)
    client, experiment, run = new_run(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path)
    stats = log_traces(client, experiment, "s", {run: examples(12)}, replace=False)
    assert (stats.traces, stats.assessed) == (12, 12)
    assert stats.calls == {"insert_traces": 3, "log_spans": 1}  # run links ride with the trace infos
    found = client.search_traces(locations=[experiment], run_id=run, max_results=100)
    assert sorted(len(t.info.assessments) for t in found) == [2] * 8 + [3] * 4
    by_id = {t.info.tags["evals.example_id"]: t.info for t in found}
    wrong = {a.name: a for a in by_id["test-0005"].assessments}
    assert (wrong["correct"].value, wrong["correct"].rationale) == (False, "predicted 'allergy', expected 'migraine'")
    assert wrong["correct"].source.source_id == traces.ASSESSMENT_SOURCE
    assert all(t.info.tags["mlflow.traceName"] == "zero_shot" for t in found)
    passed = client.search_traces(locations=[experiment], filter_string="feedback.correct = 'true'", max_results=100)
    assert len(passed) == 6
    # Uploaded again (a retry): each trace once, linked to its run once.
    assert log_traces(client, experiment, "s", {run: examples(12)}).calls["delete_traces"] == 1
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        links = db.execute("SELECT COUNT(*) FROM entity_associations WHERE destination_id = ?", (run,)).fetchone()
        assessments = db.execute("SELECT COUNT(*) FROM assessments").fetchone()
    assert (links[0], assessments[0]) == (12, 2 * 8 + 3 * 4)
    assert len(client.search_traces(locations=[experiment], run_id=run, max_results=100)) == 12


def _comparable(trace: object) -> tuple[object, ...]:
    info, spans = trace.info, trace.data.spans  # type: ignore[attr-defined]
    return (
        info.request_time,
        info.execution_duration,
        info.state,
        info.request_preview,
        info.response_preview,
        {k: v for k, v in info.tags.items() if k != "mlflow.artifactLocation"},
        {k: v for k, v in info.trace_metadata.items() if k != "mlflow.sourceRun"},
        sorted((a.name, a.value, a.rationale, a.source.source_id) for a in info.assessments),
        [
            (s.name, s.span_type, s.start_time_ns, s.end_time_ns, s.inputs, s.outputs, s.status.status_code)
            for s in spans
        ],
    )


def test_the_bulk_trace_is_the_trace_mlflow_start_trace_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same examples through the bulk path and through MLflow's public per-trace calls read back the same."""
    batch = examples(7)
    client, bulk_experiment, bulk_run = new_run(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path)
    assert "insert_traces" in log_traces(client, bulk_experiment, "s", {bulk_run: batch}).calls
    public_experiment = client.create_experiment("public")
    public_run = client.create_run(public_experiment).info.run_id
    monkeypatch.setattr(traces, "database_store", lambda tracing: None)
    assert log_traces(client, public_experiment, "s2", {public_run: batch}).calls["start_trace"] == 7
    bulk, public = (
        sorted(client.search_traces(locations=[e], run_id=r, max_results=50), key=lambda t: t.info.request_preview)
        for e, r in ((bulk_experiment, bulk_run), (public_experiment, public_run))
    )
    assert [_comparable(t) for t in bulk] == [_comparable(t) for t in public]
    assert len(bulk) == 7 and all(t.info.trace_metadata["mlflow.sourceRun"] == bulk_run for t in bulk)


def test_an_explicit_limit_caps_the_bulk_path_too(tmp_path: Path) -> None:
    client, experiment, run = new_run(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path)
    stats = log_traces(client, experiment, "s", {run: examples(12)}, limit=2)
    assert (stats.traces, stats.assessed, stats.calls["insert_traces"]) == (12, 2, 1)
    found = client.search_traces(locations=[experiment], run_id=run, max_results=100)
    assert len(found) == 12
    assert sum(1 for t in found if t.info.assessments) == 2
    assert all(t.info.tags.get("evals.outcome") for t in found)


def test_lm_spans_take_each_call_own_start_and_end() -> None:
    from dataclasses import replace

    example = examples(1)[0]
    call = example.calls[0]
    t0 = example.started_at
    timed = replace(
        example,
        latency_ms=1000.0,
        calls=(
            replace(call, started_at=t0 + 0.1, ended_at=t0 + 0.25),
            replace(call, started_at=t0 + 0.5, ended_at=t0 + 0.9),
        ),
    )
    spans = span_dicts(timed, "tr-x")
    ns = [(s["start_time_unix_nano"], s["end_time_unix_nano"]) for s in spans]
    assert ns[1] == (round((t0 + 0.1) * 1e9), round((t0 + 0.25) * 1e9))
    assert ns[2] == (round((t0 + 0.5) * 1e9), round((t0 + 0.9) * 1e9))
    assert ns[0] == (round(t0 * 1e9), round(t0 * 1e9) + 1_000_000_000)
    # A call that ended after the example's latency (it waited for a slot first) stays inside the program span.
    late = replace(timed, calls=(replace(call, started_at=t0 + 0.5, ended_at=t0 + 1.5),))
    root, lm = span_dicts(late, "tr-y")
    assert root["end_time_unix_nano"] == lm["end_time_unix_nano"] == round((t0 + 1.5) * 1e9)


def test_lm_spans_of_records_without_call_timings_split_the_example_evenly() -> None:
    from dataclasses import replace

    from evals.calls import LMCall

    example = examples(1)[0]
    old = LMCall.from_dict({k: v for k, v in example.calls[0].to_dict().items() if k not in ("started_at", "ended_at")})
    assert (old.started_at, old.ended_at, old.timed) == (0.0, 0.0, False)  # a bundle written before call timing
    half_timed = (replace(old, started_at=example.started_at + 0.1, ended_at=example.started_at + 0.2), old)
    for calls in ((old, old), half_timed):
        spans = span_dicts(replace(example, latency_ms=1000.0, calls=calls), "tr-z")
        start = round(example.started_at * 1e9)
        assert [(s["start_time_unix_nano"] - start, s["end_time_unix_nano"] - start) for s in spans[1:]] == [
            (1, 500_000_000 - 1),
            (500_000_001, 1_000_000_000 - 1),
        ]


def test_only_mlflow_own_database_store_takes_the_bulk_path(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from evals.store.trace_rows import database_store

    client, _, _ = new_run(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path)
    assert database_store(client._tracing_client) is client._tracing_client.store
    store = client._tracing_client.store
    subclass = type("Scoped", (type(store),), {})  # e.g. the workspace-aware store
    assert database_store(SimpleNamespace(store=object.__new__(subclass))) is None
    assert database_store(SimpleNamespace(store=object())) is None  # a REST store, say
