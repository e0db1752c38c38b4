"""One MLflow trace per example, with assessments, in bulk (issue #13)."""

from __future__ import annotations

import math
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
    assert stats.traces == n + 4
    assert stats.calls["log_spans"] == math.ceil(2 * (n + 4) / traces.SPANS_PER_BATCH)
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


def test_traces_with_assessments_through_a_real_mlflow_server(tmp_path: Path) -> None:
    from tests.mlflow_server import MlflowServer

    server = MlflowServer(tmp_path / "server").start()
    try:
        check_upload(server.uri, tmp_path)
    finally:
        server.kill()


def test_the_assessment_cap_leaves_the_rest_with_tags_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client, experiment, run = new_run(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path)
    stats = log_traces(client, experiment, "s", {run: examples(12)}, limit=2)
    assert (stats.traces, stats.assessed, stats.calls["start_trace"]) == (12, 2, 2)
    found = client.search_traces(locations=[experiment], run_id=run, max_results=100)
    assert len(found) == 12
    assert sum(1 for t in found if t.info.assessments) == 2
    assert all(t.info.tags.get("evals.outcome") for t in found)
