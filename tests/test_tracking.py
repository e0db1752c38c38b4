"""Tests of tracking, spool, history and the CLI against real MLflow stores and servers.

Nothing of MLflow is mocked: uploads go to a sqlite store in ``tmp_path`` or to a real
``mlflow server`` process (one per module, killed and restarted by the crash test).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from evals.errors import ConfigError
from evals.redact import Redactor
from evals.store.client import FAST_FAIL_ENV, TrackingUnavailable, mlflow_errors, unavailable
from evals.store.history import Delta, ProgramResult, Session, compare, recent_sessions
from evals.store.schema import PARENT_TAG, SESSION_TAG
from evals.store.spool import pending, spool_bundle, sync_spool
from evals.store.upload import (
    MAX_ENTITIES_PER_BATCH,
    MAX_METRICS_PER_BATCH,
    MAX_PARAMS_TAGS_PER_BATCH,
    batches,
    run_url_hint,
    upload_bundle,
)
from tests.mlflow_server import QUIET_ENV, MlflowServer

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = "evals-test"
PROGRAMS = ("zero_shot", "knn_few_shot")
PLANTED = "sk-test-PLANTED-abcdef123456"
PNG = bytes(range(256)) * 4
FINISHED_AT = 1_700_000_100.25


@pytest.fixture(autouse=True)
def _quiet_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in QUIET_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, template_db: Path) -> Iterator[MlflowServer]:
    """One real MLflow server for the module; a test may kill it if it restarts it."""
    instance = MlflowServer(tmp_path_factory.mktemp("server"))
    shutil.copyfile(template_db, instance.root / "mlflow.db")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in QUIET_ENV.items():
            patch.setenv(name, value)
        instance.start()
    try:
        yield instance
    finally:
        instance.kill()


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated MLflow sqlite database (creating one takes seconds; copying, not)."""
    database = tmp_path_factory.mktemp("template") / "mlflow.db"
    client_for(f"sqlite:///{database}").search_experiments()
    return database


@pytest.fixture
def uri(tmp_path: Path, template_db: Path) -> str:
    """A fresh sqlite tracking store of this test's own."""
    shutil.copyfile(template_db, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def make_bundle(
    root: Path,
    *,
    status: str = "FINISHED",
    n_metrics: int = 5,
    params: dict[str, str] | None = None,
    tags: dict[str, str] | None = None,
    program_metrics: dict[str, dict[str, float]] | None = None,
    n_artifacts: int = 0,
    started_at: float = FINISHED_AT - 100,
) -> tuple[Path, str]:
    """Write a session bundle with two programs; return its path and session id."""
    session_id = uuid.uuid4().hex
    bundle = root / session_id
    programs = {
        name: {
            "params": {"module": f"{name}.Predict"},
            "tags": {"evals.verdict": "pass"},
            "metrics": (program_metrics or {}).get(name)
            or {f"recall.m{i:04d}": i / n_metrics for i in range(n_metrics)},
        }
        for name in PROGRAMS
    }
    session = {
        "format": 1,
        "session_id": session_id,
        "experiment": EXPERIMENT,
        "run_name": "nightly",
        "started_at": started_at,
        "finished_at": FINISHED_AT,
        "status": status,
        "params": params or {f"p{i:03d}": f"value-{i}" for i in range(150)},
        "tags": tags or {"evals.verdict": "pass", "evals.trigger": "nightly", "git.branch": "main"},
        "metrics": {"duration_s": 100.0},
        "programs": programs,
    }
    (bundle / "artifacts" / "plots").mkdir(parents=True)
    (bundle / "session.json").write_text(json.dumps(session), encoding="utf-8")
    (bundle / "artifacts" / "report.html").write_text("<h1>report</h1>", encoding="utf-8")
    (bundle / "artifacts" / "plots" / "confusion.png").write_bytes(PNG)
    for i in range(n_artifacts):
        (bundle / "artifacts" / "many" / f"{i:04d}.txt").parent.mkdir(exist_ok=True)
        (bundle / "artifacts" / "many" / f"{i:04d}.txt").write_text(str(i), encoding="utf-8")
    for name in PROGRAMS:
        (bundle / "programs" / name).mkdir(parents=True)
        (bundle / "programs" / name / "predictions.csv").write_text("id,gold\n1,flu\n")
    return bundle, session_id


def client_for(uri: str) -> MlflowClient:
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def experiment_id(uri: str) -> str:
    found = client_for(uri).get_experiment_by_name(EXPERIMENT)
    assert found is not None
    return str(found.experiment_id)


def runs_of(uri: str, view: str = "ACTIVE_ONLY") -> list[Run]:
    from mlflow.entities import ViewType

    view_type = {"ACTIVE_ONLY": ViewType.ACTIVE_ONLY, "ALL": ViewType.ALL}[view]
    return list(client_for(uri).search_runs([experiment_id(uri)], run_view_type=view_type))


def parents_of(uri: str, session_id: str) -> list[Run]:
    return [run for run in runs_of(uri) if run.data.tags.get(SESSION_TAG) == session_id]


def children_of(uri: str, parent_id: str) -> list[Run]:
    return [run for run in runs_of(uri) if run.data.tags.get(PARENT_TAG) == parent_id]


def artifact_paths(uri: str, run_id: str, path: str | None = None) -> set[str]:
    found: set[str] = set()
    for info in client_for(uri).list_artifacts(run_id, path):
        found |= artifact_paths(uri, run_id, info.path) if info.is_dir else {info.path}
    return found


# --- upload to a sqlite store ------------------------------------------------------------------


def test_upload_logs_parent_nested_runs_params_metrics_tags_and_artifacts(tmp_path: Path, uri: str) -> None:
    metrics = {f"recall.m{i:04d}": i / 1500 for i in range(1500)}
    bundle, session_id = make_bundle(tmp_path, program_metrics={"zero_shot": metrics})

    run_id = upload_bundle(bundle, uri)

    parent = client_for(uri).get_run(run_id)
    assert parent.data.tags[SESSION_TAG] == session_id
    assert (parent.info.run_name, parent.info.status) == ("nightly", "FINISHED")
    assert parent.info.end_time == round(FINISHED_AT * 1000)
    assert parent.data.params == {f"p{i:03d}": f"value-{i}" for i in range(150)}
    assert parent.data.tags["git.branch"] == "main"
    assert artifact_paths(uri, run_id) == {"report.html", "plots/confusion.png"}
    local = client_for(uri).download_artifacts(run_id, "plots/confusion.png", str(tmp_path))
    assert Path(local).read_bytes() == PNG
    assert str(tmp_path) in parent.info.artifact_uri  # next to the db, not ./mlruns
    children = {run.info.run_name: run for run in children_of(uri, run_id)}
    assert sorted(children) == sorted(PROGRAMS)
    zero_shot = children["zero_shot"]
    assert zero_shot.data.metrics == metrics
    assert zero_shot.data.params == {"module": "zero_shot.Predict"}
    assert zero_shot.info.status == "FINISHED"
    history = client_for(uri).get_metric_history(zero_shot.info.run_id, "recall.m1499")
    assert [m.timestamp for m in history] == [round(FINISHED_AT * 1000)]
    assert artifact_paths(uri, zero_shot.info.run_id) == {"predictions.csv"}
    assert len(runs_of(uri)) == 3


@pytest.mark.parametrize("status", ["FINISHED", "FAILED"])
def test_upload_again_returns_the_same_run_and_adds_nothing(tmp_path: Path, uri: str, status: str) -> None:
    bundle, session_id = make_bundle(tmp_path, status=status)

    first = upload_bundle(bundle, uri)
    second = upload_bundle(bundle, uri)

    assert second == first
    assert [run.info.run_id for run in parents_of(uri, session_id)] == [first]
    assert client_for(uri).get_run(first).info.status == status
    assert len(runs_of(uri, "ALL")) == 1 + len(PROGRAMS)


def test_incomplete_parent_left_running_is_replaced(tmp_path: Path, uri: str) -> None:
    bundle, session_id = make_bundle(tmp_path)
    client = client_for(uri)
    eid = client.create_experiment(EXPERIMENT, artifact_location=(tmp_path / "a").as_uri())
    stale = client.create_run(eid, tags={SESSION_TAG: session_id}, run_name="nightly")
    stale_child = client.create_run(eid, tags={PARENT_TAG: stale.info.run_id}, run_name="knn")

    run_id = upload_bundle(bundle, uri)

    assert run_id != stale.info.run_id
    assert [run.info.run_id for run in parents_of(uri, session_id)] == [run_id]
    assert client.get_run(run_id).info.status == "FINISHED"
    assert client.get_run(stale.info.run_id).info.lifecycle_stage == "deleted"
    assert client.get_run(stale_child.info.run_id).info.lifecycle_stage == "deleted"
    assert len(children_of(uri, run_id)) == len(PROGRAMS)


def test_planted_api_key_never_reaches_mlflow(tmp_path: Path, uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", PLANTED)
    bundle, _ = make_bundle(
        tmp_path,
        params={"lm": f"openai/gpt-4o-mini?api_key={PLANTED}", "split": "test"},
        tags={"evals.lm_spec": f"LM(openai/gpt-4o-mini, key={PLANTED})", "evals.trigger": "pr"},
    )
    (bundle / "artifacts" / "lm.txt").write_text(f"spec: openai key={PLANTED}\n")

    run_id = upload_bundle(bundle, uri)

    logged = [value for run in runs_of(uri, "ALL") for value in (*run.data.params.values(), *run.data.tags.values())]
    assert not [value for value in logged if "PLANTED" in value]
    parent = client_for(uri).get_run(run_id)
    assert parent.data.params == {"lm": "***", "split": "test"}
    assert parent.data.tags["evals.trigger"] == "pr"
    text = Path(client_for(uri).download_artifacts(run_id, "lm.txt", str(tmp_path))).read_text()
    assert text == "spec: openai key=***\n"


def test_redactor_applies_to_params_tags_and_text_artifacts(tmp_path: Path, uri: str) -> None:
    bundle, _ = make_bundle(tmp_path, params={"note": "call 555-123-4567 for 3 days"})
    (bundle / "artifacts" / "cases.jsonl").write_text('{"symptoms": "mail me: a@b.org"}\n')

    run_id = upload_bundle(bundle, uri, redactor=Redactor.default())

    parent = client_for(uri).get_run(run_id)
    assert parent.data.params["note"] == "call [REDACTED:phone] for 3 days"
    cases = client_for(uri).download_artifacts(run_id, "cases.jsonl", str(tmp_path))
    assert Path(cases).read_text() == '{"symptoms": "mail me: [REDACTED:email]"}\n'
    png = client_for(uri).download_artifacts(run_id, "plots/confusion.png", str(tmp_path))
    assert Path(png).read_bytes() == PNG


@pytest.mark.parametrize(
    ("corrupt", "expected"),
    [
        (lambda s, b: (b / "session.json").unlink(), "cannot read"),
        (lambda s, b: s.update(status="RUNNING"), "status 'RUNNING'"),
        (lambda s, b: s["metrics"].update(bad="1.0"), "metric 'bad'"),
        (lambda s, b: s.update(session_id="../../etc"), "session_id"),
        (lambda s, b: (b / "programs" / "ghost").mkdir(), "programs/ghost/"),
    ],
)
def test_broken_bundle_raises_config_error_before_touching_mlflow(tmp_path: Path, corrupt: Any, expected: str) -> None:
    bundle, _ = make_bundle(tmp_path)
    session = json.loads((bundle / "session.json").read_text())
    corrupt(session, bundle)
    if (bundle / "session.json").exists():
        (bundle / "session.json").write_text(json.dumps(session))

    with pytest.raises(ConfigError, match="session bundle") as caught:
        upload_bundle(bundle, f"sqlite:///{tmp_path / 'mlflow.db'}")

    assert expected in str(caught.value)
    assert not (tmp_path / "mlflow.db").exists()


def test_unusable_store_raises_one_readable_line(tmp_path: Path) -> None:
    bundle, _ = make_bundle(tmp_path)
    (tmp_path / "a-file").write_text("not a directory")
    uri = f"sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}"

    with pytest.raises(TrackingUnavailable) as caught:
        upload_bundle(bundle, uri)

    message = str(caught.value)
    assert message.startswith(f"MLflow at {uri} ")
    assert "\n" not in message and len(message) < 300


def test_hung_server_times_out_with_bounded_retries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The defaults bound a hung server to ~10 s; a user's own timeout (1 s here, to keep the
    # test quick) is honoured, and the single retry keeps the total near 2 s.
    retries = int(FAST_FAIL_ENV["MLFLOW_HTTP_REQUEST_MAX_RETRIES"])
    assert (retries + 1) * int(FAST_FAIL_ENV["MLFLOW_HTTP_REQUEST_TIMEOUT"]) <= 10
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    bundle, _ = make_bundle(tmp_path)
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(TrackingUnavailable, match="unreachable: timed out"):
            upload_bundle(bundle, uri)
    assert time.monotonic() - started < 5


def test_fast_fail_settings_are_scoped_and_respect_the_user(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "42")

    with (
        pytest.raises(TrackingUnavailable, match="at http://h:1 unreachable: connection refused"),
        mlflow_errors("http://user:pw@h:1"),
    ):
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "42"
        raise ConnectionRefusedError("[Errno 111] Connection refused")

    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "42"


def test_server_errors_become_one_scrubbed_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", PLANTED)

    class RestError(Exception):
        error_code = "INVALID_PARAMETER_VALUE"

    error = unavailable("http://user:pw@h:1", RestError(f"bad value lm={PLANTED}\ntrace..."))

    assert str(error) == "MLflow at http://h:1 failed: INVALID_PARAMETER_VALUE: bad value lm=***"
    assert not error.unreachable


def test_wrapped_connection_errors_count_as_unreachable() -> None:
    wrapped = RuntimeError("API request failed")
    wrapped.__context__ = BrokenPipeError(32, "EPIPE")  # as MLflow re-raises, without "from"

    error = unavailable("http://h:1", wrapped)

    assert error.unreachable
    assert str(error) == "MLflow at http://h:1 unreachable: BrokenPipeError"


def test_batches_respect_mlflows_limits_and_keep_everything() -> None:
    from mlflow.utils import validation

    params, tags, metrics = list(range(250)), list(range(1000, 1030)), list(range(2000, 3500))

    chunks = list(batches(params, tags, metrics))

    assert (MAX_PARAMS_TAGS_PER_BATCH, MAX_METRICS_PER_BATCH, MAX_ENTITIES_PER_BATCH) == (
        validation.MAX_PARAMS_TAGS_PER_BATCH,
        validation.MAX_METRICS_PER_BATCH,
        validation.MAX_ENTITIES_PER_BATCH,
    )
    for p, t, m in chunks:
        assert len(p) <= MAX_PARAMS_TAGS_PER_BATCH and len(t) <= MAX_PARAMS_TAGS_PER_BATCH
        assert len(m) <= MAX_METRICS_PER_BATCH and len(p) + len(t) + len(m) <= 1000
    assert [x for chunk in chunks for x in chunk[0]] == params
    assert [x for chunk in chunks for x in chunk[1]] == tags
    assert [x for chunk in chunks for x in chunk[2]] == metrics
    assert len(chunks) == 3


def test_run_url_hint() -> None:
    assert run_url_hint("http://h:5000/", "3", "abc") == "http://h:5000/#/experiments/3/runs/abc"
    hint = run_url_hint("sqlite:///mlflow.db", "3", "abc")
    assert hint.startswith("mlflow ui --backend-store-uri sqlite:///mlflow.db")
    assert "abc" in hint


# --- spool ---------------------------------------------------------------------------------


def test_spool_bundle_copies_atomically_with_reason(tmp_path: Path) -> None:
    bundle, session_id = make_bundle(tmp_path / "out")
    spool = tmp_path / "spool"

    spooled = spool_bundle(bundle, spool, tracking_uri="http://x:1", reason="MLflow down")
    again = spool_bundle(bundle, spool, tracking_uri="http://x:1", reason="still down")

    assert spooled == again == spool / session_id
    assert pending(spool) == [spooled]
    assert sorted(p.name for p in spool.iterdir()) == [session_id]  # no temp dirs left
    assert "MLflow down" in (spooled / "reason.txt").read_text()
    assert json.loads((spooled / "spool.json").read_text())["tracking_uri"] == "http://x:1"
    assert (spooled / "artifacts" / "plots" / "confusion.png").read_bytes() == PNG
    assert (bundle / "session.json").is_file()


def test_sync_uploads_moves_and_keeps_failures_pending(tmp_path: Path, uri: str) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    dead = f"sqlite:///{tmp_path / 'a-file' / 'x.db'}"
    good, good_id = make_bundle(tmp_path / "out")
    bad, bad_id = make_bundle(tmp_path / "out")
    spool = tmp_path / "spool"
    spool_bundle(good, spool, tracking_uri=uri)
    spool_bundle(bad, spool, tracking_uri=dead)

    first = {result.session_id: result for result in sync_spool(spool)}
    second = sync_spool(spool)

    assert first[good_id].ok and first[good_id].bundle == spool / "synced" / good_id
    assert not first[bad_id].ok and str(first[bad_id].error).startswith(f"MLflow at {dead}")
    assert pending(spool) == [spool / bad_id]
    assert [(r.session_id, r.ok) for r in second] == [(bad_id, False)]
    assert [run.info.run_id for run in parents_of(uri, good_id)] == [first[good_id].run_id]
    assert [r.ok for r in sync_spool(spool, uri)] == [True]
    assert pending(spool) == [] and sync_spool(spool) == []


def test_sync_after_an_upload_that_was_not_moved_is_exactly_once(tmp_path: Path, uri: str) -> None:
    bundle, session_id = make_bundle(tmp_path / "out")
    spooled = spool_bundle(bundle, tmp_path / "spool", tracking_uri=uri)
    run_id = upload_bundle(spooled, uri)  # as if a sync died between upload and move

    results = sync_spool(tmp_path / "spool")

    assert [(r.session_id, r.run_id) for r in results] == [(session_id, run_id)]
    assert [run.info.run_id for run in parents_of(uri, session_id)] == [run_id]


def test_sync_waits_for_the_spool_lock(tmp_path: Path, uri: str) -> None:
    from filelock import FileLock

    bundle, _ = make_bundle(tmp_path / "out")
    spool = tmp_path / "spool"
    spool_bundle(bundle, spool, tracking_uri=uri)
    results: list[Any] = []
    with FileLock(str(spool / ".lock")):
        worker = threading.Thread(target=lambda: results.extend(sync_spool(spool)))
        worker.start()
        worker.join(0.5)
        assert worker.is_alive() and results == []
    worker.join(60)
    assert [r.ok for r in results] == [True]


# --- a real MLflow server --------------------------------------------------------------------


def test_upload_over_http(server: MlflowServer, tmp_path: Path) -> None:
    bundle, session_id = make_bundle(tmp_path, n_metrics=1200)

    run_id = upload_bundle(bundle, server.uri)

    assert [run.info.run_id for run in parents_of(server.uri, session_id)] == [run_id]
    children = children_of(server.uri, run_id)
    assert sorted(run.info.run_name for run in children) == sorted(PROGRAMS)
    assert all(len(run.data.metrics) == 1200 for run in children)
    assert artifact_paths(server.uri, run_id) == {"report.html", "plots/confusion.png"}
    assert "MLFLOW_HTTP_REQUEST_TIMEOUT" not in os.environ


def test_server_killed_while_uploading_then_spooled_and_synced(server: MlflowServer, tmp_path: Path) -> None:
    bundle, session_id = make_bundle(tmp_path / "out", n_artifacts=150)
    killed_at: list[float] = []
    killer = threading.Thread(target=_kill_when_parent_exists, args=(server, session_id, killed_at))
    killer.start()
    with pytest.raises(TrackingUnavailable) as caught:
        upload_bundle(bundle, server.uri)
    failed_at = time.monotonic()
    killer.join(5)
    assert killed_at, f"failed before the server was killed: {caught.value}"
    assert failed_at - killed_at[0] < 15
    assert caught.value.unreachable, str(caught.value)
    assert str(caught.value).startswith(f"MLflow at {server.uri} unreachable: ")
    spool = tmp_path / "spool"
    spool_bundle(bundle, spool, tracking_uri=server.uri, reason=str(caught.value))
    started = time.monotonic()
    while_down = sync_spool(spool)  # the server is still dead: fails fast, stays pending
    assert time.monotonic() - started < 15
    assert [(r.session_id, r.ok) for r in while_down] == [(session_id, False)]

    server.start()
    synced = sync_spool(spool)

    assert [(r.session_id, r.ok) for r in synced] == [(session_id, True)]
    finished = parents_of(server.uri, session_id)
    assert [(run.info.run_id, run.info.status) for run in finished] == [(synced[0].run_id, "FINISHED")]
    deleted = [r for r in runs_of(server.uri, "ALL") if r.info.lifecycle_stage == "deleted"]
    assert any(run.data.tags.get(SESSION_TAG) == session_id for run in deleted)
    assert sync_spool(spool) == []
    assert len(parents_of(server.uri, session_id)) == 1


def _kill_when_parent_exists(server: MlflowServer, session_id: str, killed_at: list[float]) -> None:
    """SIGKILL the server as soon as the upload created the session's parent run."""
    database = server.root / "mlflow.db"
    deadline = time.monotonic() + 60
    query = "SELECT 1 FROM tags WHERE key = ? AND value = ?"
    while time.monotonic() < deadline:
        try:
            with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=1) as db:
                if db.execute(query, (SESSION_TAG, session_id)).fetchone():
                    server.kill()
                    killed_at.append(time.monotonic())
                    return
        except sqlite3.Error:
            pass
        time.sleep(0.005)


# --- history and the CLI ---------------------------------------------------------------------


def _session(run_id: str, programs: dict[str, dict[str, float]]) -> Session:
    results = {name: ProgramResult(name, f"{run_id}-{name}", m) for name, m in programs.items()}
    return Session(run_id, run_id, 0.0, "FINISHED", {}, results)


def test_compare_reports_headline_metrics_and_only_changed_recalls() -> None:
    before = _session("a", {"p": {"accuracy": 0.5, "macro_f1": 0.4, "invalid_rate": 0.1,
                                  "recall.flu": 0.5, "recall.dengue": 0.9}})  # fmt: skip
    after = _session("b", {"p": {"accuracy": 0.6, "macro_f1": 0.4, "invalid_rate": 0.2,
                                 "recall.flu": 0.5, "recall.dengue": 0.7},
                           "new": {"accuracy": 0.3}})  # fmt: skip

    deltas = compare(before, after)

    assert [(d.program, d.metric) for d in deltas] == [
        ("new", "accuracy"), ("new", "macro_f1"), ("new", "invalid_rate"),
        ("p", "accuracy"), ("p", "macro_f1"), ("p", "invalid_rate"), ("p", "recall.dengue"),
    ]  # fmt: skip
    better = {(d.program, d.metric): d.better for d in deltas}
    assert better[("p", "accuracy")] is True
    assert better[("p", "macro_f1")] is None
    assert better[("p", "invalid_rate")] is False  # lower is better
    assert better[("p", "recall.dengue")] is False
    assert Delta("new", "accuracy", None, 0.3).change is None


def test_recent_sessions_reads_back_complete_sessions_newest_first(tmp_path: Path, uri: str) -> None:
    old, _ = make_bundle(tmp_path, started_at=FINISHED_AT - 200)
    new, _ = make_bundle(tmp_path, program_metrics={"knn_few_shot": {"accuracy": 0.75}})
    old_id, new_id = upload_bundle(old, uri), upload_bundle(new, uri)
    client_for(uri).create_run(experiment_id(uri), tags={SESSION_TAG: "f" * 32})  # incomplete

    sessions = recent_sessions(uri, EXPERIMENT, last=5)

    assert [s.run_id for s in sessions] == [new_id, old_id]
    assert sessions[0].programs["knn_few_shot"].metrics == {"accuracy": 0.75}
    assert (sessions[0].verdict, sessions[0].trigger, sessions[0].branch) == (
        "pass", "nightly", "main"
    )  # fmt: skip
    assert [s.run_id for s in recent_sessions(uri, EXPERIMENT, last=1)] == [new_id]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **QUIET_ENV, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    env.pop("EVALS_TRACKING_URI", None)
    env.pop("EVALS_EXPERIMENT", None)
    return subprocess.run(
        [sys.executable, "-m", "evals", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_cli_sync_prints_one_line_per_bundle_and_exits_1_if_any_stayed(tmp_path: Path, uri: str) -> None:
    good, good_id = make_bundle(tmp_path / "out")
    bad, bad_id = make_bundle(tmp_path / "out")
    spool_bundle(good, tmp_path / "spool", tracking_uri=uri)
    spool_bundle(bad, tmp_path / "spool", tracking_uri="http://127.0.0.1:1")

    done = run_cli("sync", "--spool", "spool", cwd=tmp_path)

    lines = sorted(done.stdout.splitlines())
    run_id = parents_of(uri, good_id)[0].info.run_id
    assert lines == sorted([
        f"synced {good_id}: run {run_id}",
        f"pending {bad_id}: MLflow at http://127.0.0.1:1 unreachable: connection refused",
    ])  # fmt: skip
    assert done.returncode == 1
    assert "Traceback" not in done.stderr


def test_cli_report_lists_sessions_and_compares_the_last_two(tmp_path: Path, uri: str) -> None:
    base = {"accuracy": 0.5, "macro_f1": 0.5, "invalid_rate": 0.1, "recall.dengue": 0.8,
            "recall.malaria": 0.4}  # fmt: skip
    old, _ = make_bundle(tmp_path, started_at=FINISHED_AT - 200, program_metrics={"knn_few_shot": base})
    newer = {**base, "accuracy": 0.625, "recall.malaria": 0.2}
    new, _ = make_bundle(tmp_path, program_metrics={"knn_few_shot": newer})
    old_id, new_id = upload_bundle(old, uri), upload_bundle(new, uri)

    done = run_cli("report", "--tracking-uri", uri, "--experiment", EXPERIMENT, cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    assert old_id in done.stdout and new_id in done.stdout
    assert "0.625" in done.stdout
    assert "+0.125" in done.stdout
    assert "recall.malaria" in done.stdout and "-0.200" in done.stdout
    assert "recall.dengue" not in done.stdout  # unchanged recalls are left out


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("report", "--tracking-uri", "sqlite:///nowhere.db"), 2, "error: no MLflow database"),
        (
            ("report", "--tracking-uri", "http://127.0.0.1:1"),
            1,
            "error: MLflow at http://127.0.0.1:1 unreachable: connection refused",
        ),
    ],
)  # fmt: skip
def test_cli_errors_are_one_line_with_exit_codes(
    tmp_path: Path, args: tuple[str, ...], code: int, message: str
) -> None:
    done = run_cli(*args, cwd=tmp_path)

    assert done.returncode == code
    assert done.stderr.strip().startswith(message)
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "nowhere.db").exists()
