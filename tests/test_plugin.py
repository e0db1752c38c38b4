"""The session plugin end to end, with and without xdist (scripted DummyLM, real MLflow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

XDIST = pytest.mark.parametrize("xdist", ["", "-n 2"], ids=["no-xdist", "xdist-2"])


def run(project: pytest.Pytester, *args: str) -> pytest.RunResult:
    return project.runpytest_subprocess(*[a for arg in args for a in arg.split()], "-p", "no:cacheprovider")


def bundles(project: pytest.Pytester) -> list[Path]:
    return sorted((project.path / ".evals" / "reports").glob("*/session.json"))


STORE_DUMP = """
import json, sys
from mlflow.tracking import MlflowClient
client = MlflowClient(sys.argv[1])
experiment = client.get_experiment_by_name("symptom-diagnosis-evals")
runs = client.search_runs([experiment.experiment_id]) if experiment else []
print(json.dumps([{"id": r.info.run_id, "status": r.info.status, "tags": r.data.tags,
                   "params": r.data.params, "metrics": r.data.metrics} for r in runs]))
"""


def store_runs(uri: str) -> tuple[list[dict], list[dict]]:
    """(parent runs, all runs) of the experiment, read in a subprocess.

    pytester restores sys.modules after each test, which breaks SQLAlchemy if MLflow is
    imported in this process, so the store is read from a fresh interpreter.
    """
    done = subprocess.run([sys.executable, "-c", STORE_DUMP, uri], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    runs = json.loads(done.stdout)
    return [r for r in runs if "mlflow.parentRunId" not in r["tags"]], runs


def parent_runs(project: pytest.Pytester) -> tuple[list[dict], list[dict]]:
    return store_runs(f"sqlite:///{project.path / 'mlflow.db'}")


@XDIST
def test_session_logs_one_parent_run_with_a_nested_run_per_program(eval_project: pytest.Pytester, xdist: str) -> None:
    result = run(eval_project, xdist, "--evals-programs zero_shot,chain_of_thought")

    assert result.ret == 0, result.stdout.str()
    result.assert_outcomes(passed=44)
    result.stdout.fnmatch_lines(["*symptom-diagnosis evals*", "*zero_shot (n=44)*", "*MLflow: *", "*HTML report:*"])
    parents, runs = parent_runs(eval_project)
    assert len(parents) == 1 and len(runs) == 3
    parent = parents[0]
    assert parent["tags"]["evals.verdict"] == "pass"
    assert parent["params"]["dataset.split"] == "test"
    assert parent["metrics"]["zero_shot.accuracy"] == pytest.approx(0.5)
    children = {r["tags"]["mlflow.runName"]: r for r in runs if r["id"] != parent["id"]}
    assert set(children) == {"zero_shot", "chain_of_thought"}
    assert children["zero_shot"]["metrics"]["recall.migraine"] == pytest.approx(0.5)


def test_xdist_and_single_process_aggregate_identically(eval_project: pytest.Pytester) -> None:
    assert run(eval_project).ret == 0
    assert run(eval_project, "-n 2").ret == 0

    first, second = (json.loads(path.read_text()) for path in bundles(eval_project))
    assert first["session_id"] != second["session_id"]
    assert first["params"]["xdist.workers"] == "1" and second["params"]["xdist.workers"] == "2"
    # Everything but wall-clock latency must be identical.
    metrics = [
        {k: v for k, v in s["programs"]["zero_shot"]["metrics"].items() if not k.startswith("latency")}
        for s in (first, second)
    ]
    assert metrics[0] == metrics[1]
    assert metrics[0]["accuracy"] == 0.5 and len(metrics[0]) > 80


@XDIST
def test_session_threshold_breach_fails_with_one_red_line(eval_project: pytest.Pytester, xdist: str) -> None:
    thresholds = eval_project.path / "thresholds.yaml"
    thresholds.write_text(thresholds.read_text().replace("min_accuracy: 0.0", "min_accuracy: 0.9"))

    result = run(eval_project, xdist)

    assert result.ret == 1
    result.assert_outcomes(passed=22)
    result.stdout.fnmatch_lines(["ERROR: zero_shot: accuracy 0.50 < min 0.90"])
    parents, _ = parent_runs(eval_project)
    assert parents[0]["tags"]["evals.verdict"] == "fail"


@XDIST
def test_diagnosis_floor_fails_inside_the_parametrized_test(eval_project: pytest.Pytester, xdist: str) -> None:
    thresholds = eval_project.path / "thresholds.yaml"
    thresholds.write_text(thresholds.read_text() + "      overrides:\n        migraine: 0.6\n")

    result = run(eval_project, xdist, "-rf")

    assert result.ret == 1
    result.assert_outcomes(passed=21, failed=1)
    result.stdout.fnmatch_lines(["*recall 0.50 < floor 0.60 for 'migraine' (zero_shot, n=2)*"])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("version: 1\nprograms: [", "ERROR: *thresholds.yaml: line *not valid YAML*"),
        (
            "version: 1\nprograms:\n  zero_shot:\n    min_accuracy: 1.5\n",
            "ERROR: *thresholds.yaml: programs.zero_shot.min_accuracy: expected a number between 0 and 1, found 1.5",
        ),
        ("version: 1\nprograms:\n  knn:\n    min_accuracy: 0.1\n", "ERROR: *unknown program 'knn'*"),
    ],
    ids=["not-yaml", "out-of-range", "unknown-program"],
)
def test_bad_thresholds_is_a_usage_error_before_any_test(
    eval_project: pytest.Pytester, edit: str, message: str
) -> None:
    (eval_project.path / "thresholds.yaml").write_text(edit)

    result = run(eval_project, "-n 2")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "Traceback" not in result.stderr.str()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("--evals-programs nope", "ERROR: --evals-programs: unknown program 'nope'; known programs: *"),
        ("--evals-per-diagnosis zero", "ERROR: --evals-per-diagnosis: expected a positive integer or 'all'*"),
        ("--evals-lm not-a-model", "ERROR: unknown LM spec 'not-a-model'*"),
        ("--evals-lm /nowhere/model.gguf", "ERROR: LM '/nowhere/model.gguf': GGUF file * not found"),
    ],
    ids=["program", "sample-size", "lm-spec", "gguf-path"],
)
def test_bad_options_are_one_line_usage_errors(eval_project: pytest.Pytester, args: str, message: str) -> None:
    result = run(eval_project, args)

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "Traceback" not in result.stderr.str()


def test_unreachable_mlflow_spools_the_session_and_sync_uploads_it_once(
    eval_project: pytest.Pytester, tmp_path: Path
) -> None:
    result = run(eval_project, "--evals-tracking-uri http://127.0.0.1:9")

    assert result.ret == 0
    result.stdout.fnmatch_lines(["*MLflow at http://127.0.0.1:9 unreachable*python -m evals sync*"])
    spool = eval_project.path / ".evals" / "spool"
    store = f"sqlite:///{tmp_path / 'later.db'}"
    for _ in range(2):
        synced = subprocess.run(
            [sys.executable, "-m", "evals", "sync", "--spool", str(spool), "--tracking-uri", store],
            capture_output=True,
            text=True,
            cwd=eval_project.path,
            timeout=300,
        )
        assert synced.returncode == 0, synced.stdout + synced.stderr
    parents, _ = store_runs(store)
    assert len(parents) == 1 and parents[0]["status"] == "FINISHED"


def test_help_lists_the_options_in_their_own_group(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--help")

    result.stdout.fnmatch_lines(["symptom-diagnosis evals:", "*--evals-lm=LM*", "*--evals-per-diagnosis*"])
