"""``--evals-shard K/N`` and ``python -m evals merge``: shards of a scripted project, merged into one session.

The equality test runs the same DummyLM project once whole and once as 2 shards (one under
``-n 2``), merges the shards' bundles and compares what a user reads: per-program metrics (all but
the timings), every record in order, and the verdict. The refusals use hand-built shard bundles.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from evals.__main__ import main
from evals.config.policies import parse_policies
from evals.config.shard import Shard, parse_shard, shard_index
from evals.config.thresholds import parse_thresholds
from evals.labels import DIAGNOSES
from evals.results.bundle import write_bundle
from evals.results.shard import shard_summary
from evals.results.summary import summarize
from evals.store.schema import SHARD_FILE, Bundle
from evals.store.view import StoreView
from tests.contexts import make_context, records
from tests.test_plugin import store_runs

TIMING = ("latency",)
"""Metric and column names (prefixes) that measure time: the only ones a merge may not reproduce."""


# ----- the rule -----


@pytest.mark.parametrize("text", ["3/2", "0/4", "x", "1/0", "2", "-1/2"])
def test_bad_shard_values_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="expected K/N"):
        parse_shard(text)


def test_a_shard_reads_and_prints_as_k_of_n() -> None:
    assert parse_shard(" 2 / 4") == Shard(2, 4) and str(Shard(2, 4)) == "2/4"


def test_the_default_programs_are_dealt_evenly_over_the_shards() -> None:
    programs = ["zero_shot", "chain_of_thought", "knn_few_shot", "tfidf_logreg", "zero_shot+knn_few_shot"]
    for count in (2, 3, 4):
        sizes = Counter(shard_index(p, d, "", count) for p in programs for d in DIAGNOSES)
        assert set(sizes) == set(range(1, count + 1))
        # Each program deals its 22 diagnoses round-robin: at most one test per program apart.
        assert max(sizes.values()) - min(sizes.values()) <= len(programs), sizes
        for program in programs:
            mine = Counter(shard_index(program, d, "", count) for d in DIAGNOSES)
            assert max(mine.values()) - min(mine.values()) <= 1


# ----- the pytest option -----


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--evals-shard", "3/2"], None, "--evals-shard: expected K/N with 1 <= K <= N, found '3/2'"),
        (["--evals-shard", "0/4"], None, "--evals-shard: expected K/N with 1 <= K <= N, found '0/4'"),
        ([], "x", "environment variable EVALS_SHARD: expected K/N (shard K of N, e.g. 2/4), found 'x'"),
    ],
)
def test_a_bad_shard_is_one_line_naming_the_option(
    eval_project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, args: list[str], env: str | None, message: str
) -> None:
    if env is not None:
        monkeypatch.setenv("EVALS_SHARD", env)
    result = eval_project.runpytest_subprocess("--collect-only", "-q", *args)

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert [line for line in result.stderr.lines if line.strip()] == [f"ERROR: {message}"]


def _collected(project: pytest.Pytester, *args: str) -> set[str]:
    result = project.runpytest_subprocess("--collect-only", "-q", "--evals-programs", "zero_shot,knn_few_shot", *args)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    return {line for line in result.stdout.lines if "::test_diagnosis[" in line}


def test_shards_partition_the_tests_and_are_stable_under_k(eval_project: pytest.Pytester) -> None:
    everything = _collected(eval_project)
    first, second = _collected(eval_project, "--evals-shard", "1/2"), _collected(eval_project, "--evals-shard", "2/2")
    assert len(everything) == 44 and first | second == everything and not first & second
    assert 20 <= len(first) <= 24

    narrowed = _collected(eval_project, "--evals-shard", "1/2", "-k", "knn_few_shot or flu")
    # -k only removes tests from a shard: none moves in from the other one.
    assert narrowed == {t for t in first if "knn_few_shot" in t or "flu" in t} and narrowed


# ----- one session from two shards -----


def _bundle(report_dir: Path) -> Path:
    (bundle,) = [p for p in report_dir.iterdir() if (p / "session.json").is_file()]
    return bundle


def _metrics(bundle: Path) -> dict[str, dict[str, float]]:
    loaded = Bundle.load(bundle)
    return {
        name: {k: v for k, v in run.metrics.items() if not k.startswith(TIMING)}
        for name, run in loaded.programs.items()
    }


def _records(bundle: Path) -> list[dict[str, Any]]:
    with open(bundle / "artifacts" / "predictions.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if not k.startswith(TIMING)} for row in csv.DictReader(handle)]


def test_two_shards_merged_equal_the_whole_session(eval_project: pytest.Pytester, tmp_path: Path) -> None:
    programs = ("--evals-programs", "zero_shot,knn_few_shot")
    whole = eval_project.runpytest_subprocess(*programs, "--evals-report-dir", "whole")
    assert whole.ret == pytest.ExitCode.OK, whole.stdout.str()
    first = eval_project.runpytest_subprocess(
        *programs, "--evals-report-dir", "shards", "--evals-shard", "1/2", "-n", "2"
    )
    second = eval_project.runpytest_subprocess(*programs, "--evals-report-dir", "shards", "--evals-shard", "2/2")
    for shard in (first, second):
        assert shard.ret == pytest.ExitCode.OK, shard.stdout.str()
        shard.stdout.fnmatch_lines(["*shard ?/2: not logged to MLflow*python -m evals merge*"])

    out = tmp_path / "merged"
    merged_run = _merge(eval_project, "shards", "--out", str(out))

    assert merged_run.ret == 0, merged_run.stdout.str() + merged_run.stderr.str()
    merged_run.stdout.fnmatch_lines(["merged session *: pass; MLflow run *; bundle *"])
    whole_bundle, merged_bundle = _bundle(eval_project.path / "whole"), _bundle(out)
    assert _metrics(merged_bundle) == _metrics(whole_bundle)
    assert _metrics(merged_bundle)["zero_shot"]["accuracy"] == 0.5  # the scripted LM: half right
    assert _records(merged_bundle) == _records(whole_bundle) and len(_records(whole_bundle)) == 88
    merged, whole_session = Bundle.load(merged_bundle), Bundle.load(whole_bundle)
    assert merged.session.tags["evals.verdict"] == whole_session.session.tags["evals.verdict"] == "pass"
    assert merged.session.tags["evals.complete"] == "true" and "evals.shard" not in merged.session.tags
    assert merged.session.params["shard.count"] == "2" and merged.session.params["xdist.workers"] == "3"
    for name in ("zero_shot", "knn_few_shot"):  # fingerprints over the union, as the whole session's
        assert merged.programs[name].params == whole_session.programs[name].params
    # One parent MLflow run with a nested run per program, like the whole session's (read in a fresh
    # interpreter: pytester unloads the modules MLflow's SQLAlchemy store imports in this process).
    all_parents, runs = store_runs(f"sqlite:///{eval_project.path / 'mlflow.db'}")
    parents = [r for r in all_parents if r["tags"].get("evals.session_id") == merged.session_id]
    assert len(parents) == 1
    nested = {r["tags"].get("evals.program") for r in runs if r["tags"].get("mlflow.parentRunId") == parents[0]["id"]}
    assert nested == {"zero_shot", "knn_few_shot"}
    # The shards logged nothing: the whole session and the merged one are the only parents.
    assert len(all_parents) == 2


def test_a_shard_gates_nothing_the_merge_fails_the_session(eval_project: pytest.Pytester, tmp_path: Path) -> None:
    eval_project.path.joinpath("thresholds.yaml").write_text(
        "version: 1\nprograms:\n  default:\n    min_accuracy: 0.9\n"
    )
    shard = eval_project.runpytest_subprocess(
        "--evals-report-dir", "shards", "--evals-shard", "1/2", "--evals-no-mlflow"
    )
    # Per-diagnosis tests still fail by themselves; the aggregate gate is a note, not a failure line.
    shard.stdout.fnmatch_lines(["*WARNING: shard 1/2 (the merged session is gated, not a shard): *accuracy*"])
    shard.stdout.no_fnmatch_line("ERROR: *accuracy*")
    eval_project.runpytest_subprocess("--evals-report-dir", "shards", "--evals-shard", "2/2", "--evals-no-mlflow")
    assert Bundle.load(_bundle_of(eval_project.path / "shards", "1/2")).session.tags["evals.shard"] == "1/2"

    merged_run = _merge(eval_project, "shards", "--out", str(tmp_path / "merged"))
    assert merged_run.ret == 1
    merged_run.stdout.fnmatch_lines(["ERROR: zero_shot: accuracy 0.50 < min 0.90", "merged session *: fail; *"])
    assert Bundle.load(_bundle(tmp_path / "merged")).session.tags["evals.verdict"] == "fail"


def _merge(project: pytest.Pytester, *args: str) -> pytest.RunResult:
    """``python -m evals merge`` in a process of its own (pytester unloads modules pandas needs loaded once)."""
    return project.run(sys.executable, "-m", "evals", "merge", *args)


def _bundle_of(report_dir: Path, shard: str) -> Path:
    return next(p for p in report_dir.iterdir() if json.loads((p / SHARD_FILE).read_text())["shard"] == shard)


# ----- refusals (hand-built shard bundles) -----


def _shard_bundle(tmp_path: Path, name: str, shard: str, **cli: Any) -> Path:
    """A shard's bundle: its share of 22 records of ``knn``, gated with a thresholds file of its own."""
    root, part = tmp_path / name, parse_shard(shard)
    root.mkdir()
    text = b"version: 1\n"
    (root / "thresholds.yaml").write_bytes(text)
    policies = parse_policies(
        parse_thresholds(
            {"version": 1}, str(root / "thresholds.yaml"), ["knn"], sha256=hashlib.sha256(text).hexdigest()
        )
    )
    mine = [r for i, r in enumerate(records("knn", 22)) if i % part.count == part.index - 1]
    context = make_context(root, mine, cli={"evals_shard": shard, **cli}, policies=policies)
    bundle = tmp_path / name / "bundle"
    summary = summarize(context, StoreView())
    write_bundle(bundle, context, shard_summary(summary, parse_shard(shard)), str)
    return bundle


def _merge_error(capsys: pytest.CaptureFixture[str], tmp_path: Path, *bundles: Path) -> str:
    code = main(["merge", *map(str, bundles), "--out", str(tmp_path / "out"), "--no-mlflow"])
    err = capsys.readouterr().err
    assert code == 2 and not (tmp_path / "out").exists()
    assert len(err.strip().splitlines()) == 1, err
    return err.strip()


def test_shards_of_different_configurations_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one, two = _shard_bundle(tmp_path, "a", "1/2"), _shard_bundle(tmp_path, "b", "2/2", evals_seed="7")

    err = _merge_error(capsys, tmp_path, one, two)

    assert err == f"error: cannot merge {one} and {two}: they differ in setting seed (0 vs 7)"


def test_a_different_dataset_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one, two = _shard_bundle(tmp_path, "a", "1/2"), _shard_bundle(tmp_path, "b", "2/2")
    data = json.loads((two / SHARD_FILE).read_text())
    data["params"]["dataset.fingerprint"] = "other"
    (two / SHARD_FILE).write_text(json.dumps(data))

    assert "differ in param dataset.fingerprint (None vs 'other')" in _merge_error(capsys, tmp_path, one, two)


def test_records_in_two_shards_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one, two = _shard_bundle(tmp_path, "a", "1/2"), _shard_bundle(tmp_path, "b", "2/2")
    data = json.loads((two / SHARD_FILE).read_text())
    data["records"].append(json.loads((one / SHARD_FILE).read_text())["records"][0])
    (two / SHARD_FILE).write_text(json.dumps(data))

    assert (
        _merge_error(capsys, tmp_path, one, two) == f"error: cannot merge: {one} and {two} both hold knn on test-0000"
    )


def test_a_duplicate_shard_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one, again = _shard_bundle(tmp_path, "a", "1/2"), _shard_bundle(tmp_path, "b", "1/2")

    assert _merge_error(capsys, tmp_path, one, again) == f"error: cannot merge: {one} and {again} are both shard 1/2"


def test_a_missing_shard_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one, three = _shard_bundle(tmp_path, "a", "1/3"), _shard_bundle(tmp_path, "c", "3/3")

    assert _merge_error(capsys, tmp_path, one, three) == "error: cannot merge: shard 2/3 missing (given 1/3, 3/3)"


def test_shards_of_different_counts_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one, two = _shard_bundle(tmp_path, "a", "1/2"), _shard_bundle(tmp_path, "b", "2/3")

    assert "differ in shard count (--evals-shard K/N) ('1/2' vs '2/3')" in _merge_error(capsys, tmp_path, one, two)


def test_a_bundle_of_a_whole_session_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one = _shard_bundle(tmp_path, "a", "1/2")
    whole = tmp_path / "whole"
    shutil.copytree(one, whole)
    (whole / SHARD_FILE).unlink()

    err = _merge_error(capsys, tmp_path, one, whole)

    assert err == f"error: {whole}: no shard.json; only bundles of sessions run with --evals-shard K/N merge"


def test_merged_hand_built_shards_gate_the_union(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one, two = _shard_bundle(tmp_path, "a", "1/2"), _shard_bundle(tmp_path, "b", "2/2")

    assert main(["merge", str(one), str(two), "--out", str(tmp_path / "out"), "--no-mlflow"]) == 0
    out = capsys.readouterr().out
    assert "not logged to MLflow: --no-mlflow here, or --evals-no-mlflow in the shards" in out
    assert "merged session " in out and "knn (n=22)" in out  # the union of 11 + 11 records
    assert Bundle.load(_bundle(tmp_path / "out")).programs["knn"].metrics["n"] == 22


def test_different_compiled_programs_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The same compile key, different programs (each shard compiled its own): one program per merged session."""
    one, two = _shard_bundle(tmp_path, "a", "1/2"), _shard_bundle(tmp_path, "b", "2/2")
    for bundle, demo in ((one, "fever"), (two, "rash")):
        data = json.loads((bundle / SHARD_FILE).read_text())
        data["program_states"] = {"knn": {"predict": {"demos": [{"symptoms": demo}]}}}
        (bundle / SHARD_FILE).write_text(json.dumps(data))

    err = _merge_error(capsys, tmp_path, one, two)

    assert err.startswith(f"error: cannot merge {one} and {two}: they differ in knn compiled state (sha256;")


def test_an_interrupted_shard_never_merges_into_a_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one, two = _shard_bundle(tmp_path, "a", "1/2"), _shard_bundle(tmp_path, "b", "2/2")
    data = json.loads((two / SHARD_FILE).read_text())
    data["interrupted"], data["crashed_workers"] = True, ["gw1"]
    (two / SHARD_FILE).write_text(json.dumps(data))

    assert main(["merge", str(one), str(two), "--out", str(tmp_path / "out"), "--no-mlflow"]) == 1
    out = capsys.readouterr().out
    assert "incomplete: " in out and ": incomplete; bundle " in out


def test_a_saved_robustness_case_runs_in_one_shard_only(tmp_path: Path) -> None:
    """Tests that evaluate without a program parameter are dealt by node id; other tests run in every shard."""
    from types import SimpleNamespace

    from evals.plugin import in_shard

    def item(nodeid: str, *fixtures: str) -> Any:
        return SimpleNamespace(nodeid=nodeid, fixturenames=fixtures, callspec=SimpleNamespace(params={}))

    shards = [parse_shard(f"{k}/3") for k in (1, 2, 3)]
    case = item("suites/test_robustness.py::test_saved_counterexample[knn-test-0001]", "case", "evals_stability")
    plain = item("suites/test_other.py::test_helper", "tmp_path")
    assert sum(in_shard(case, shard) for shard in shards) == 1
    assert all(in_shard(plain, shard) for shard in shards)
