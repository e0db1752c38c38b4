"""The ``merge`` row: ``python -m evals merge`` of 2 shards against the session they make.

A scripted project (the harness tests' fake keyword engine, a synthetic dataset naming each
label, no LM) runs 5 programs x 22 diagnoses x 2 examples once whole, then as ``--evals-shard
1/2`` and ``2/2``; ``python -m evals merge`` makes one session of the two bundles and logs it to
a fresh sqlite MLflow store, as CI's merge job does (then again with ``--no-mlflow``: the bundle
only). The ratio is the bundle-only merge's wall time (a whole process, imports included) over the
whole session's, neither logging to MLflow; the merged records and verdict must equal the whole
session's. ``merge_s`` adds the MLflow logging (one parent run, 5 nested runs, traces, models) that
a whole session logging to MLflow pays too.
"""

from __future__ import annotations

import csv
import sys
import textwrap
from pathlib import Path

from bench.common import ROOT, BenchError
from bench.processes import ProcessRun, failure, run_process
from bench.results import Goal, Row, ratio

PROGRAMS = "zero_shot,chain_of_thought,knn_few_shot,tfidf_logreg,zero_shot+knn_few_shot"
PER_DIAGNOSIS = 2


def write_project(work: Path) -> Path:
    """A pytest project: the eval suite, the fake keyword engine, lenient thresholds, synthetic data."""
    from tests.conftest import KEYWORD_CONFTEST, SUITE, THRESHOLDS, write_tiny_dataset

    project = work / "project"
    project.mkdir(parents=True, exist_ok=True)
    data = write_tiny_dataset(project / "data", test_per_label=PER_DIAGNOSIS)
    (project / "test_suite.py").write_text(textwrap.dedent(SUITE))
    (project / "conftest.py").write_text(textwrap.dedent(KEYWORD_CONFTEST))
    (project / "thresholds.yaml").write_text(textwrap.dedent(THRESHOLDS))
    (project / "pytest.ini").write_text(
        f"[pytest]\nevals_data_dir = {data}\nevals_programs = {PROGRAMS}\n"
        f"evals_per_diagnosis = {PER_DIAGNOSIS}\nevals_trigger = local\n"
        f"evals_optimizers = {ROOT / 'programs' / 'optimizers.yaml'}\n"
    )
    return project


def _pytest(project: Path, name: str, *args: str) -> ProcessRun:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider"]
    command += ["--evals-cache-dir", str(project / "cache"), "--evals-report-dir", str(project / name), *args]
    run = run_process(command, project / f"{name}.log", cwd=project)
    if run.returncode not in (0, 1):  # 1: a gate failed (chain_of_thought's answers lack reasoning), not the point
        raise failure(f"pytest {' '.join(args) or '(whole)'}", run)
    return run


def _records(report_dir: Path) -> list[list[str]]:
    (predictions,) = report_dir.glob("*/artifacts/predictions.csv")
    with predictions.open(newline="") as handle:
        return [[v for k, v in row.items() if not k.startswith("latency")] for row in csv.DictReader(handle)]


def merge_row(work: Path) -> Row:
    """Run the whole session, the 2 shards and the merge; the row compares the merge with the session."""
    project = write_project(work)
    whole = _pytest(project, "whole", "--evals-no-mlflow")
    shards = [_pytest(project, "shards", "--evals-shard", f"{k}/2") for k in (1, 2)]  # a shard logs nothing
    uri = f"sqlite:///{project / 'mlflow.db'}"
    command = [sys.executable, "-m", "evals", "merge", str(project / "shards"), "--out", str(project / "merged")]
    merged = run_process([*command, "--tracking-uri", uri], project / "merge.log", cwd=project)
    if merged.returncode != whole.returncode:  # the same verdict: 1 when a gate failed
        raise failure("python -m evals merge", merged)
    local = run_process([*command[:-1], str(project / "merged-local"), "--no-mlflow"], project / "merge-local.log")
    if local.returncode != whole.returncode:
        raise failure("python -m evals merge --no-mlflow", local)
    records = _records(project / "merged")
    if records != _records(project / "whole"):
        raise BenchError(f"the merged records differ from the whole session's ({project})")
    values = {
        "whole_session_s": whole.wall_s,
        "shard_1_s": shards[0].wall_s,
        "shard_2_s": shards[1].wall_s,
        "merge_s": merged.wall_s,
        "merge_bundle_only_s": local.wall_s,
        "merge_peak_rss_mib": merged.peak_rss_mib,
        "examples": float(len(records)),
    }
    return Row(
        f"merge of 2 shards ({len(records)} examples, MLflow sqlite)",
        values,
        ratio(local.wall_s, whole.wall_s),
        Goal("<=", 0.25),
        "python -m evals merge --no-mlflow wall time / the whole session's (-n 0, --evals-no-mlflow); records equal",
    )


if __name__ == "__main__":  # python -m bench.merge [WORK_DIR]: the row alone
    import json
    import tempfile

    directory = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="bench-merge-"))
    print(json.dumps(merge_row(directory).to_dict(), indent=2))
