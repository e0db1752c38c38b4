"""Running what is measured in subprocesses, and sampling their process tree's memory from /proc."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import QUICK_DIAGNOSES, ROOT, SAMPLE_INTERVAL_S, SCRUBBED_ENV, SUBPROCESS_TIMEOUT_S, BenchError
from evals.labels import DIAGNOSES, slug


def machine_info() -> dict[str, Any]:
    """nproc, CPU model (from /proc/cpuinfo), RAM (from /proc/meminfo) and the load average."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in read_text("/proc/cpuinfo").splitlines()
            if line.startswith("model name")
        ),
        "unknown CPU",
    )
    mem_kib = next(
        (int(line.split()[1]) for line in read_text("/proc/meminfo").splitlines() if line.startswith("MemTotal:")), 0
    )
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "ram_gib": mem_kib / 2**20,
        "load_start": os.getloadavg()[0],
        "load_end": os.getloadavg()[0],
    }


def read_text(path: str) -> str:
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
            stat = read_text(f"/proc/{entry}/stat")
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
    fields = read_text(f"/proc/{pid}/statm").split()
    return int(fields[1]) * os.sysconf("SC_PAGE_SIZE") // 1024 if len(fields) > 1 else 0


def pss_kib(pid: int) -> int:
    for line in read_text(f"/proc/{pid}/smaps_rollup").splitlines():
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
    """Wall time, exit status, peak memory and CPU time of one subprocess tree.

    ``cpu_s`` (user + system of the process and the descendants it waited for) depends less on
    what else the machine runs than the wall time does.
    """

    wall_s: float
    returncode: int
    peak_rss_mib: float
    peak_pss_mib: float
    peak_processes: int
    log: Path
    cpu_s: float = 0.0


def run_process(
    command: Sequence[str], log: Path, *, cwd: Path = ROOT, timeout_s: float = SUBPROCESS_TIMEOUT_S
) -> ProcessRun:
    """Run a command in its own process group, timing it and sampling its tree's memory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(SCRUBBED_ENV)}
    with log.open("wb") as out:
        before = _children_cpu_s()
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
    peaks = (sampler.peak_rss_kib / 1024, sampler.peak_pss_kib / 1024, sampler.peak_processes)
    return ProcessRun(wall, returncode, *peaks, log, _children_cpu_s() - before)


def _children_cpu_s() -> float:
    """User + system seconds of this process's children that have ended and been waited for."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def failure(what: str, run: ProcessRun) -> BenchError:
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


def session_outputs(work: Path, cache_dir: Path | None = None) -> list[str]:
    """Arguments that keep a measured session's caches, reports and store under ``work`` (MLflow off)."""
    return [
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


def run_harness(plan: Plan, work: Path, workers: str, *, cache: bool, cache_dir: Path | None = None) -> HarnessRun:
    """``pytest suites -n WORKERS`` on the plan, with its own cache, report and MLflow directories.

    ``cache_dir`` shares the LM response and compile caches of an earlier run (a warm re-run).
    """
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
        *session_outputs(work, cache_dir),
    ]
    command += ["--evals-data-dir", plan.data_dir] if plan.data_dir else []
    command += [] if cache else ["--evals-no-cache"]
    run = run_process(command, work / f"pytest-n{workers}.log")
    if run.returncode not in (0, 1):  # 1: a gate failed, which is not the point here
        raise failure(f"pytest -n {workers}", run)
    rows = read_predictions(work / "reports", f"pytest -n {workers}", run)
    if len(rows) != plan.examples:
        raise BenchError(f"pytest -n {workers} recorded {len(rows)} examples, expected {plan.examples} ({run.log})")
    return HarnessRun(
        run,
        len(rows),
        sum(r["correct"] == "True" for r in rows),
        sum(r["cached"] == "True" for r in rows),
        sum(float(r["latency_ms"]) for r in rows) / 1000,
    )


def read_predictions(reports: Path, what: str, run: ProcessRun) -> list[dict[str, str]]:
    """The rows of the one session's ``predictions.csv`` under ``reports`` (a BenchError if not exactly one)."""
    import csv

    found = sorted(reports.glob("*/artifacts/predictions.csv"))
    if len(found) != 1:
        raise failure(f"{what} wrote {len(found)} predictions.csv files, not 1;", run)
    with found[0].open(newline="") as handle:
        return list(csv.DictReader(handle))


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
        raise failure(kind.replace("_", " "), run)
    return ChildRun(run, json.loads(result_file.read_text()))
