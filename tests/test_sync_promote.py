"""A spooled session, once synced, is exactly like a live one: registered, promotable, rolled back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_champion import cli
from tests.test_plugin import parent_runs, run

REGISTERED = """
import json, sys
from mlflow.tracking import MlflowClient
client = MlflowClient(sys.argv[1])
name = "symptom-diagnosis.zero_shot"
versions = [client.get_model_version(name, v.version) for v in client.search_model_versions(f"name = '{name}'")]
print(json.dumps(sorted([{"version": str(v.version), "run_id": v.run_id, "tags": v.tags, "aliases": sorted(v.aliases)}
                         for v in versions], key=lambda v: int(v["version"]))))
"""


def registered_versions(project: pytest.Pytester) -> list[dict]:
    done = subprocess.run(
        [sys.executable, "-c", REGISTERED, f"sqlite:///{project.path / 'mlflow.db'}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_spool_sync_promote_rollback(eval_project: pytest.Pytester) -> None:
    # The store answers the champion lookup, but artifacts cannot be written: the upload fails mid-way.
    blocker = eval_project.path / "mlartifacts"
    blocker.write_text("not a directory")
    spooled = run(eval_project, "-n 2")
    assert spooled.ret == 0, spooled.stdout.str()
    spooled.stdout.fnmatch_lines(["*session kept in *spool*python -m evals sync*"])
    assert [p["status"] for p in parent_runs(eval_project)[0]] == ["RUNNING"]  # the interrupted upload
    blocker.unlink()

    synced = cli(eval_project, "sync", "--spool", ".evals/spool")

    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert "registered symptom-diagnosis.zero_shot version 1 as 'candidate'" in synced.stdout, synced.stdout
    parents = [p for p in parent_runs(eval_project)[0] if p["status"] != "RUNNING"]
    assert len(parents) == 1 and parents[0]["status"] == "FINISHED"
    spooled_run = parents[0]["id"]
    versions = registered_versions(eval_project)
    assert [(v["version"], v["aliases"]) for v in versions] == [("1", ["candidate"])]
    assert versions[0]["tags"]["evals.session_run"] == spooled_run  # tagged exactly as the live path tags
    assert "evals.compile_key" in versions[0]["tags"]
    again = cli(eval_project, "sync", "--spool", ".evals/spool")
    assert again.returncode == 0 and "nothing to sync" in again.stdout
    assert len(registered_versions(eval_project)) == 1

    promoted = cli(eval_project, "promote", spooled_run)
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    assert "zero_shot: promoted symptom-diagnosis.zero_shot version none -> 1" in promoted.stdout

    live = run(eval_project, "--evals-promote")  # compared with the synced champion, then promoted over it
    assert live.ret == 0, live.stdout.str()
    live.stdout.fnmatch_lines(["*zero_shot: promoted symptom-diagnosis.zero_shot version 1 -> 2*"])

    rolled = cli(eval_project, "rollback", "zero_shot")
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    assert "rolled back symptom-diagnosis.zero_shot version 2 -> 1" in rolled.stdout
    assert [v["aliases"] for v in registered_versions(eval_project)] == [["champion"], ["candidate"]]


def test_resync_of_a_published_bundle_adds_nothing(eval_project: pytest.Pytester, tmp_path: Path) -> None:
    assert run(eval_project).ret == 0
    bundle = next((eval_project.path / ".evals" / "reports").iterdir())
    uri = f"sqlite:///{eval_project.path / 'mlflow.db'}"
    code = (
        "import sys; from evals.store.publish import publish_bundle; "
        "p = publish_bundle(__import__('pathlib').Path(sys.argv[1]), sys.argv[2]); print(p.run_id, p.registered)"
    )

    first, second = (
        subprocess.run(
            [sys.executable, "-c", code, str(bundle), uri], capture_output=True, text=True, timeout=120, check=False
        )
        for _ in range(2)
    )

    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    assert "'symptom-diagnosis.zero_shot': '1'" in first.stdout
    assert len(registered_versions(eval_project)) == 1
    assert len(parent_runs(eval_project)[0]) == 1
