"""``python -m evals bench``: how the harness performs, as ratios against baselines measured alongside.

Every row compares two things measured in the same command on the same machine (other
processes may be running, so an absolute number means little): the harness against a plain
loop, against ``dspy.Evaluate``, warm against cold, ``-n 2`` against ``-n 0``, the engine's
prompt rate against llama.cpp's own, memory with ``-n auto`` against one process, and an
MLflow upload of 10,000 examples against one of 1,000.

Anything that runs pytest or an LM runs in a fresh subprocess with its own temporary cache,
report and MLflow directories; the plain loop, ``dspy.Evaluate``, the prompt-rate probe and the
upload timing are the ``child_*`` functions here, run as ``python -m bench KIND JOB RESULT``.
The process tree of every subprocess is sampled from ``/proc`` for its peak memory.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.children import (
    child_dspy_evaluate,
    child_http_evaluate,
    child_mlflow_upload,
    child_plain_loop,
    child_prompt_rate,
)
from bench.common import PROMPT_REPEATS, SYNTHETIC_PROGRAMS, UPLOAD_REPEATS, UPLOAD_SIZES, BenchError
from bench.http_lm import HTTP_ORDER, http_measures, http_rows
from bench.merge import merge_row
from bench.processes import ChildRun, HarnessRun, Plan, machine_info, run_child, run_harness
from bench.results import BenchReport, Goal, Row, ratio, render_markdown
from bench.rss import measure as rss_measure
from bench.rss import rss_row

# ----- the rows -----


def mean_wall(runs: Sequence[HarnessRun | ChildRun]) -> float:
    return statistics.mean(run.process.wall_s for run in runs)


def _overhead(plan: Plan, harness: Sequence[HarnessRun], plain: Sequence[ChildRun]) -> Row:
    harness_s, plain_s = mean_wall(harness), mean_wall(plain)
    values = {
        "harness_s": harness_s,
        "plain_s": plain_s,
        "overhead_s": harness_s - plain_s,
        "harness_lm_call_share": sum(r.lm_call_s for r in harness) / (harness_s * len(harness)),
        "plain_lm_call_share": sum(r.result["lm_call_s"] for r in plain) / (plain_s * len(plain)),
        "plain_engine_share": sum(r.result["engine_s"] for r in plain) / (plain_s * len(plain)),
    }
    return Row(
        f"harness overhead (-n 0, {plan.examples} examples)",
        values,
        ratio(harness_s, plain_s),
        Goal("<=", 1.05),
        f"harness / plain loop wall time; {_runs(harness)}",
    )


def _versus_evaluate(plan: Plan, harness: Sequence[HarnessRun], evaluate: Sequence[ChildRun]) -> Row:
    harness_s, evaluate_s = mean_wall(harness), mean_wall(evaluate)
    values = {
        "harness_examples_per_s": plan.examples / harness_s,
        "evaluate_examples_per_s": plan.examples / evaluate_s,
        "harness_accuracy": harness[0].correct / plan.examples,
        "evaluate_accuracy": evaluate[0].result["accuracy"],
    }
    return Row(
        "harness -n 2 vs dspy.Evaluate(num_threads=2)",
        values,
        ratio(evaluate_s, harness_s),
        Goal(">=", 1.0),
        f"throughput ratio, aim 1.5; {_runs(harness)}",
    )


def _warm(cold: HarnessRun, warm: HarnessRun) -> Row:
    values = {
        "cold_s": cold.process.wall_s,
        "warm_s": warm.process.wall_s,
        "warm_cached": float(warm.cached),
        "warm_examples": float(warm.examples),
    }
    note = "" if warm.cached == warm.examples else "not every warm answer came from the cache"
    return Row(
        "warm re-run vs cold (-n 2, caches on)",
        values,
        ratio(warm.process.wall_s, cold.process.wall_s),
        Goal("<=", 0.05),
        note,
    )


def _parallel(serial: Sequence[HarnessRun], parallel: Sequence[HarnessRun]) -> Row:
    values = {"n0_s": mean_wall(serial), "n2_s": mean_wall(parallel)}
    return Row(
        "-n 2 vs -n 0 (cold, cache off)",
        values,
        ratio(values["n0_s"], values["n2_s"]),
        Goal(">=", 1.6),
        f"speedup; {_runs(serial)}",
    )


def _prompt_rate(result: dict[str, Any]) -> Row:
    engine, low_level = result["prompt_tokens"] / result["engine_s"], result["prompt_tokens"] / result["eval_s"]
    values = {
        "engine_tokens_per_s": engine,
        "llama_eval_tokens_per_s": low_level,
        "prompt_tokens": float(result["prompt_tokens"]),
        "threads_batch": float(result["threads"]),
    }
    note = f"median of {PROMPT_REPEATS}, interleaved"
    note += "" if result["same_tokens"] else "; re-tokenized prompt differs from the engine's tokens"
    return Row("prompt tokens/s: engine vs llama.cpp eval", values, ratio(engine, low_level), Goal(">=", 0.8), note)


def _memory(serial: Sequence[HarnessRun], auto: HarnessRun) -> Row:
    workers = max(auto.process.peak_processes - 1, 1)
    serial_rss = max(run.process.peak_rss_mib for run in serial)
    values = {
        "auto_rss_mib": auto.process.peak_rss_mib,
        "n0_rss_mib": serial_rss,
        "auto_pss_mib": auto.process.peak_pss_mib,
        "n0_pss_mib": max(run.process.peak_pss_mib for run in serial),
        "auto_workers": float(workers),
    }
    # No process of the tree should need more than the whole single-process run: controller + workers.
    return Row(
        "peak RSS -n auto vs -n 0 (process tree)",
        values,
        ratio(auto.process.peak_rss_mib, serial_rss),
        Goal("<=", workers + 1.0),
        "sum of RSS; goal: at most one -n 0 process per process",
    )


def _upload(result: dict[str, Any]) -> Row:
    small, large = (result[str(size)] for size in UPLOAD_SIZES)
    values = {
        "upload_1k_s": small["upload_s"],
        "upload_10k_s": large["upload_s"],
        "artifacts_1k_mib": small["artifacts_mib"],
        "artifacts_10k_mib": large["artifacts_mib"],
        "client_calls_1k": float(small["client_calls"]),
        "client_calls_10k": float(large["client_calls"]),
    }
    note = f"{len(SYNTHETIC_PROGRAMS)} programs per example, median of {UPLOAD_REPEATS}; flag at >= 3"
    return Row(
        "MLflow upload 10k vs 1k examples", values, ratio(large["upload_s"], small["upload_s"]), Goal("<", 3.0), note
    )


def _runs(runs: Sequence[Any]) -> str:
    return f"mean of {len(runs)} runs each, in palindromic order"


# ----- the whole bench: sections of steps and rows -----

PAIRED = ("n0", "plain", "evaluate", "n2")
ORDER = ("prompt", *PAIRED, *reversed(PAIRED), "cold", "warm", "auto", "upload")
"""The compared runs go forth and back, so a steady change of machine load weighs on both sides alike."""

Measures = dict[str, tuple[str, Callable[[Path], Any]]]
"""Step key -> (what it is, what it runs given its own fresh directory)."""
Got = Callable[[str], list[Any]]
"""A step's runs by key, or the BenchError that stopped it."""
RowSpec = tuple[str, Goal, Callable[[], Row]]
"""A row's name and goal (for a row that could not be measured) and how to build it."""


@dataclass(frozen=True)
class Section:
    """A group of rows ``--only`` selects: its steps in order, what they run, and the rows built from them.

    ``measures`` is a context manager, so that a section can hold something up for all its steps
    (the HTTP section's fake server).
    """

    name: str
    help: str
    order: tuple[str, ...]
    measures: Callable[[Plan, Path], AbstractContextManager[Measures]]
    rows: Callable[[Plan, Got], list[RowSpec]]


@contextmanager
def _llama_measures(plan: Plan, work: Path) -> Iterator[Measures]:
    yield _measures(plan, work)


def _measures(plan: Plan, work: Path) -> Measures:
    """What each step of :data:`ORDER` runs, given its own fresh directory."""
    return {
        "prompt": ("prompt tokens/s probe", lambda d: run_child("prompt_rate", plan.job(), d).result),
        "n0": ("pytest -n 0, cache off", lambda d: run_harness(plan, d, "0", cache=False)),
        "plain": ("plain loop", lambda d: run_child("plain_loop", plan.job(), d)),
        "evaluate": ("dspy.Evaluate(num_threads=2)", lambda d: run_child("dspy_evaluate", plan.job(), d)),
        "n2": ("pytest -n 2, cache off", lambda d: run_harness(plan, d, "2", cache=False)),
        "cold": ("pytest -n 2, caches on, cold", lambda d: run_harness(plan, d, "2", cache=True)),
        "warm": (
            "pytest -n 2, caches on, warm (the cold run's caches)",
            lambda d: run_harness(plan, d, "2", cache=True, cache_dir=work / "cold-1" / "cache"),
        ),
        "auto": ("pytest -n auto, cache off", lambda d: run_harness(plan, d, "auto", cache=False)),
        "upload": (
            "MLflow uploads of 1k and 10k examples",
            lambda d: run_child("mlflow_upload", {"sizes": list(UPLOAD_SIZES)}, d).result,
        ),
    }


def _llama_rows(plan: Plan, got: Got) -> list[RowSpec]:
    return [
        ("harness overhead", Goal("<=", 1.05), lambda: _overhead(plan, got("n0"), got("plain"))),
        ("harness vs dspy.Evaluate", Goal(">=", 1.0), lambda: _versus_evaluate(plan, got("n2"), got("evaluate"))),
        ("warm re-run vs cold", Goal("<=", 0.05), lambda: _warm(got("cold")[0], got("warm")[0])),
        ("-n 2 vs -n 0", Goal(">=", 1.6), lambda: _parallel(got("n0"), got("n2"))),
        ("prompt tokens/s", Goal(">=", 0.8), lambda: _prompt_rate(got("prompt")[0])),
        ("peak RSS -n auto vs -n 0", Goal("<=", 3.0), lambda: _memory(got("n0"), got("auto")[0])),
        ("MLflow upload 10k vs 1k", Goal("<", 3.0), lambda: _upload(got("upload")[0])),
    ]


def single_step(key: str, what: str, measure: Callable[[Plan, Path], Row]) -> Callable[[Plan, Path], Any]:
    """A section's ``measures`` of one step, ``measure(plan, fresh_directory)`` returning its Row."""

    @contextmanager
    def measures(plan: Plan, work: Path) -> Iterator[Measures]:
        yield {key: (what, lambda directory: measure(plan, directory))}

    return measures


def single_row(key: str, name: str, goal: Goal) -> Callable[[Plan, Got], list[RowSpec]]:
    """A section's ``rows``: the Row its one step ``key`` returned (``name`` and ``goal`` if it failed)."""
    return lambda plan, got: [(name, goal, lambda: got(key)[0])]


SECTIONS: dict[str, Section] = {
    section.name: section
    for section in (
        Section(
            "llama",
            "the embedded model (llama.cpp in process): overhead, -n 2, warm re-run, prompt rate, RSS, MLflow upload",
            ORDER,
            _llama_measures,
            _llama_rows,
        ),
        Section(
            "http",
            "an OpenAI-compatible server at 0.5 s a call: harness vs dspy.Evaluate(num_threads=16), peak in flight",
            HTTP_ORDER,
            http_measures,
            http_rows,
        ),
        # A module with one function that measures into a fresh directory and returns its Row is a
        # section of one step and one row (single_step, single_row).
        Section(
            "merge",
            "merge time of 2 shards (python -m evals merge) against the whole session, scripted LM",
            ("merge",),
            single_step("merge", "a whole session, 2 shards and their merge", lambda plan, d: merge_row(d)),
            single_row("merge", "merge of 2 shards", Goal("<=", 0.25)),
        ),
        Section(
            "rss",
            "peak RSS of pytest suites -n 2 on the embedded model with and without --evals-lm-server",
            ("rss",),
            single_step(
                "rss",
                "pytest suites -n 2, in process and with the session server",
                lambda plan, d: rss_row(rss_measure(d, per_diagnosis=plan.per_diagnosis, data_dir=plan.data_dir)),
            ),
            single_row("rss", "peak RSS -n 2 with vs without --evals-lm-server", Goal("<=", 1.0)),
        ),
    )
}
"""Every section, in the order ``python -m evals bench`` measures them (``--only`` picks some)."""


def select_sections(only: str | None) -> list[Section]:
    """The sections named in ``--only`` (comma-separated), all when None; an unknown name is a ConfigError."""
    from evals.errors import ConfigError

    if only is None:
        return list(SECTIONS.values())
    names = [name.strip() for name in only.split(",") if name.strip()]
    unknown = [name for name in names if name not in SECTIONS]
    if unknown or not names:
        raise ConfigError(f"--only {only!r}: expected sections among {', '.join(SECTIONS)} (comma-separated)")
    return [SECTIONS[name] for name in dict.fromkeys(names)]


def run_bench(plan: Plan, progress: Callable[[str], None] = print, only: str | None = None) -> BenchReport:
    """Take every step of the selected sections (all by default) and return their rows."""
    sections = select_sections(only)
    started, machine = time.perf_counter(), machine_info()
    results: dict[str, list[Any] | BenchError] = {}
    total, index, rows = sum(len(section.order) for section in sections), 0, []
    with tempfile.TemporaryDirectory(prefix="evals-bench-") as tmp:
        for section in sections:
            first = index
            try:
                with section.measures(plan, Path(tmp)) as measures:
                    for key in section.order:
                        index += 1
                        progress(f"[{index}/{total}] {measures[key][0]}")
                        _take(results, key, measures[key][1], Path(tmp), progress)
            except Exception as exc:  # the section could not start (or stop): its steps not taken are unmeasured
                progress(f"    {section.name}: {exc}")
                index = first + len(section.order)
                for key in section.order:
                    results[key] = results.get(key) or BenchError(str(exc))

            def got(key: str) -> list[Any]:
                return _got(results, key)

            rows += [_row(name, goal, build) for name, goal, build in section.rows(plan, got)]
    machine["load_end"] = os.getloadavg()[0]
    options: dict[str, Any] = {"sections": ",".join(section.name for section in sections), "quick": plan.quick}
    if SECTIONS["llama"] in sections:  # the HTTP rows take every example of three programs, whatever these say
        options.update(program=plan.program, per_diagnosis=plan.per_diagnosis, examples=plan.examples)
    return BenchReport(machine, options, rows, time.perf_counter() - started)


def _take(
    results: dict[str, list[Any] | BenchError],
    key: str,
    measure: Callable[[Path], Any],
    work: Path,
    progress: Callable[[str], None],
) -> None:
    done = results.setdefault(key, [])
    if isinstance(done, BenchError):
        return
    try:
        done.append(measure(work / f"{key}-{len(done) + 1}"))
    except Exception as exc:  # one failed measurement leaves its rows unmeasured, not the bench
        results[key] = BenchError(str(exc))
        progress(f"    failed: {exc}")


def _got(results: dict[str, list[Any] | BenchError], key: str) -> list[Any]:
    value = results[key]
    if isinstance(value, BenchError):
        raise value
    return value


def _row(name: str, goal: Goal, build: Callable[[], Row]) -> Row:
    try:
        return build()
    except Exception as exc:  # a missing measurement, or a result without a value the row needs
        return _failed(name, goal, exc if isinstance(exc, BenchError) else BenchError(f"{type(exc).__name__}: {exc}"))


def _failed(name: str, goal: Goal, exc: Exception) -> Row:
    return Row(name, {}, None, goal, f"not measured: {exc}")


def write_report(report: BenchReport, out: Path) -> Path:
    """Write the JSON to ``out`` and the Markdown next to it (``.md``); return the Markdown path."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    markdown = out.with_suffix(".md")
    markdown.write_text(render_markdown(report))
    return markdown


CHILDREN: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "plain_loop": child_plain_loop,
    "dspy_evaluate": child_dspy_evaluate,
    "http_evaluate": child_http_evaluate,
    "prompt_rate": child_prompt_rate,
    "mlflow_upload": child_mlflow_upload,
}


def child_main(argv: Sequence[str]) -> int:
    """``python -m bench KIND JOB RESULT``: run one child measurement, write its JSON result."""
    kind, job_file, result_file = argv
    result = CHILDREN[kind](json.loads(Path(job_file).read_text()))
    Path(result_file).write_text(json.dumps(result))
    return 0


def check_program(name: str) -> None:
    """Raise ConfigError for a program the registry does not know (one line, before any measurement)."""
    from programs.registry import get_program

    get_program(name)
