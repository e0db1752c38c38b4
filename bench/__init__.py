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
import operator
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from evals.labels import DIAGNOSES, slug
from evals.records import ExampleRecord

ROOT = Path(__file__).resolve().parents[1]
SEED = 0
QUICK_DIAGNOSES = DIAGNOSES[::3]
"""``--quick``: every third diagnosis (8 of 22), the same ones every time."""
SYNTHETIC_PROGRAMS = ("zero_shot", "chain_of_thought", "knn_few_shot")
UPLOAD_SIZES = (1_000, 10_000)
SAMPLE_INTERVAL_S = 0.2
PROMPT_REPEATS = 5
UPLOAD_REPEATS = 3
SUBPROCESS_TIMEOUT_S = 1800
_SCRUBBED_ENV = ("EVALS_", "MLFLOW_", "PYTEST_ADDOPTS", "PYTEST_XDIST_AUTO_NUM_WORKERS")
_OPS = {"<=": (operator.le, "≤"), ">=": (operator.ge, "≥"), "<": (operator.lt, "<")}


class BenchError(Exception):
    """A measurement could not be taken; the message is one readable line."""


# ----- results: goals, rows, rendering -----


@dataclass(frozen=True)
class Goal:
    """What a row's ratio should be, e.g. ``Goal("<=", 1.05)``."""

    op: str
    target: float

    def met(self, ratio: float | None) -> bool | None:
        """True or False, or None when there is no ratio to judge."""
        return None if ratio is None else bool(_OPS[self.op][0](ratio, self.target))

    def __str__(self) -> str:
        return f"{_OPS[self.op][1]} {self.target:g}"


@dataclass(frozen=True)
class Row:
    """One measurement: its values (unit in the key's suffix), ratio, goal and verdict."""

    name: str
    values: dict[str, float]
    ratio: float | None
    goal: Goal
    note: str = ""

    @property
    def met(self) -> bool | None:
        return self.goal.met(self.ratio)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "values": self.values,
            "ratio": self.ratio,
            "goal": str(self.goal),
            "met": self.met,
            "note": self.note,
        }


@dataclass(frozen=True)
class BenchReport:
    """The machine, the options, the rows and how long it all took."""

    machine: dict[str, Any]
    options: dict[str, Any]
    rows: list[Row]
    runtime_s: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "options": self.options,
            "runtime_s": round(self.runtime_s, 1),
            "rows": [row.to_dict() for row in self.rows],
        }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or None when either is missing or the denominator is 0."""
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def format_value(key: str, value: float) -> str:
    """Render ``key value`` by the unit the key ends in (``_s``, ``_mib``, ``_share``, ``_per_s``)."""
    label = key.replace("_", " ")
    if key.endswith("_per_s"):
        return f"{label[:-6]} {value:,.0f}/s" if value >= 100 else f"{label[:-6]} {value:.2f}/s"
    if key.endswith("_s"):
        return f"{label[:-2]} {value:,.1f} s"
    if key.endswith("_mib"):
        return f"{label[:-4]} {value:,.0f} MiB"
    if key.endswith("_share"):
        return f"{label} {value:.0%}"
    if key.endswith("_accuracy"):
        return f"{label} {value:.3f}"
    return f"{label} {value:g}"


def measured_text(row: Row, separator: str = "; ") -> str:
    parts = [format_value(key, value) for key, value in row.values.items()]
    return separator.join([*parts, row.note] if row.note else parts)


def _cells(row: Row) -> tuple[str, str, str]:
    met = {True: "yes", False: "no", None: "n/a"}[row.met]
    return ("n/a" if row.ratio is None else f"{row.ratio:.3f}", str(row.goal), met)


def machine_line(machine: dict[str, Any]) -> str:
    return (
        f"{machine['nproc']} cores ({machine['cpu']}), {machine['ram_gib']:.1f} GiB RAM, "
        f"load {machine['load_start']:.2f} at start, {machine['load_end']:.2f} at end"
    )


def render_table(report: BenchReport) -> Any:
    """The rows as a rich Table titled with the machine."""
    from rich.table import Table

    table = Table(
        "measurement", "measured", "ratio", "goal", "met", title=machine_line(report.machine), title_justify="left"
    )
    for row in report.rows:
        ratio_text, goal, met = _cells(row)
        style = {"yes": "green", "no": "red"}.get(met, "yellow")
        table.add_row(row.name, measured_text(row, "\n"), ratio_text, goal, f"[{style}]{met}[/{style}]")
    return table


def render_markdown(report: BenchReport) -> str:
    """The rows as a Markdown table for the README, with the machine and options above it."""
    options = ", ".join(f"{key}={value}" for key, value in report.options.items())
    lines = [
        f"Machine: {machine_line(report.machine)}. Options: {options}. Runtime {report.runtime_s:.0f} s.",
        "",
        "| measurement | measured | ratio | goal | met |",
        "|---|---|---|---|---|",
    ]
    for row in report.rows:
        cells = (row.name, measured_text(row), *_cells(row))
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def machine_info() -> dict[str, Any]:
    """nproc, CPU model (from /proc/cpuinfo), RAM (from /proc/meminfo) and the load average."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in _read("/proc/cpuinfo").splitlines()
            if line.startswith("model name")
        ),
        "unknown CPU",
    )
    mem_kib = next(
        (int(line.split()[1]) for line in _read("/proc/meminfo").splitlines() if line.startswith("MemTotal:")), 0
    )
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "ram_gib": mem_kib / 2**20,
        "load_start": os.getloadavg()[0],
        "load_end": os.getloadavg()[0],
    }


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


# ----- the process tree's memory, from /proc -----


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` from ``/proc/<pid>/task/*/children``, else by scanning ppids."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    found: list[int] = []
    for tid in tasks:
        try:
            found.extend(int(child) for child in Path(f"/proc/{pid}/task/{tid}/children").read_text().split())
        except FileNotFoundError:  # a kernel without CONFIG_PROC_CHILDREN (or a thread that just ended)
            return _children_by_ppid(pid)
        except OSError:
            continue
    return found


def _children_by_ppid(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _read(f"/proc/{entry}/stat")
            # The command name may hold spaces and parentheses: the fields start after the last ')'.
            fields = stat.rsplit(")", 1)[-1].split()
            if len(fields) > 1 and fields[1] == str(pid):
                found.append(int(entry))
    return found


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    tree, stack = [pid], [pid]
    while stack:
        for child in children(stack.pop()):
            tree.append(child)
            stack.append(child)
    return tree


def rss_kib(pid: int) -> int:
    fields = _read(f"/proc/{pid}/statm").split()
    return int(fields[1]) * os.sysconf("SC_PAGE_SIZE") // 1024 if len(fields) > 1 else 0


def pss_kib(pid: int) -> int:
    for line in _read(f"/proc/{pid}/smaps_rollup").splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


class TreeSampler:
    """Samples the summed RSS and PSS of a process tree every ``interval_s`` in a thread; keeps the peaks.

    RSS counts pages shared between processes (the model file mapped by every worker) once per
    process; PSS shares them out, so its sum is what the tree really holds.
    """

    def __init__(self, pid: int, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.peak_rss_kib = self.peak_pss_kib = self.peak_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="evals-bench-rss", daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> None:
        tree = [pid for pid in process_tree(self.pid) if rss_kib(pid)]
        self.peak_rss_kib = max(self.peak_rss_kib, sum(rss_kib(pid) for pid in tree))
        self.peak_pss_kib = max(self.peak_pss_kib, sum(pss_kib(pid) for pid in tree))
        self.peak_processes = max(self.peak_processes, len(tree))

    def _loop(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval_s):
                return


@dataclass(frozen=True)
class ProcessRun:
    """Wall time, exit status and peak memory of one subprocess tree."""

    wall_s: float
    returncode: int
    peak_rss_mib: float
    peak_pss_mib: float
    peak_processes: int
    log: Path


def run_process(
    command: Sequence[str], log: Path, *, cwd: Path = ROOT, timeout_s: float = SUBPROCESS_TIMEOUT_S
) -> ProcessRun:
    """Run a command in its own process group, timing it and sampling its tree's memory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_ENV)}
    with log.open("wb") as out:
        started = time.perf_counter()
        process = subprocess.Popen(
            list(command), cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            with TreeSampler(process.pid) as sampler:
                returncode = process.wait(timeout=timeout_s)
        finally:
            if process.poll() is None:  # timed out or interrupted: end the group this started
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        wall = time.perf_counter() - started
    return ProcessRun(
        wall, returncode, sampler.peak_rss_kib / 1024, sampler.peak_pss_kib / 1024, sampler.peak_processes, log
    )


def _failure(what: str, run: ProcessRun) -> BenchError:
    tail = " | ".join(line.strip() for line in run.log.read_text(errors="replace").splitlines()[-3:])
    return BenchError(f"{what} exited {run.returncode} (log {run.log}): {tail[-300:]}")


# ----- what is run -----


@dataclass(frozen=True)
class Plan:
    """The program, examples and data every measurement shares."""

    program: str
    per_diagnosis: int
    data_dir: str | None
    quick: bool

    @property
    def diagnoses(self) -> tuple[str, ...]:
        return QUICK_DIAGNOSES if self.quick else DIAGNOSES

    @property
    def examples(self) -> int:
        return len(self.diagnoses) * self.per_diagnosis

    def targets(self) -> list[str]:
        if not self.quick:
            return ["suites"]
        return [f"suites/test_diagnosis.py::test_diagnosis[{self.program}-{slug(d)}]" for d in self.diagnoses]

    def job(self) -> dict[str, Any]:
        return {**asdict(self), "diagnoses": list(self.diagnoses)}


@dataclass(frozen=True)
class HarnessRun:
    """A ``pytest suites`` run and what its predictions.csv says."""

    process: ProcessRun
    examples: int
    correct: int
    cached: int
    lm_call_s: float


def run_harness(plan: Plan, work: Path, workers: str, *, cache: bool, cache_dir: Path | None = None) -> HarnessRun:
    """``pytest suites -n WORKERS`` on the plan, with its own cache, report and MLflow directories.

    ``cache_dir`` shares the LM response and compile caches of an earlier run (a warm re-run).
    """
    import csv

    work.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pytest",
        *plan.targets(),
        "-n",
        workers,
        "-q",
        "-p",
        "no:randomly",
        "--evals-programs",
        plan.program,
        "--evals-per-diagnosis",
        str(plan.per_diagnosis),
        "--evals-cache-dir",
        str(cache_dir or work / "cache"),
        "--evals-report-dir",
        str(work / "reports"),
        "--evals-spool-dir",
        str(work / "spool"),
        "--evals-tracking-uri",
        f"sqlite:///{work}/mlflow.db",
        "--evals-no-mlflow",
        "--evals-trigger",
        "local",
        "-o",
        f"cache_dir={work / 'pytest-cache'}",
    ]
    command += ["--evals-data-dir", plan.data_dir] if plan.data_dir else []
    command += [] if cache else ["--evals-no-cache"]
    run = run_process(command, work / f"pytest-n{workers}.log")
    found = sorted((work / "reports").glob("*/artifacts/predictions.csv"))
    if run.returncode not in (0, 1) or len(found) != 1:  # 1: a gate failed, which is not the point here
        raise _failure(f"pytest -n {workers}", run)
    with found[0].open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if len(rows) != plan.examples:
        raise BenchError(f"pytest -n {workers} recorded {len(rows)} examples, expected {plan.examples} ({run.log})")
    return HarnessRun(
        run,
        len(rows),
        sum(r["correct"] == "True" for r in rows),
        sum(r["cached"] == "True" for r in rows),
        sum(float(r["latency_ms"]) for r in rows) / 1000,
    )


@dataclass(frozen=True)
class ChildRun:
    """A ``child_*`` function's run and the JSON it returned."""

    process: ProcessRun
    result: dict[str, Any]


def run_child(kind: str, job: dict[str, Any], work: Path) -> ChildRun:
    """Run ``child_<kind>(job)`` in a fresh interpreter; return its run and its result."""
    work.mkdir(parents=True, exist_ok=True)
    job_file, result_file = work / f"{kind}-job.json", work / f"{kind}-result.json"
    job_file.write_text(json.dumps({**job, "work": str(work)}))
    run = run_process([sys.executable, "-m", "bench", kind, str(job_file), str(result_file)], work / f"{kind}.log")
    if run.returncode != 0 or not result_file.is_file():
        raise _failure(kind.replace("_", " "), run)
    return ChildRun(run, json.loads(result_file.read_text()))


# ----- the children (run in fresh interpreters) -----


def _job_examples(job: dict[str, Any]) -> tuple[Any, list[Any]]:
    """The dataset and the examples the harness samples, in the order its tests run them."""
    from evals.data import load_dataset, sample

    dataset = load_dataset(job["data_dir"], seed=SEED)
    sampled = sample(dataset.split("test"), job["per_diagnosis"], seed=SEED)
    chosen = [e for e in sampled if e.diagnosis in job["diagnoses"]]
    return dataset, sorted(chosen, key=lambda e: (DIAGNOSES.index(e.diagnosis), e.id))


def _program_and_examples(job: dict[str, Any]) -> tuple[Any, list[Any], Any]:
    """Build the LM as the harness does for one process (cache off) and the program from the registry."""
    import dspy

    from evals.lm.spec import build_lm, parse_lm_spec, worker_threads
    from programs.registry import PROGRAMS

    dataset, examples = _job_examples(job)
    # The harness gives one process all the cores (worker_threads(1)); the plain loop gets the same.
    lm = build_lm(parse_lm_spec("smollm2"), n_threads=worker_threads(1), cache=False)
    dspy.configure(lm=lm, adapter=dspy.JSONAdapter())
    trainset = [
        dspy.Example(symptoms=e.symptoms, diagnosis=e.diagnosis).with_inputs("symptoms") for e in dataset.split("train")
    ]
    return PROGRAMS[job["program"]].build(trainset), examples, lm


def child_plain_loop(job: dict[str, Any]) -> dict[str, Any]:
    """Call the program on each example, recording latency, tokens and validity as the runner does."""
    import dspy

    from evals.labels import DIAGNOSIS_SET

    program, examples, lm = _program_and_examples(job)
    engine_s = [0.0]
    complete = lm.engine.complete

    def timed_complete(request: Any) -> Any:
        started = time.perf_counter()
        try:
            return complete(request)
        finally:
            engine_s[0] += time.perf_counter() - started

    lm.engine.complete = timed_complete
    latencies, correct, valid, prompt_tokens = [], 0, 0, 0
    for example in examples:
        started = time.perf_counter()
        with dspy.track_usage() as usage:
            try:
                answer = str(getattr(program(symptoms=example.symptoms), "diagnosis", "")).strip().lower()
            except Exception:  # recorded as an invalid answer, as the runner records an error
                answer = ""
        latencies.append(time.perf_counter() - started)
        prompt_tokens += sum(int(u.get("prompt_tokens") or 0) for u in usage.get_total_tokens().values())
        valid += answer in DIAGNOSIS_SET
        correct += answer == example.diagnosis
    return {
        "examples": len(examples),
        "correct": correct,
        "valid": valid,
        "lm_call_s": sum(latencies),
        "engine_s": engine_s[0],
        "prompt_tokens": prompt_tokens,
    }


def child_dspy_evaluate(job: dict[str, Any]) -> dict[str, Any]:
    """``dspy.Evaluate(devset, metric, num_threads=2)`` on the same program and examples."""
    import dspy

    from evals.scoring import diagnosis_match

    program, examples, _ = _program_and_examples(job)
    devset = [dspy.Example(symptoms=e.symptoms, diagnosis=e.diagnosis).with_inputs("symptoms") for e in examples]
    result = dspy.Evaluate(devset=devset, metric=diagnosis_match, num_threads=2, display_progress=False)(program)
    return {"examples": len(devset), "accuracy": float(result.score) / 100}


def child_prompt_rate(job: dict[str, Any]) -> dict[str, Any]:
    """Prompt tokens/s: the engine's ``create_chat_completion`` against ``tokenize`` + ``eval`` of the same tokens."""
    import dspy

    from evals.lm.llama import N_CTX, load_llama
    from evals.lm.spec import parse_lm_spec, worker_threads
    from programs.signatures import Diagnose

    dataset, _ = _job_examples(job)
    # A long JSONAdapter prompt: the real one, with three training examples as demos.
    demos = [dspy.Example(symptoms=e.symptoms, diagnosis=e.diagnosis) for e in dataset.split("train")[:3]]
    messages = dspy.JSONAdapter().format(Diagnose, demos, {"symptoms": dataset.split("test")[0].symptoms})
    threads = worker_threads(1)
    llm = load_llama(
        model_path=parse_lm_spec("smollm2").model,
        n_ctx=N_CTX,
        n_threads=1,
        n_threads_batch=threads,
        n_batch=512,
        verbose=False,
    )

    def engine_once() -> tuple[float, int]:
        llm.reset()
        started = time.perf_counter()
        usage = llm.create_chat_completion(messages=messages, max_tokens=1, temperature=0.0)["usage"]
        return time.perf_counter() - started, int(usage["prompt_tokens"])

    _, n_tokens = engine_once()  # warm-up; what it evaluated is the prompt's tokens
    text = llm.detokenize([int(t) for t in llm.input_ids[:n_tokens]], special=True)
    tokens = [int(t) for t in llm.input_ids[:n_tokens]]

    def eval_once() -> float:
        llm.reset()
        started = time.perf_counter()
        llm.eval(llm.tokenize(text, add_bos=False, special=True))
        return time.perf_counter() - started

    same = llm.tokenize(text, add_bos=False, special=True) == tokens
    eval_once()
    engine_s, eval_s = [], []
    for _ in range(PROMPT_REPEATS):  # interleaved, so that a change of machine load hits both
        engine_s.append(engine_once()[0])
        eval_s.append(eval_once())
    return {
        "prompt_tokens": n_tokens,
        "threads": threads,
        "same_tokens": same,
        "engine_s": statistics.median(engine_s),
        "eval_s": statistics.median(eval_s),
    }


def child_mlflow_upload(job: dict[str, Any]) -> dict[str, Any]:
    """Time ``upload_bundle`` of synthetic sessions, each into a fresh sqlite store (median of repeats).

    Store creation and one small warm-up upload are not timed; the sizes are interleaved.
    """
    from mlflow.tracking import MlflowClient

    from evals.redact import Redactor
    from evals.store.upload import ensure_experiment, upload_bundle

    work = Path(job["work"])
    bundles = {size: build_synthetic_bundle(work / f"bundle-{size}", size) for size in (30, *job["sizes"])}
    times: dict[int, list[float]] = {size: [] for size in bundles}
    calls: dict[int, int] = {}
    for attempt in range(UPLOAD_REPEATS):
        for size, bundle in bundles.items():
            if size == 30 and attempt:
                continue
            uri = f"sqlite:///{work / f'store-{size}-{attempt}'}/mlflow.db"
            Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True)
            ensure_experiment(MlflowClient(uri), "symptom-diagnosis-evals", uri)
            with count_client_calls() as counts:
                started = time.perf_counter()
                upload_bundle(bundle, uri, redactor=Redactor.from_config({}))
                times[size].append(time.perf_counter() - started)
            calls[size] = sum(counts.values())
    return {
        str(size): {
            "upload_s": statistics.median(times[size]),
            "client_calls": calls[size],
            "artifacts_mib": sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file()) / 2**20,
        }
        for size, bundle in bundles.items()
        if size != 30
    }


@contextmanager
def count_client_calls() -> Iterator[dict[str, int]]:
    """Count the outermost calls of public ``MlflowClient`` methods (per example calls would show here)."""
    import inspect

    from mlflow.tracking import MlflowClient

    counts: dict[str, int] = {}
    depth = threading.local()
    originals = {
        name: f for name, f in vars(MlflowClient).items() if inspect.isfunction(f) and not name.startswith("_")
    }

    def counting(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            level = getattr(depth, "level", 0)
            counts[name] = counts.get(name, 0) + (level == 0)
            depth.level = level + 1
            try:
                return method(*args, **kwargs)
            finally:
                depth.level = level

        return wrapper

    for name, method in originals.items():
        setattr(MlflowClient, name, counting(name, method))
    try:
        yield counts
    finally:
        for name, method in originals.items():
            setattr(MlflowClient, name, method)


# ----- a synthetic session bundle, written by the plugin's own code path -----

_WORDS = ("itchy", "burning", "sore", "swollen", "aching", "dizzy", "tired", "feverish", "nauseous", "short of breath")
_PARTS = ("chest", "head", "skin", "stomach", "joints", "back", "throat", "legs", "eyes", "neck")


def synthetic_records(
    examples: int, programs: Sequence[str] = SYNTHETIC_PROGRAMS, seed: int = SEED
) -> list[ExampleRecord]:
    """``examples`` seeded patient texts, each answered by every program (about 60 % right, 3 % invalid)."""
    rng = random.Random(seed)
    records = []
    for i in range(examples):
        gold = DIAGNOSES[i % len(DIAGNOSES)]
        text = (
            f"For {rng.randint(2, 14)} days I have felt {rng.choice(_WORDS)} and {rng.choice(_WORDS)}; my "
            f"{rng.choice(_PARTS)} is {rng.choice(_WORDS)} and my {rng.choice(_PARTS)} hurts at night."
        )
        for program in programs:
            roll = rng.random()
            predicted = gold if roll < 0.6 else None if roll > 0.97 else rng.choice(DIAGNOSES)
            records.append(
                ExampleRecord(
                    program,
                    f"test-{i:05d}",
                    text,
                    gold,
                    predicted,
                    rng.lognormvariate(7, 0.4),
                    500 + rng.randrange(60),
                    10,
                    None if predicted else "answer outside the 22 labels: 'unsure'",
                )
            )
    return records


def build_synthetic_bundle(directory: Path, examples: int, programs: Sequence[str] = SYNTHETIC_PROGRAMS) -> Path:
    """Write a session bundle of ``examples`` × ``programs`` records with :func:`evals.results.bundle.write_bundle`."""
    from evals.config.policies import parse_policies
    from evals.config.settings import resolve
    from evals.config.thresholds import parse_thresholds
    from evals.context import SessionContext
    from evals.data import Example, SymptomDataset
    from evals.redact import Redactor
    from evals.results.bundle import write_bundle
    from evals.results.summary import SessionSummary
    from evals.stats.metrics import aggregate

    records = synthetic_records(examples, programs)
    split = tuple(Example(r.example_id, r.symptoms, r.gold) for r in records if r.program == programs[0])
    session_id = uuid.UUID(int=random.Random(f"bundle:{examples}").getrandbits(128)).hex
    params = {
        "lm.spec": "smollm2",
        "sample.examples": str(examples),
        "sample.seed": str(SEED),
        "dataset.source": "synthetic",
    }
    names = sorted(set(programs))
    context = SessionContext(
        session_id=session_id,
        started_at=time.time(),
        settings=resolve({}, {}, {}, ROOT),
        policies=parse_policies(parse_thresholds({"version": 1}, "<bench>", names)),
        records=tuple(sorted(records, key=lambda r: (r.program, r.example_id))),
        manifest=SymptomDataset(source="synthetic", revision=None, splits={"test": split}).manifest(),
        params=params,
        program_params={name: {"program.name": name, "program.base": name} for name in names},
        program_states={name: {"program": name, "state": {"synthetic": name}} for name in names},
    )
    metrics = aggregate(records)
    summary = SessionSummary(
        records=list(context.records),
        metrics=metrics,
        checks={name: [] for name in metrics},
        error_lines=[],
        incomplete=[],
        params=params,
        program_params={name: {"program.name": name, "program.base": name} for name in metrics},
    )
    write_bundle(directory, context, summary, Redactor.from_config({}).text)
    return directory


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


# ----- the whole bench -----

PAIRED = ("n0", "plain", "evaluate", "n2")
ORDER = ("prompt", *PAIRED, *reversed(PAIRED), "cold", "warm", "auto", "upload")
"""The compared runs go forth and back, so a steady change of machine load weighs on both sides alike."""


def _measures(plan: Plan, work: Path) -> dict[str, tuple[str, Callable[[Path], Any]]]:
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


def run_bench(plan: Plan, progress: Callable[[str], None] = print) -> BenchReport:
    """Take every measurement in :data:`ORDER` and return the rows."""
    started, machine = time.perf_counter(), machine_info()
    results: dict[str, list[Any] | BenchError] = {}
    with tempfile.TemporaryDirectory(prefix="evals-bench-") as tmp:
        measures = _measures(plan, Path(tmp))
        for index, key in enumerate(ORDER, start=1):
            what, measure = measures[key]
            progress(f"[{index}/{len(ORDER)}] {what}")
            done = results.setdefault(key, [])
            if isinstance(done, BenchError):
                continue
            try:
                done.append(measure(Path(tmp) / f"{key}-{len(done) + 1}"))
            except Exception as exc:  # one failed measurement leaves its rows unmeasured, not the bench
                results[key] = BenchError(str(exc))
                progress(f"    failed: {exc}")
    rows = [
        _row(
            "harness overhead", Goal("<=", 1.05), lambda: _overhead(plan, _got(results, "n0"), _got(results, "plain"))
        ),
        _row(
            "harness vs dspy.Evaluate",
            Goal(">=", 1.0),
            lambda: _versus_evaluate(plan, _got(results, "n2"), _got(results, "evaluate")),
        ),
        _row(
            "warm re-run vs cold", Goal("<=", 0.05), lambda: _warm(_got(results, "cold")[0], _got(results, "warm")[0])
        ),
        _row("-n 2 vs -n 0", Goal(">=", 1.6), lambda: _parallel(_got(results, "n0"), _got(results, "n2"))),
        _row("prompt tokens/s", Goal(">=", 0.8), lambda: _prompt_rate(_got(results, "prompt")[0])),
        _row(
            "peak RSS -n auto vs -n 0", Goal("<=", 3.0), lambda: _memory(_got(results, "n0"), _got(results, "auto")[0])
        ),
        _row("MLflow upload 10k vs 1k", Goal("<", 3.0), lambda: _upload(_got(results, "upload")[0])),
    ]
    machine["load_end"] = os.getloadavg()[0]
    options = {
        "program": plan.program,
        "per_diagnosis": plan.per_diagnosis,
        "examples": plan.examples,
        "quick": plan.quick,
    }
    return BenchReport(machine, options, rows, time.perf_counter() - started)


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
