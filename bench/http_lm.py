"""The HTTP-LM rows (issue #12): the harness against ``dspy.Evaluate`` over a local OpenAI-compatible server.

The project's fake server (``tests/fake_openai.py``) runs as a subprocess on 127.0.0.1 and
answers every chat completion after a fixed latency (0.5 s). Against it, in one command:

* **harness**: ``pytest suites --evals-lm openai/fake --evals-lm-api-base URL
  --evals-concurrency 16 --evals-per-diagnosis all --evals-programs zero_shot,chain_of_thought,
  knn_few_shot``, caches off, reports written, MLflow off (as in every bench row), one whole
  process, imports included;
* **script**: ``dspy.Evaluate(num_threads=16)`` over the same three programs and test examples in
  a plain child script (:func:`bench.children.child_http_evaluate`), imports included;
* **tiny**: the harness command on one test of one example (one LM call), for its fixed cost.

The server's statistics are reset before each run and read after it: calls, statuses and the
peak of calls in flight. The rows are pure functions of those numbers.
"""

from __future__ import annotations

import json
import math
import sys
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import QUICK_DIAGNOSES, SYNTHETIC_PROGRAMS, BenchError
from bench.processes import Plan, ProcessRun, failure, read_predictions, run_child, run_process, session_outputs
from bench.results import Goal, Row, ratio
from evals.labels import DIAGNOSES, slug

HTTP_MODEL = "openai/fake"
HTTP_LATENCY_S = 0.5
HTTP_CONCURRENCY = 16
VERSUS_GOAL = Goal(">=", 1.0)
PEAK_GOAL = Goal("<=", 1.0)


@dataclass(frozen=True)
class HttpPlan:
    """What the HTTP rows run: three programs on every test example of the chosen diagnoses."""

    programs: tuple[str, ...]
    diagnoses: tuple[str, ...]
    data_dir: str | None
    quick: bool
    latency_s: float = HTTP_LATENCY_S
    concurrency: int = HTTP_CONCURRENCY

    @classmethod
    def from_plan(cls, plan: Plan) -> HttpPlan:
        """The bench's data directory and ``--quick`` (8 diagnoses); always every example of each."""
        return cls(SYNTHETIC_PROGRAMS, QUICK_DIAGNOSES if plan.quick else DIAGNOSES, plan.data_dir, plan.quick)

    def targets(self) -> list[str]:
        """``suites`` as a user runs it; with ``--quick`` the node ids of the chosen tests."""
        if not self.quick:
            return ["suites"]
        node = "suites/test_diagnosis.py::test_diagnosis[{}-{}]"
        return [node.format(program, slug(d)) for program in self.programs for d in self.diagnoses]

    def harness_command(self, work: Path, base_url: str, *, tiny: bool = False) -> list[str]:
        """The pytest command line; ``tiny``: one test (the first program on the first diagnosis), one example."""
        targets = ["suites", "-k", f"test_diagnosis and {slug(self.diagnoses[0])}"] if tiny else self.targets()
        command = [
            sys.executable,
            "-m",
            "pytest",
            *targets,
            "-q",
            "-p",
            "no:randomly",
            "--evals-lm",
            HTTP_MODEL,
            "--evals-lm-api-base",
            base_url,
            "--evals-concurrency",
            str(self.concurrency),
            "--evals-per-diagnosis",
            "1" if tiny else "all",
            "--evals-programs",
            self.programs[0] if tiny else ",".join(self.programs),
            "--evals-no-cache",
            *session_outputs(work),
        ]
        return command + (["--evals-data-dir", self.data_dir] if self.data_dir else [])

    def job(self, base_url: str) -> dict[str, Any]:
        """What :func:`bench.children.child_http_evaluate` needs."""
        return {
            "model": HTTP_MODEL,
            "api_base": base_url,
            "programs": list(self.programs),
            "diagnoses": list(self.diagnoses),
            "per_diagnosis": None,
            "data_dir": self.data_dir,
            "concurrency": self.concurrency,
        }


@dataclass(frozen=True)
class ServerStats:
    """What the fake server saw during one run: chat completions, their statuses, the peak in flight."""

    calls: int
    peak_in_flight: int
    statuses: dict[str, int]

    @classmethod
    def from_snapshot(cls, snapshot: dict[str, Any]) -> ServerStats:
        return cls(int(snapshot["total"]), int(snapshot["peak_in_flight"]), dict(snapshot["statuses"]))

    @property
    def failed(self) -> int:
        """Calls not answered 200 (429s, errors, no answer)."""
        return sum(count for status, count in self.statuses.items() if status != "200")


@dataclass(frozen=True)
class HttpRun:
    """One timed process against the server: its records (program × example), how many right, the server's view."""

    process: ProcessRun
    records: int
    correct: int
    server: ServerStats


# ----- the rows (pure) -----


def lm_bound_s(calls: int, latency_s: float, concurrency: int) -> float:
    """The least time ``calls`` calls of ``latency_s`` take with ``concurrency`` in flight."""
    return math.ceil(calls / concurrency) * latency_s if calls else 0.0


def fixed_cost_s(tiny: HttpRun, latency_s: float) -> float:
    """The harness's cost per session: the wall time of a one-call session less that call's latency."""
    return tiny.process.wall_s - tiny.server.calls * latency_s


def versus_evaluate_row(plan: HttpPlan, tiny: HttpRun, harness: Sequence[HttpRun], evaluate: Sequence[HttpRun]) -> Row:
    """Harness wall time against the script's (ratio script / harness: ≥ 1 means the harness is as fast)."""
    harness_s = sum(run.process.wall_s for run in harness) / len(harness)
    evaluate_s = sum(run.process.wall_s for run in evaluate) / len(evaluate)
    calls = harness[0].server.calls
    bound = lm_bound_s(calls, plan.latency_s, plan.concurrency)
    values = {
        "harness_s": harness_s,
        "evaluate_s": evaluate_s,
        "harness_cpu_s": sum(run.process.cpu_s for run in harness) / len(harness),
        "evaluate_cpu_s": sum(run.process.cpu_s for run in evaluate) / len(evaluate),
        "harness_fixed_cpu_s": tiny.process.cpu_s,
        "lm_bound_s": bound,
        "harness_excess_s": harness_s - bound,
        "evaluate_excess_s": evaluate_s - bound,
        "harness_fixed_cost_s": fixed_cost_s(tiny, plan.latency_s),
        "lm_calls": float(calls),
        "harness_accuracy": harness[0].correct / max(harness[0].records, 1),
        "evaluate_accuracy": evaluate[0].correct / max(evaluate[0].records, 1),
    }
    notes = [
        f"{len(plan.programs)} programs × {harness[0].records // len(plan.programs)} examples at "
        f"{plan.latency_s:g} s a call, {plan.concurrency} in flight; mean of {len(harness)} runs each, palindromic",
        "excess: wall less the LM-bound time; fixed cost: a one-call session less its call; "
        "cpu: user + system of the process tree (steadier than wall on a loaded machine)",
    ]
    notes += _problems("harness", harness) + _problems("dspy.Evaluate", evaluate)
    if {run.records for run in [*harness, *evaluate]} != {harness[0].records}:
        notes.append("the harness and the script did not evaluate the same number of examples")
    return Row(
        f"harness vs dspy.Evaluate(num_threads={plan.concurrency}), HTTP LM",
        values,
        ratio(evaluate_s, harness_s),
        VERSUS_GOAL,
        "; ".join(notes),
    )


def peak_row(plan: HttpPlan, harness: Sequence[HttpRun], evaluate: Sequence[HttpRun]) -> Row:
    """The most calls the server saw in flight during a harness run, against ``--evals-concurrency``."""
    peak = max(run.server.peak_in_flight for run in harness)
    values = {
        "harness_peak_in_flight": float(peak),
        "evaluate_peak_in_flight": float(max(run.server.peak_in_flight for run in evaluate)),
        "cap": float(plan.concurrency),
    }
    return Row(
        f"peak LM calls in flight, harness (--evals-concurrency {plan.concurrency})",
        values,
        ratio(peak, plan.concurrency),
        PEAK_GOAL,
        "read from the server's /stats, reset before each run",
    )


def _problems(what: str, runs: Sequence[HttpRun]) -> list[str]:
    failed = sum(run.server.failed for run in runs)
    return [f"{what}: {failed} calls not answered 200"] if failed else []


# ----- running them -----


class FakeServer:
    """The fake OpenAI-compatible server's URLs and statistics (it runs in its own process)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.root = base_url.removesuffix("/v1")

    def _json(self, path: str, data: dict[str, Any] | None = None) -> Any:
        body = None if data is None else json.dumps(data).encode()
        request = urllib.request.Request(self.root + path, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def reset(self) -> None:
        self._json("/stats/reset", {})

    def stats(self) -> ServerStats:
        return ServerStats.from_snapshot(self._json("/stats"))


@contextmanager
def fake_server(latency_s: float) -> Iterator[FakeServer]:
    """Start ``python -m tests.fake_openai`` on a free port; stop it (SIGTERM) at exit."""
    try:
        from tests.fake_openai import fake_openai_process
    except ImportError as exc:
        raise BenchError(f"the fake OpenAI server (tests/fake_openai.py) cannot be imported: {exc}") from None
    try:
        with fake_openai_process("--latency", f"{latency_s:g}") as base_url:
            yield FakeServer(base_url)
    except RuntimeError as exc:
        raise BenchError(str(exc)) from None


def run_http_harness(plan: HttpPlan, server: FakeServer, work: Path, *, tiny: bool = False) -> HttpRun:
    """The harness against the server, its statistics reset before."""
    work.mkdir(parents=True, exist_ok=True)
    server.reset()
    run = run_process(plan.harness_command(work, server.base_url, tiny=tiny), work / "pytest.log")
    stats = server.stats()
    what = "pytest (HTTP LM, one test)" if tiny else "pytest (HTTP LM)"
    if run.returncode not in (0, 1):  # 1: a gate failed (the fake model is no doctor), not the point here
        raise failure(what, run)
    rows = read_predictions(work / "reports", what, run)
    return HttpRun(run, len(rows), sum(r["correct"] == "True" for r in rows), stats)


def run_http_evaluate(plan: HttpPlan, server: FakeServer, work: Path) -> HttpRun:
    """``dspy.Evaluate(num_threads=N)`` over the programs in a fresh interpreter, statistics reset before."""
    server.reset()
    child = run_child("http_evaluate", plan.job(server.base_url), work)
    return HttpRun(child.process, int(child.result["records"]), int(child.result["correct"]), server.stats())


HTTP_PAIRED = ("http_harness", "http_evaluate")
HTTP_ORDER = ("http_tiny", *HTTP_PAIRED, *reversed(HTTP_PAIRED))
"""The one-call session first, then harness and script forth and back."""


@contextmanager
def http_measures(plan: Plan, work: Path) -> Iterator[dict[str, tuple[str, Callable[[Path], Any]]]]:
    """What each step of :data:`HTTP_ORDER` runs, with the server up for all of them."""
    http = HttpPlan.from_plan(plan)
    with fake_server(http.latency_s) as server:
        yield {
            "http_tiny": (
                f"pytest, HTTP LM, one test of one example ({http.latency_s:g} s a call)",
                lambda d: run_http_harness(http, server, d, tiny=True),
            ),
            "http_harness": (
                f"pytest suites, HTTP LM, 3 programs, --evals-concurrency {http.concurrency}",
                lambda d: run_http_harness(http, server, d),
            ),
            "http_evaluate": (
                f"dspy.Evaluate(num_threads={http.concurrency}), HTTP LM, 3 programs",
                lambda d: run_http_evaluate(http, server, d),
            ),
        }


def http_rows(plan: Plan, got: Callable[[str], list[Any]]) -> list[tuple[str, Goal, Callable[[], Row]]]:
    """The two rows, each as (name, goal, build): ``got(key)`` gives a step's runs or raises its error."""
    http = HttpPlan.from_plan(plan)
    return [
        (
            "harness vs dspy.Evaluate, HTTP LM",
            VERSUS_GOAL,
            lambda: versus_evaluate_row(http, got("http_tiny")[0], got("http_harness"), got("http_evaluate")),
        ),
        (
            "peak LM calls in flight, HTTP LM",
            PEAK_GOAL,
            lambda: peak_row(http, got("http_harness"), got("http_evaluate")),
        ),
    ]
