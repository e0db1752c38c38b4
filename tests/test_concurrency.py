"""--evals-concurrency end to end: eval projects run by pytester against the fake OpenAI-compatible server.

The server runs in this process; the eval project (a subprocess, with and without xdist) reaches it
over HTTP through dspy's own client, so its peak of calls in flight is the session's.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SUITE, THRESHOLDS, write_tiny_dataset
from tests.fake_openai import FakeOpenAI

XDIST = pytest.mark.parametrize("xdist", ["", "-n 2"], ids=["no-xdist", "xdist-2"])

# Records in the order the controller receives them, by test, for comparing runs.
ORDER_CONFTEST = """
import json

def pytest_runtest_logreport(report):
    if report.when != "call":
        return
    for key, value in report.user_properties:
        if key == "evals_records":
            with open("arrived.jsonl", "a") as handle:
                handle.write(json.dumps({"test": report.nodeid, "records": value}) + "\\n")
"""


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(latency=0.3) as fake:
        yield fake


@pytest.fixture
def http_project(pytester: pytest.Pytester, tmp_path: Path, server: FakeOpenAI) -> pytest.Pytester:
    """An eval project whose LM is the fake server (no fixture override: the harness builds the LM)."""
    data = write_tiny_dataset(tmp_path / "data")
    pytester.makepyfile(test_suite=SUITE)
    pytester.makeconftest(ORDER_CONFTEST)
    pytester.path.joinpath("thresholds.yaml").write_text(textwrap.dedent(THRESHOLDS))
    pytester.makeini(
        f"""
        [pytest]
        evals_data_dir = {data}
        evals_programs = zero_shot
        evals_lm = openai/fake
        evals_lm_api_base = {server.base_url}
        evals_no_cache = true
        evals_no_mlflow = true
        """
    )
    return pytester


def run(project: pytest.Pytester, *args: str) -> pytest.RunResult:
    return project.runpytest_subprocess(*[a for arg in args for a in arg.split()], "-p", "no:cacheprovider")


def arrived(project: pytest.Pytester) -> list[dict]:
    path = project.path / "arrived.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    path.unlink()
    return lines


def essentials(batch: dict) -> tuple:
    return batch["test"], [(r["example_id"], r["predicted"], r["error"], r["attempts"]) for r in batch["records"]]


@XDIST
def test_the_session_never_has_more_than_n_calls_in_flight(
    http_project: pytest.Pytester, server: FakeOpenAI, xdist: str
) -> None:
    result = run(http_project, xdist, "--evals-concurrency 4")
    assert result.ret == 0, result.stdout.str()
    result.assert_outcomes(passed=22)
    stats = server.stats.snapshot()
    assert stats["statuses"] == {"200": 44}
    # Two examples per test: four in flight means the session ran ahead across tests (and workers).
    assert stats["peak_in_flight"] == 4


def test_records_are_those_of_a_sequential_run_in_the_same_order(
    http_project: pytest.Pytester, server: FakeOpenAI
) -> None:
    server.configure(latency=0.1)
    assert run(http_project, "--evals-concurrency 0").ret == 0
    sequential = arrived(http_project)
    assert server.stats.peak_in_flight == 1
    assert run(http_project, "--evals-concurrency 8").ret == 0
    concurrent = arrived(http_project)
    assert [essentials(b) for b in concurrent] == [essentials(b) for b in sequential]
    assert len(sequential) == 22


def test_k_evaluates_only_what_is_selected(http_project: pytest.Pytester, server: FakeOpenAI) -> None:
    result = http_project.runpytest_subprocess("--evals-concurrency", "8", "-k", "migraine or malaria")
    result.assert_outcomes(passed=2)
    assert server.stats.total == 4


@XDIST
def test_429s_are_retried_and_counted(http_project: pytest.Pytester, server: FakeOpenAI, xdist: str) -> None:
    server.configure(rate_limit_every=4, retry_after=0.2)
    result = run(http_project, xdist, "--evals-concurrency 4")
    assert result.ret == 0, result.stdout.str()
    limited = server.stats.statuses[429]
    assert limited > 0 and server.stats.statuses[200] == 44
    bundle = json.loads(next((http_project.path / ".evals" / "reports").glob("*/session.json")).read_text())
    metrics = bundle["programs"]["zero_shot"]["metrics"]
    assert metrics["rate_limited"] == limited and metrics["error_rate"] == 0.0
