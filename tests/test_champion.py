"""Champion gate end to end: promote, no false alarm, a weakened program fails, refusals, rollback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from evals.gates.champion import is_local_store
from evals.store.registry import promotion_blockers
from tests.mlflow_server import QUIET_ENV
from tests.test_plugin import run


def cli(project: pytest.Pytester, *args: str) -> subprocess.CompletedProcess[str]:
    uri = f"sqlite:///{project.path / 'mlflow.db'}"
    return subprocess.run(
        [sys.executable, "-m", "evals", *args, "--tracking-uri", uri],
        capture_output=True,
        text=True,
        cwd=project.path,
        timeout=300,
    )


def test_promote_compare_weaken_refuse_and_rollback(
    eval_project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = run(eval_project, "-n 2 --evals-promote")
    assert first.ret == 0, first.stdout.str()
    first.stdout.fnmatch_lines(["*zero_shot: promoted symptom-diagnosis.zero_shot version none -> 1*"])

    unchanged = run(eval_project, "--evals-promote")
    assert unchanged.ret == 0, unchanged.stdout.str()
    unchanged.stdout.fnmatch_lines(
        [
            "*Regression against the champion*",
            "*zero_shot*accuracy*0.500*0.500*ok*",
            "*promoted symptom-diagnosis.zero_shot version 1 -> 2*",
        ]
    )

    monkeypatch.setenv("EVALS_TEST_WEAKEN", "1")
    weakened = run(eval_project, "-n 2 --evals-promote")
    assert weakened.ret == 1
    weakened.stdout.fnmatch_lines(
        ["ERROR: zero_shot: accuracy 0.500 → 0.000 (Δ −0.500, 95% CI *McNemar p<0.001) is a regression"]
    )
    weakened.stdout.fnmatch_lines(["*promotion refused*a gate failed*"])
    monkeypatch.delenv("EVALS_TEST_WEAKEN")

    partial = run(eval_project, "-k migraine --evals-promote")
    assert partial.ret == 1, partial.stdout.str()  # the champion saw other examples: comparison refused
    partial.stdout.fnmatch_lines(["*promotion refused*the session is incomplete*"])
    partial.stdout.fnmatch_lines(["ERROR: zero_shot: cannot compare*"])

    rolled = cli(eval_project, "rollback", "zero_shot")
    assert rolled.returncode == 0, rolled.stderr
    assert "rolled back symptom-diagnosis.zero_shot version 2 -> 1" in rolled.stdout


def test_baseline_run_with_other_examples_is_refused(eval_project: pytest.Pytester) -> None:
    assert run(eval_project, "--evals-promote").ret == 0
    other_sample = run(eval_project, "--evals-per-diagnosis 1")

    assert other_sample.ret == 1
    other_sample.stdout.fnmatch_lines(["ERROR: zero_shot: *only in*"])


LOOKUP = """
import json, sys
from evals.store.champions import find_champion
from evals.store.client import TrackingUnavailable, mlflow_errors
uri = sys.argv[1]
try:
    with mlflow_errors(uri):
        print(json.dumps({"champion": None if find_champion(uri, "zero_shot") is None else "found"}))
except TrackingUnavailable as exc:
    print(json.dumps({"unavailable": str(exc)}))
"""


def lookup(uri: str) -> dict[str, str | None]:
    """find_champion in a fresh interpreter (pytester's sys.modules juggling breaks SQLAlchemy here)."""
    env = {**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", **QUIET_ENV}
    done = subprocess.run([sys.executable, "-c", LOOKUP, uri], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.splitlines()[-1]))


class _Failing(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(503)
        self.end_headers()
        self.wfile.write(b"upstream database down")

    def log_message(self, *args: object) -> None:
        pass


def test_a_missing_champion_is_none_but_a_failing_lookup_is_not(tmp_path: Path) -> None:
    assert lookup(f"sqlite:///{tmp_path / 'fresh.db'}") == {"champion": None}  # no model registered yet
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        answer = lookup(f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
    assert set(answer) == {"unavailable"} and f"127.0.0.1:{server.server_port}" in str(answer["unavailable"])


def test_promotion_blockers_refuse_an_unavailable_gate_and_a_weak_comparison() -> None:
    passed = {"evals.complete": "true", "evals.verdict": "pass"}
    assert promotion_blockers({**passed, "evals.regression": "pass"}, {}, {}) == []
    assert promotion_blockers({**passed, "evals.regression": "none"}, {}, {}) == []  # no champion yet
    unavailable = {**passed, "evals.regression": "unavailable", "evals.regression.reason": "MLflow at x unreachable"}
    assert promotion_blockers(unavailable, {}, {}) == ["the regression gate could not run (MLflow at x unreachable)"]
    weak = {**passed, "evals.regression": "pass", "evals.regression.too_weak": "knn: comparison too weak: ..."}
    assert promotion_blockers(weak, {}, {}) == ["knn: comparison too weak: ..."]


@pytest.mark.parametrize(
    ("uri", "local"),
    [
        ("sqlite:///mlflow.db", True),
        ("mlruns", True),
        ("file:///tmp/mlruns", True),
        ("C:\\mlruns", True),
        ("http://mlflow.internal:5000", False),
        ("https://x.example", False),
        ("postgresql://u@db/mlflow", False),
        ("databricks", False),
        ("databricks://profile", False),
    ],
)
def test_local_stores_are_recognised(uri: str, local: bool) -> None:
    assert is_local_store(uri) is local
