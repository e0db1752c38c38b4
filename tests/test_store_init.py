"""Sessions starting at once on a new sqlite store: all land, no warning, the store stays usable.

Without the lock beside the database this fails on nearly every round here: MLflow's schema
setup races (``alembic_version ... 0 found``, ``table ... already exists``). Set
``STORE_RACE_WITHOUT_LOCK=1`` to see it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evals.store.client import lock_path, sqlite_file
from tests.mlflow_server import QUIET_ENV
from tests.test_tracking import EXPERIMENT, client_for, make_bundle

PROCESSES = 4
ROUNDS = 2

# Each process imports MLflow, says it is ready, then waits for the go file: they all open the
# new store within a millisecond or two of each other.
WORKER = """
import os, sys, time
from pathlib import Path

uri, bundle, ready, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
import mlflow.tracking
from evals.store import client as store
from evals.store.publish import publish_bundle

if os.environ.get("STORE_RACE_WITHOUT_LOCK"):
    store._ready.add(uri)  # as if this process had initialised the store already: no lock
ready.write_text("ready")
while not go.exists():
    time.sleep(0.001)
print(publish_bundle(bundle, uri).run_id)
"""


def race(root: Path) -> list[subprocess.CompletedProcess[str]]:
    """Start PROCESSES uploads of their own bundles to a new store at the same moment."""
    uri = f"sqlite:///{root / 'mlflow.db'}"
    go = root / "go"
    env = {**os.environ, **QUIET_ENV}
    procs = []
    for i in range(PROCESSES):
        bundle, _ = make_bundle(root / "bundles")
        command = [sys.executable, "-c", WORKER, uri, str(bundle), str(root / f"ready-{i}"), str(go)]
        procs.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    deadline = time.monotonic() + 120
    while len(list(root.glob("ready-*"))) < PROCESSES and time.monotonic() < deadline:
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.01)
    go.write_text("go")
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_concurrent_first_uploads_to_a_new_sqlite_store_all_land(tmp_path: Path, round_: int) -> None:
    results = race(tmp_path)

    for done in results:
        assert done.returncode == 0, done.stderr[-2000:]
        problems = [line for line in done.stderr.splitlines() if "INFO" not in line]
        assert problems == [], done.stderr[-2000:]  # not even a warning
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = client_for(uri).get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    parents = client_for(uri).search_runs([experiment.experiment_id], filter_string="tags.`evals.session_id` LIKE '%'")
    assert sorted(run.info.run_id for run in parents if "mlflow.parentRunId" not in run.data.tags) == sorted(
        done.stdout.strip() for done in results
    )
    assert client_for(uri).search_registered_models() == []  # the registry store opens too
    assert lock_path(tmp_path / "mlflow.db").is_file()


def test_sqlite_file_of_a_uri() -> None:
    assert sqlite_file("sqlite:///mlflow.db") == Path("mlflow.db")
    assert sqlite_file("sqlite:////abs/dir/m.db?timeout=5") == Path("/abs/dir/m.db")
    assert sqlite_file("sqlite:///:memory:") is None
    assert sqlite_file("http://127.0.0.1:5000") is None
    assert lock_path(Path("/a/mlflow.db")) == Path("/a/mlflow.db.lock")


def test_experiment_created_by_another_session_meanwhile_is_used(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from evals.store.upload import ensure_experiment

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    existing = MlflowClient(uri).create_experiment("raced")

    class LateClient(MlflowClient):
        """Looks the experiment up before the other session's create landed, then sees it."""

        looked = 0

        def get_experiment_by_name(self, name: str):  # type: ignore[no-untyped-def]
            self.looked += 1
            return None if self.looked == 1 else super().get_experiment_by_name(name)

    assert ensure_experiment(LateClient(uri), "raced", uri) == existing
