"""Peak memory of ``pytest suites -n 2`` on the embedded model, with and without ``--evals-lm-server``.

Issue #12, "one model copy per session": without the session server every xdist worker loads
its own copy of the model; with it one server process holds the only copy. Both runs are
sampled the same way (:class:`bench.processes.TreeSampler`, every 0.2 s, the whole process
tree: pytest, its workers and the server). RSS counts the mapped model file once per process
that maps it; PSS shares those pages out. ``python -m bench.rss [--per-diagnosis N]`` prints
the numbers as JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import BenchError
from bench.processes import ProcessRun, failure, run_process, session_outputs
from bench.results import Goal, Row, ratio

PROGRAM = "zero_shot"


@dataclass(frozen=True)
class MemoryRun:
    """One ``pytest suites -n 2`` run: its process tree's peaks and its records (latency left out)."""

    process: ProcessRun
    records: tuple[tuple[tuple[str, str], ...], ...]

    def summary(self) -> dict[str, Any]:
        run = self.process
        return {
            "peak_rss_mib": round(run.peak_rss_mib, 1),
            "peak_pss_mib": round(run.peak_pss_mib, 1),
            "peak_processes": run.peak_processes,
            "wall_s": round(run.wall_s, 1),
            "examples": len(self.records),
        }


def harness_command(work: Path, *, server: bool, per_diagnosis: int, data_dir: str | None) -> list[str]:
    """``pytest suites -n 2`` on ``zero_shot`` with its own cache and reports, the LM cache off."""
    command = [sys.executable, "-m", "pytest", "suites", "-n", "2", "-q", "-p", "no:randomly", "-p", "no:cacheprovider"]
    command += ["--evals-programs", PROGRAM, "--evals-per-diagnosis", str(per_diagnosis), "--evals-no-cache"]
    command += session_outputs(work)
    command += [f"--evals-data-dir={data_dir}"] if data_dir else []
    command += ["--evals-lm-server"] if server else []
    return command


def run_one(work: Path, *, server: bool, per_diagnosis: int, data_dir: str | None) -> MemoryRun:
    work.mkdir(parents=True, exist_ok=True)
    command = harness_command(work, server=server, per_diagnosis=per_diagnosis, data_dir=data_dir)
    run = run_process(command, work / "pytest.log")
    found = sorted((work / "reports").glob("*/artifacts/predictions.csv"))
    if run.returncode not in (0, 1) or len(found) != 1:  # 1: a gate failed, which is not the point here
        raise failure(f"pytest -n 2{' --evals-lm-server' if server else ''}", run)
    with found[0].open(newline="") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda row: row["id"])
    return MemoryRun(run, tuple(tuple((k, v) for k, v in row.items() if k != "latency_ms") for row in rows))


def measure(work: Path, *, per_diagnosis: int = 1, data_dir: str | None = None) -> dict[str, Any]:
    """Both runs, one after the other; their peaks, wall times and whether their records are equal."""
    without = run_one(work / "in_process", server=False, per_diagnosis=per_diagnosis, data_dir=data_dir)
    with_server = run_one(work / "session_server", server=True, per_diagnosis=per_diagnosis, data_dir=data_dir)
    return {
        "in_process": without.summary(),
        "session_server": with_server.summary(),
        "rss_ratio": round(with_server.process.peak_rss_mib / max(without.process.peak_rss_mib, 1e-9), 3),
        "pss_ratio": round(with_server.process.peak_pss_mib / max(without.process.peak_pss_mib, 1e-9), 3),
        "same_records": without.records == with_server.records,
    }


def rss_row(result: dict[str, Any]) -> Row:
    """The bench row of :func:`measure`'s result: peak RSS with the session server / without it.

    Raises:
        BenchError: The two runs recorded different answers (the server must not change them).
    """
    if not result["same_records"]:
        raise BenchError("pytest -n 2 recorded different answers with --evals-lm-server than without")
    without, served = result["in_process"], result["session_server"]
    values = {
        "in_process_rss_mib": without["peak_rss_mib"],
        "session_server_rss_mib": served["peak_rss_mib"],
        "in_process_wall_s": without["wall_s"],
        "session_server_wall_s": served["wall_s"],
    }
    return Row(
        "peak RSS -n 2 with vs without --evals-lm-server",
        values,
        ratio(served["peak_rss_mib"], without["peak_rss_mib"]),
        Goal("<=", 1.0),
        "process tree of pytest suites -n 2 --evals-programs zero_shot; records equal",
    )


def peak_rss_with_session_server(
    work: Path | None = None, *, per_diagnosis: int = 1, data_dir: str | None = None
) -> tuple[float, float]:
    """Peak RSS (MiB) of the ``pytest suites -n 2`` tree without and with ``--evals-lm-server``.

    Raises:
        BenchError: A run failed, or the two runs recorded different answers.
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="evals-bench-rss-") as temp:
        result = measure(work or Path(temp), per_diagnosis=per_diagnosis, data_dir=data_dir)
    if not result["same_records"]:
        raise BenchError("pytest -n 2 recorded different answers with --evals-lm-server than without")
    return result["in_process"]["peak_rss_mib"], result["session_server"]["peak_rss_mib"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rss", description=__doc__.splitlines()[0])
    parser.add_argument("--per-diagnosis", type=int, default=1)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--work", type=Path, default=None, help="Keep the runs' logs and reports here")
    args = parser.parse_args(argv)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="evals-bench-rss-") as temp:
        try:
            result = measure(args.work or Path(temp), per_diagnosis=args.per_diagnosis, data_dir=args.data_dir)
        except BenchError as exc:
            print(f"ERROR: {exc}", file=sys.stderr)
            return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
