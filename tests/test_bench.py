"""The bench's pure helpers: goals, rendering, the /proc memory sampler, the synthetic upload, the HTTP rows (no LM)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bench import (
    ORDER,
    PAIRED,
    SECTIONS,
    Section,
    _overhead,
    _parallel,
    _row,
    run_bench,
    select_sections,
    single_row,
    single_step,
    write_report,
)
from bench.children import build_synthetic_bundle, synthetic_records
from bench.common import QUICK_DIAGNOSES, BenchError
from bench.http_lm import (
    HttpPlan,
    HttpRun,
    ServerStats,
    fake_server,
    lm_bound_s,
    peak_row,
    versus_evaluate_row,
)
from bench.processes import (
    ChildRun,
    HarnessRun,
    Plan,
    ProcessRun,
    TreeSampler,
    _children_by_ppid,
    children,
    run_process,
)
from bench.results import BenchReport, Goal, Row, format_value, ratio, render_markdown, render_table
from evals.errors import ConfigError

HOLD_50MB = "import time; x=bytearray(50_000_000); time.sleep(1)"
MACHINE = {"nproc": 2, "cpu": "Test CPU", "ram_gib": 8.0, "load_start": 0.5, "load_end": 0.7}


@pytest.mark.parametrize(
    ("goal", "value", "met"),
    [
        (Goal("<=", 1.05), 1.05, True),
        (Goal("<=", 1.05), 1.06, False),
        (Goal(">=", 1.6), 1.7, True),
        (Goal(">=", 1.6), 1.2, False),
        (Goal("<", 3.0), 3.0, False),
        (Goal("<", 3.0), 1.1, True),
        (Goal("<=", 0.05), None, None),
    ],
)
def test_goal_judges_a_ratio(goal: Goal, value: float | None, met: bool | None) -> None:
    assert goal.met(value) is met


def test_goal_reads_as_a_bound() -> None:
    assert [str(Goal("<=", 1.05)), str(Goal(">=", 1.6)), str(Goal("<", 3.0))] == ["≤ 1.05", "≥ 1.6", "< 3"]


def test_ratio_is_none_without_a_baseline() -> None:
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(3.0, 0.0) is None
    assert ratio(None, 2.0) is None


@pytest.mark.parametrize(
    ("key", "value", "text"),
    [
        ("harness_s", 12.34, "harness 12.3 s"),
        ("auto_rss_mib", 1234.4, "auto rss 1,234 MiB"),
        ("plain_engine_share", 0.853, "plain engine share 85%"),
        ("engine_tokens_per_s", 1234.5, "engine tokens 1,234/s"),
        ("evaluate_examples_per_s", 0.456, "evaluate examples 0.46/s"),
        ("harness_accuracy", 0.04545, "harness accuracy 0.045"),
        ("client_calls_1k", 18.0, "client calls 1k 18"),
    ],
)
def test_values_render_with_their_unit(key: str, value: float, text: str) -> None:
    assert format_value(key, value) == text


def report() -> BenchReport:
    rows = [
        Row("harness overhead", {"harness_s": 11.0, "plain_s": 10.0}, 1.1, Goal("<=", 1.05), "harness / plain"),
        Row("-n 2 vs -n 0", {"n0_s": 20.0, "n2_s": 11.0}, 20 / 11, Goal(">=", 1.6)),
        _row("prompt tokens/s", Goal(">=", 0.8), lambda: (_ for _ in ()).throw(BenchError("probe exited 1"))),
    ]
    return BenchReport(MACHINE, {"program": "zero_shot", "quick": True}, rows, 42.0)


def test_markdown_has_one_line_per_row_with_ratio_goal_and_verdict() -> None:
    markdown = render_markdown(report())
    assert "2 cores (Test CPU), 8.0 GiB RAM" in markdown
    assert "| harness overhead | harness 11.0 s; plain 10.0 s; harness / plain | 1.100 | ≤ 1.05 | no |" in markdown
    assert "| -n 2 vs -n 0 | n0 20.0 s; n2 11.0 s | 1.818 | ≥ 1.6 | yes |" in markdown
    assert "| prompt tokens/s | not measured: probe exited 1 | n/a | ≥ 0.8 | n/a |" in markdown


def test_rich_table_shows_every_row() -> None:
    from rich.console import Console

    console = Console(record=True, width=160)
    console.print(render_table(report()))
    text = console.export_text()
    for expected in ("harness overhead", "1.100", "1.818", "yes", "no", "not measured: probe exited 1"):
        assert expected in text


def test_write_report_writes_json_and_markdown_side_by_side(tmp_path: Path) -> None:
    import json

    markdown = write_report(report(), tmp_path / "out" / "bench.json")
    data = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert markdown == tmp_path / "out" / "bench.md"
    assert [row["met"] for row in data["rows"]] == [False, True, None]
    assert data["rows"][0]["values"] == {"harness_s": 11.0, "plain_s": 10.0}


def test_quick_plan_names_eight_tests() -> None:
    plan = Plan("zero_shot", 2, None, quick=True)
    assert len(QUICK_DIAGNOSES) == 8 and plan.examples == 16
    assert plan.targets()[1] == "suites/test_diagnosis.py::test_diagnosis[zero_shot-cervical_spondylosis]"
    assert Plan("zero_shot", 1, None, quick=False).targets() == ["suites"]


def test_compared_runs_go_forth_and_back() -> None:
    paired = [key for key in ORDER if key in PAIRED]
    assert paired == paired[::-1] and sorted(set(paired)) == sorted(PAIRED)


def process(wall_s: float) -> ProcessRun:
    return ProcessRun(wall_s, 0, 100.0, 80.0, 1, Path("log"))


def test_rows_compare_the_mean_of_the_paired_runs() -> None:
    plan = Plan("zero_shot", 1, None, quick=True)
    harness = [HarnessRun(process(w), 8, 1, 0, 8.0) for w in (10.0, 12.0)]
    plain = [ChildRun(process(w), {"lm_call_s": 9.0, "engine_s": 8.5}) for w in (9.0, 11.0)]
    row = _overhead(plan, harness, plain)
    assert row.ratio == pytest.approx(1.1) and row.met is False
    assert row.values["harness_lm_call_share"] == pytest.approx(16 / 22)
    assert _parallel(harness, [HarnessRun(process(w), 8, 1, 0, 8.0) for w in (6.0, 5.0)]).ratio == pytest.approx(2.0)


def test_sampler_sees_the_memory_of_a_child() -> None:
    process = subprocess.Popen([sys.executable, "-c", HOLD_50MB])
    with TreeSampler(process.pid, interval_s=0.05) as sampler:
        process.wait()
    assert sampler.peak_rss_kib / 1024 >= 45
    assert sampler.peak_processes == 1


def test_sampler_follows_the_tree_down_to_grandchildren() -> None:
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {HOLD_50MB!r}])"
    process = subprocess.Popen([sys.executable, "-c", parent])
    with TreeSampler(process.pid, interval_s=0.05) as sampler:
        process.wait()
    assert sampler.peak_processes == 2
    assert sampler.peak_rss_kib / 1024 >= 45
    assert sampler.peak_pss_kib / 1024 >= 45


def test_children_file_and_ppid_scan_agree() -> None:
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {HOLD_50MB!r}])"
    process = subprocess.Popen([sys.executable, "-c", parent])
    try:
        for _ in range(100):
            found = children(process.pid)
            if found:
                break
            subprocess.run(["sleep", "0.02"])
        assert len(found) == 1
        assert _children_by_ppid(process.pid) == found
    finally:
        process.wait()


def test_run_process_counts_the_cpu_time_of_the_tree_not_its_sleep(tmp_path: Path) -> None:
    spin = "import time; end = time.process_time() + 0.4\nwhile time.process_time() < end: pass"
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {spin!r}])"
    busy = run_process([sys.executable, "-c", parent], tmp_path / "busy.log")
    idle = run_process([sys.executable, "-c", "import time; time.sleep(0.5)"], tmp_path / "idle.log")
    assert busy.cpu_s >= 0.4  # the grandchild's spin, waited for by its parent
    assert idle.cpu_s < 0.4 <= idle.wall_s


def test_run_process_times_a_command_without_the_evals_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVALS_NO_CACHE", "1")
    script = "import os, sys; sys.exit(3 if 'EVALS_NO_CACHE' in os.environ else 0)"
    run = run_process([sys.executable, "-c", script], tmp_path / "log.txt", cwd=tmp_path)
    assert run.returncode == 0
    assert run.wall_s > 0 and run.peak_processes >= 1


def test_synthetic_records_are_seeded() -> None:
    records = synthetic_records(100)
    assert len(records) == 300
    assert records == synthetic_records(100)
    assert {r.program for r in records} == {"zero_shot", "chain_of_thought", "knn_few_shot"}
    assert 0.4 < sum(r.correct for r in records) / len(records) < 0.8


def test_synthetic_bundle_uploads_as_one_parent_run_with_artifacts(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from evals.store.schema import PARENT_TAG, SESSION_TAG
    from evals.store.upload import upload_bundle

    bundle = build_synthetic_bundle(tmp_path / "bundle", 1_000)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run_id = upload_bundle(bundle, uri)

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("symptom-diagnosis-evals").experiment_id])
    parents = [run for run in runs if PARENT_TAG not in run.data.tags]
    assert [run.info.run_id for run in parents] == [run_id]
    assert SESSION_TAG in parents[0].data.tags and parents[0].info.status == "FINISHED"
    assert sorted(run.data.tags["mlflow.runName"] for run in runs if PARENT_TAG in run.data.tags) == [
        "chain_of_thought",
        "knn_few_shot",
        "zero_shot",
    ]
    assert parents[0].data.metrics["zero_shot.n"] == 1_000
    artifacts = {artifact.path for artifact in client.list_artifacts(run_id)}
    assert {"predictions.csv", "predictions.parquet", "report.html", "confusion_zero_shot.png"} <= artifacts
    child = next(run for run in runs if run.data.tags.get("mlflow.runName") == "zero_shot")
    assert "predictions.csv" in {artifact.path for artifact in client.list_artifacts(child.info.run_id)}


# ----- the HTTP-LM section -----


def http_run(wall_s: float, *, records: int = 636, correct: int = 45, peak: int = 16, **statuses: int) -> HttpRun:
    server = ServerStats(records, peak, {"200": records, **{k.removeprefix("s"): v for k, v in statuses.items()}})
    return HttpRun(ProcessRun(wall_s, 0, 100.0, 80.0, 1, Path("log"), cpu_s=wall_s / 2), records, correct, server)


def test_http_plan_runs_the_harness_as_a_user_would_and_a_one_call_session() -> None:
    plan = HttpPlan.from_plan(Plan("zero_shot", 2, "/data", quick=False))
    command = plan.harness_command(Path("/w"), "http://127.0.0.1:9/v1")
    text = " ".join(command)
    assert command[command.index("pytest") + 1] == "suites"
    for expected in (
        "--evals-lm openai/fake",
        "--evals-lm-api-base http://127.0.0.1:9/v1",
        "--evals-concurrency 16",
        "--evals-per-diagnosis all",
        "--evals-programs zero_shot,chain_of_thought,knn_few_shot",
        "--evals-no-cache",
        "--evals-data-dir /data",
    ):
        assert expected in text
    tiny = " ".join(plan.harness_command(Path("/w"), "http://127.0.0.1:9/v1", tiny=True))
    assert "suites -k test_diagnosis and allergy" in tiny
    assert "--evals-per-diagnosis 1" in tiny and "--evals-programs zero_shot " in tiny
    quick = HttpPlan.from_plan(Plan("zero_shot", 2, None, quick=True))
    assert len(quick.targets()) == 3 * 8 and "--evals-data-dir" not in quick.harness_command(Path("/w"), "u")
    assert quick.job("u")["per_diagnosis"] is None and quick.job("u")["concurrency"] == 16


def test_lm_bound_is_whole_rounds_of_calls() -> None:
    assert lm_bound_s(636, 0.5, 16) == 20.0  # 40 rounds: the last one has 12 calls
    assert lm_bound_s(16, 0.5, 16) == 0.5
    assert lm_bound_s(0, 0.5, 16) == 0.0


def test_http_row_compares_walls_and_states_the_fixed_cost() -> None:
    plan = HttpPlan.from_plan(Plan("zero_shot", 2, None, quick=False))
    tiny = http_run(10.5, records=1, correct=0)
    row = versus_evaluate_row(plan, tiny, [http_run(30.0), http_run(34.0)], [http_run(28.0), http_run(30.0)])
    assert row.ratio == pytest.approx(29.0 / 32.0) and row.met is False
    assert row.values["lm_bound_s"] == 20.0
    assert row.values["harness_excess_s"] == pytest.approx(12.0)
    assert row.values["evaluate_excess_s"] == pytest.approx(9.0)
    assert row.values["harness_fixed_cost_s"] == pytest.approx(10.0)  # the one call's 0.5 s taken off
    assert (row.values["harness_cpu_s"], row.values["evaluate_cpu_s"], row.values["harness_fixed_cpu_s"]) == (
        16.0,
        14.5,
        5.25,
    )
    assert row.values["harness_accuracy"] == pytest.approx(45 / 636)
    assert "3 programs × 212 examples" in row.note and "not answered" not in row.note
    faster = versus_evaluate_row(plan, tiny, [http_run(25.0)], [http_run(27.5)])
    assert faster.ratio == pytest.approx(1.1) and faster.met is True


def test_http_row_notes_failed_calls_and_unequal_work() -> None:
    plan = HttpPlan.from_plan(Plan("zero_shot", 2, None, quick=False))
    row = versus_evaluate_row(
        plan, http_run(9.0, records=1), [http_run(30.0, s429=3)], [http_run(28.0, records=630, correct=40)]
    )
    assert "harness: 3 calls not answered 200" in row.note
    assert "did not evaluate the same number of examples" in row.note


def test_peak_row_fails_above_the_cap() -> None:
    plan = HttpPlan.from_plan(Plan("zero_shot", 2, None, quick=False))
    evaluate = [http_run(28.0, peak=16)]
    within = peak_row(plan, [http_run(30.0, peak=16), http_run(31.0, peak=12)], evaluate)
    assert (within.ratio, within.met, within.values["harness_peak_in_flight"]) == (1.0, True, 16.0)
    over = peak_row(plan, [http_run(30.0, peak=12), http_run(31.0, peak=17)], evaluate)
    assert over.ratio == pytest.approx(17 / 16) and over.met is False


def test_only_selects_sections_by_name() -> None:
    assert [s.name for s in select_sections(None)] == list(SECTIONS)
    assert [s.name for s in select_sections("http")] == ["http"]
    assert [s.name for s in select_sections("http, llama,http")] == ["http", "llama"]
    for bad in ("nope", "http,nope", " , "):
        with pytest.raises(ConfigError, match="expected sections among llama, http"):
            select_sections(bad)


def test_a_section_that_cannot_start_leaves_its_rows_unmeasured(monkeypatch: pytest.MonkeyPatch) -> None:
    @contextmanager
    def measures(plan: Plan, work: Path) -> Iterator[dict[str, Any]]:
        yield {"a": ("step a", lambda d: 2.0)}
        raise BenchError("server went away")  # after its one step: the step's result stays

    @contextmanager
    def broken(plan: Plan, work: Path) -> Iterator[dict[str, Any]]:
        raise BenchError("fake server did not start")
        yield {}

    def rows(plan: Plan, got: Any) -> list[Any]:
        return [("double", Goal(">=", 1.0), lambda: Row("double", {}, got("a")[0] / 2, Goal(">=", 1.0)))]

    def broken_rows(plan: Plan, got: Any) -> list[Any]:
        return [("b row", Goal("<=", 1.0), lambda: Row("b row", {}, got("b")[0], Goal("<=", 1.0)))]

    monkeypatch.setitem(SECTIONS, "one", Section("one", "", ("a",), measures, rows))
    monkeypatch.setitem(SECTIONS, "two", Section("two", "", ("b",), broken, broken_rows))
    lines: list[str] = []
    report = run_bench(Plan("zero_shot", 1, None, quick=True), progress=lines.append, only="two,one")
    assert [(row.name, row.ratio) for row in report.rows] == [("b row", None), ("double", 1.0)]
    assert report.rows[0].note == "not measured: fake server did not start"
    assert report.options == {"sections": "two,one", "quick": True}  # the llama section's options only with it
    assert "[1/2] step a" not in lines and "[2/2] step a" in lines


def test_fake_server_process_counts_calls_and_resets_between_runs() -> None:
    import urllib.request

    with fake_server(0.05) as server:
        body = json.dumps({"model": "fake", "messages": [{"role": "user", "content": "malaria"}]}).encode()
        request = urllib.request.Request(
            f"{server.base_url}/chat/completions", data=body, headers={"Content-Type": "application/json"}
        )
        for _ in range(2):
            urllib.request.urlopen(request, timeout=10).read()
        assert server.stats() == ServerStats(2, 1, {"200": 2})
        server.reset()
        assert server.stats() == ServerStats(0, 0, {})


def test_cli_only_names_the_sections_on_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from evals.__main__ import main

    assert main(["bench", "--only", "gpu", "--out", str(tmp_path / "b.json")]) == 2
    expected = "error: --only 'gpu': expected sections among llama, http, merge, rss (comma-separated)\n"
    assert capsys.readouterr().err == expected
    assert not (tmp_path / "b.json").exists()


GOAL = Goal("<=", 1.0)


def test_a_one_function_section_plugs_in_with_single_step_and_single_row(monkeypatch: pytest.MonkeyPatch) -> None:
    def measure(plan: Plan, work: Path) -> Row:
        assert work.name == "merge-1" and not work.exists()  # a fresh directory of its own
        return Row("merge time, 2 shards", {"merge_s": 1.5}, 0.5, Goal("<=", 1.0))

    def failing(plan: Plan, work: Path) -> Row:
        raise BenchError("rss: no /proc")

    step = single_step("merge", "merge 2 shards", measure)
    merge = Section("merge", "", ("merge",), step, single_row("merge", "m", GOAL))
    rss = Section("rss", "", ("rss",), single_step("rss", "peak RSS", failing), single_row("rss", "peak RSS", GOAL))
    monkeypatch.setitem(SECTIONS, "merge", merge)
    monkeypatch.setitem(SECTIONS, "rss", rss)
    lines: list[str] = []
    report = run_bench(Plan("zero_shot", 1, None, quick=True), progress=lines.append, only="merge,rss")
    assert [(row.name, row.ratio, row.met) for row in report.rows] == [
        ("merge time, 2 shards", 0.5, True),
        ("peak RSS", None, None),
    ]
    assert report.rows[1].note == "not measured: rss: no /proc"
    assert lines == ["[1/2] merge 2 shards", "[2/2] peak RSS", "    failed: rss: no /proc"]


def _memory(rss: float, wall: float) -> dict[str, float]:
    return {"peak_rss_mib": rss, "peak_pss_mib": rss * 0.7, "peak_processes": 3, "wall_s": wall, "examples": 22}


def test_the_rss_row_is_the_servers_peak_over_the_in_process_peak() -> None:
    from bench.rss import rss_row

    result = {"in_process": _memory(1069.6, 248.9), "session_server": _memory(1012.0, 428.9), "same_records": True}
    row = rss_row(result)
    assert row.ratio == pytest.approx(1012.0 / 1069.6, abs=1e-3) and row.met is True
    assert row.values["session_server_wall_s"] == 428.9
    worse = rss_row({**result, "session_server": _memory(1200.0, 400.0)})
    assert worse.met is False
    with pytest.raises(BenchError, match="different answers"):
        rss_row({**result, "same_records": False})


def test_every_section_is_selectable_by_name() -> None:
    from bench import SECTIONS, select_sections

    assert list(SECTIONS) == ["llama", "http", "merge", "rss"]
    assert [section.name for section in select_sections("rss,merge")] == ["rss", "merge"]
