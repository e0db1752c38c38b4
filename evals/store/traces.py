"""One MLflow trace per evaluated example, written in bulk at upload time.

A trace has the program's span (inputs: the symptoms; outputs: the diagnosis) and one
``CHAT_MODEL`` span per LM call (rendered messages, raw completion, tokens, cost). It is
linked to the program's nested run and carries tags to filter on (``evals.outcome`` is
``correct``, ``wrong``, ``invalid`` or ``error``) and assessments: the expected diagnosis
(expectation), ``correct`` (feedback) and the invalid / error reason where there is one.

Cost stays bounded. On a database store (``sqlite:///``, ``postgresql://``, …) the trace infos
— tags, metadata, every trace's assessments and its run link — go in bulk,
``TRACES_PER_TRANSACTION`` per transaction (:mod:`evals.store.trace_rows`), then the spans
through ``log_spans`` in batches: a 10,000-example session of 3 programs in about 20 calls.
A server (``http://``) has no bulk route for trace infos in MLflow 3.17: spans go through
``log_spans`` (its OTLP endpoint) with the tags as ``mlflow.traceTag.*`` root-span attributes,
run links in chunks of 100 (MLflow's limit), and assessments in one ``start_trace`` per trace
(the way MLflow's own exporter finalises a trace) — ~37 ms each on a one-worker sqlite-backed
server, 8 threads no faster (300 traces: 11.4 s vs 10.3 s) — so there at most
``MAX_ASSESSED_TRACES`` traces of a session get them: those that were not answered correctly
first (what a user filters to), then the others in order. Every trace carries the tags either way.

Trace ids are derived from (session, program, example); an upload deletes those ids first,
so an upload repeated after a failure (or a re-sync) writes each trace exactly once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from evals.calls import LMCall
from evals.store.trace_rows import database_store, insert_traces

if TYPE_CHECKING:
    from mlflow import MlflowClient

SPANS_PER_BATCH = 2000
DELETES_PER_CALL = 100
MAX_ASSESSED_TRACES = 500
"""Traces per session that get assessments through a server (one call each); the rest carry tags only."""
TRACES_PER_TRANSACTION = 5000
"""Trace infos (tags, metadata, assessments) one bulk insert writes on a database store."""
LINKS_PER_CALL = 100
"""MLflow's ``MAX_TRACE_LINKS_PER_REQUEST``."""
ASSESSMENT_SOURCE = "evals.scoring.diagnosis_match"
OUTCOME_TAG = "evals.outcome"


@dataclass(frozen=True)
class TracedExample:
    """What one trace is made from (plain data; the record fields the trace needs).

    Attributes:
        program: The evaluated program.
        example_id: The example's id in its split.
        symptoms: The patient text (already cleaned).
        gold: The true diagnosis.
        predicted: The diagnosis returned, or None.
        error: The error or invalid-answer line, or None.
        latency_ms: Wall time of the whole example.
        started_at: Epoch seconds when the example started.
        calls: The LM calls made (already cleaned), oldest first.
    """

    program: str
    example_id: str
    symptoms: str
    gold: str
    predicted: str | None
    error: str | None
    latency_ms: float
    started_at: float
    calls: tuple[LMCall, ...] = ()

    @property
    def outcome(self) -> str:
        """``correct``, ``wrong``, ``invalid`` (an answer outside the labels) or ``error``."""
        if self.predicted is None:
            return "invalid" if self.error and self.error.startswith("answer outside") else "error"
        return "correct" if self.predicted == self.gold else "wrong"


@dataclass
class UploadStats:
    """What a trace upload cost: MLflow calls by kind."""

    traces: int = 0
    assessed: int = 0
    calls: dict[str, int] = field(default_factory=dict)

    def count(self, kind: str) -> None:
        self.calls[kind] = self.calls.get(kind, 0) + 1

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())


def trace_id(session_id: str, program: str, example_id: str) -> str:
    """A stable MLflow trace id (``tr-`` + 32 hex digits) for one example of one session."""
    digest = hashlib.sha256(f"{session_id}\x1f{program}\x1f{example_id}".encode()).hexdigest()
    return "tr-" + digest[:32]


def span_dicts(example: TracedExample, tid: str, tag_attrs: bool = True) -> list[dict[str, Any]]:
    """The example's spans in ``mlflow.entities.Span.from_dict`` form: the program, then each LM call.

    ``tag_attrs``: carry the trace's tags as ``mlflow.traceTag.*`` root-span attributes (what
    ``log_spans`` turns into trace tags when it creates the trace); False when the trace info
    with its tags is written first.
    """
    start = _start_ns(example)
    end = start + max(round(example.latency_ms * 1e6), 1000)
    windows = call_windows(example.calls, start, end)
    end = max([end, *(call_end for _, call_end in windows)])  # a call timed past the latency (slot wait)
    root_attrs: dict[str, Any] = {
        "mlflow.spanType": "CHAIN",
        "mlflow.spanInputs": {"symptoms": example.symptoms},
        "mlflow.spanOutputs": {"diagnosis": example.predicted} if example.error is None else {"error": example.error},
    }
    if tag_attrs:
        root_attrs.update({f"mlflow.traceTag.{key}": value for key, value in trace_tags(example).items()})
    ok = example.outcome != "error"
    spans = [_span(tid, 1, None, example.program, start, end, root_attrs, ok, example.error)]
    for index, (call, (call_start, call_end)) in enumerate(zip(example.calls, windows, strict=True)):
        spans.append(
            _span(tid, index + 2, 1, f"LM {call.model}".strip(), call_start, call_end, _call_attrs(call), True, None)
        )
    return spans


def call_windows(calls: Sequence[LMCall], start: int, end: int) -> list[tuple[int, int]]:
    """(start, end) in epoch nanoseconds of each LM call's span within the example's ``start``-``end``.

    Each call's own start and end when every call has them; otherwise (bundles written before
    call timing) the example's time split evenly between its calls.
    """
    if calls and all(call.timed for call in calls):
        return [(round(c.started_at * 1e9), max(round(c.ended_at * 1e9), round(c.started_at * 1e9) + 1)) for c in calls]
    share = (end - start) // len(calls) if calls else 0
    return [(start + i * share + 1, start + (i + 1) * share - 1) for i in range(len(calls))]


def trace_tags(example: TracedExample) -> dict[str, str]:
    """The tags of the example's trace (filterable in the MLflow UI and ``search_traces``)."""
    return {
        "evals.program": example.program,
        "evals.example_id": example.example_id,
        OUTCOME_TAG: example.outcome,
        "evals.gold": example.gold,
        "evals.predicted": example.predicted or "",
        "mlflow.traceName": example.program,
    }


def _start_ns(example: TracedExample) -> int:
    return round(example.started_at * 1e9)


def _call_attrs(call: LMCall) -> dict[str, Any]:
    try:
        messages: Any = json.loads(call.messages)
    except ValueError:  # cut short by the size bound: shown as text
        messages = call.messages
    attrs: dict[str, Any] = {
        "mlflow.spanType": "CHAT_MODEL",
        "mlflow.spanInputs": {"messages": messages},
        "mlflow.spanOutputs": call.completion,
        "mlflow.llm.model": call.model,
        "mlflow.chat.tokenUsage": {
            "input_tokens": call.prompt_tokens,
            "output_tokens": call.completion_tokens,
            "total_tokens": call.prompt_tokens + call.completion_tokens,
        },
        "evals.cached": call.cached,
    }
    if call.cost_usd:
        attrs["mlflow.llm.cost"] = {"input_cost": 0.0, "output_cost": 0.0, "total_cost": call.cost_usd}
    return attrs


def _span(
    tid: str,
    span_id: int,
    parent: int | None,
    name: str,
    start: int,
    end: int,
    attrs: dict[str, Any],
    ok: bool,
    message: str | None,
) -> dict[str, Any]:
    attributes = {"mlflow.traceRequestId": json.dumps(tid)}
    attributes.update({key: json.dumps(value, ensure_ascii=False) for key, value in attrs.items()})
    return {
        "trace_id": tid,
        "span_id": f"{span_id:016x}",
        "parent_span_id": f"{parent:016x}" if parent else None,
        "name": name,
        "start_time_unix_nano": start,
        "end_time_unix_nano": end,
        "events": [],
        "status": {"code": "STATUS_CODE_OK" if ok else "STATUS_CODE_ERROR", "message": "" if ok else (message or "")},
        "attributes": attributes,
    }


def assessment_specs(example: TracedExample) -> list[tuple[str, str, Any, str | None]]:
    """(kind, name, value, rationale) of the example's assessments; kind is expectation or feedback."""
    specs: list[tuple[str, str, Any, str | None]] = [
        ("expectation", "expected_diagnosis", example.gold, None),
        (
            "feedback",
            "correct",
            example.outcome == "correct",
            f"predicted {example.predicted!r}, expected {example.gold!r}" if example.predicted else example.error,
        ),
    ]
    if example.outcome in ("invalid", "error"):
        specs.append(("feedback", example.outcome, True, example.error))
    return specs


def _assessments(example: TracedExample, tid: str) -> list[Any]:
    from mlflow.entities.assessment import Expectation, Feedback
    from mlflow.entities.assessment_source import AssessmentSource

    source = AssessmentSource(source_type="CODE", source_id=ASSESSMENT_SOURCE)
    made: list[Any] = []
    for kind, name, value, rationale in assessment_specs(example):
        if kind == "expectation":
            made.append(Expectation(name=name, value=value, source=source, trace_id=tid))
        else:
            made.append(Feedback(name=name, value=value, rationale=rationale, source=source, trace_id=tid))
    return made


def _trace_info(example: TracedExample, tid: str, experiment_id: str, run_id: str, assess: bool = True) -> Any:
    from mlflow.entities import TraceInfo, TraceLocation, TraceState

    prompt, completion = (sum(c.prompt_tokens for c in example.calls), sum(c.completion_tokens for c in example.calls))
    usage = {"input_tokens": prompt, "output_tokens": completion, "total_tokens": prompt + completion}
    return TraceInfo(
        trace_id=tid,
        trace_location=TraceLocation.from_experiment_id(experiment_id),
        request_time=_start_ns(example) // 1_000_000,
        execution_duration=round(example.latency_ms),
        state=TraceState.ERROR if example.outcome == "error" else TraceState.OK,
        request_preview=json.dumps({"symptoms": example.symptoms}, ensure_ascii=False)[:1000],
        response_preview=json.dumps({"diagnosis": example.predicted}, ensure_ascii=False),
        trace_metadata={
            "mlflow.sourceRun": run_id,
            "mlflow.trace_schema.version": "3",
            "mlflow.trace.tokenUsage": json.dumps(usage),
        },
        tags=trace_tags(example),
        assessments=_assessments(example, tid) if assess else [],
    )


def log_traces(
    client: MlflowClient,
    experiment_id: str,
    session_id: str,
    examples_by_run: Mapping[str, Sequence[TracedExample]],
    limit: int | None = None,
    replace: bool = True,
) -> UploadStats:
    """Write one trace per example, linked to its run id (the program's nested run); idempotent.

    Args:
        client: An MlflowClient on the tracking URI (sqlite or a server).
        experiment_id: The experiment the runs are in.
        session_id: The session id (part of every trace id).
        examples_by_run: Run id -> the examples evaluated in that run.
        limit: The most traces that get assessments; None: all of them on a database store,
            ``MAX_ASSESSED_TRACES`` through a server.
        replace: Delete traces with the same ids first (a repeated upload); a first upload skips it.

    Returns:
        How many traces were written and how many MLflow calls it took, by kind.
    """
    from mlflow.entities import Span

    stats = UploadStats()
    planned = [
        (run_id, example, trace_id(session_id, example.program, example.example_id))
        for run_id, examples in examples_by_run.items()
        for example in examples
    ]
    tracing = client._tracing_client
    store = database_store(tracing)
    chosen = assessed(planned, (len(planned) if store is not None else MAX_ASSESSED_TRACES) if limit is None else limit)
    for chunk in _chunks([tid for _, _, tid in planned] if replace else [], DELETES_PER_CALL):
        tracing.delete_traces(experiment_id, trace_ids=list(chunk))
        stats.count("delete_traces")
    if store is not None:  # trace infos first, in bulk: log_spans then only adds the spans
        with_assessments = {tid for _, _, tid in chosen}
        infos = [_trace_info(e, tid, experiment_id, run, tid in with_assessments) for run, e, tid in planned]
        run_of = {tid: run for run, _, tid in planned}
        for chunk in _chunks(infos, TRACES_PER_TRANSACTION):
            insert_traces(store, experiment_id, chunk, run_of)  # run links included
            stats.count("insert_traces")
    spans = [Span.from_dict(d) for _, e, tid in planned for d in span_dicts(e, tid, tag_attrs=store is None)]
    for batch in _chunks(spans, SPANS_PER_BATCH):
        tracing.log_spans(experiment_id, list(batch))
        stats.count("log_spans")
    for run_id in examples_by_run if store is None else ():
        ids = [tid for run, _, tid in planned if run == run_id]
        for chunk in _chunks(ids, LINKS_PER_CALL):
            client.link_traces_to_run(list(chunk), run_id)
            stats.count("link_traces_to_run")
    if store is None:
        for run_id, example, tid in chosen:
            tracing.start_trace(_trace_info(example, tid, experiment_id, run_id))
            stats.count("start_trace")
    stats.traces = len(planned)
    stats.assessed = len(chosen)
    return stats


def assessed(planned: Sequence[tuple[str, TracedExample, str]], limit: int) -> list[tuple[str, TracedExample, str]]:
    """The traces that get assessments: not-correct ones first, then the rest, in order, at most ``limit``."""
    ranked = sorted(range(len(planned)), key=lambda i: (planned[i][1].outcome == "correct", i))
    return [planned[i] for i in sorted(ranked[: max(limit, 0)])]


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
