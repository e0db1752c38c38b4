"""Evaluations: defaults of the cap, inline vs ahead, order and totals, progress files."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import dspy
import pytest

from evals.data import Example
from evals.harness.evaluations import Concurrency, Evaluations, concurrency_for, read_progress, total_examples
from evals.harness.limiter import UNLIMITED, Limiter
from evals.harness.prefetch import SequentialLookahead
from evals.harness.runner import RetryPolicy
from tests.test_prefetch import FakeItem, eval_item
from tests.test_runner_rate_limits import ScriptedLM

DIAGNOSES = ("allergy", "migraine", "malaria", "dengue", "typhoid")


class Program:
    """Answers the gold label after an LM call of ``seconds``; counts LM calls in flight."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.lock = seconds, threading.Lock()
        self.now = self.peak = 0
        self.lm = ScriptedLM(self.call)

    def __call__(self, *, symptoms: str) -> dspy.Prediction:
        self.lm(prompt=symptoms)
        return dspy.Prediction(diagnosis=symptoms.split()[-1])

    def call(self) -> None:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        time.sleep(self.seconds)
        with self.lock:
            self.now -= 1


class Source:
    retry = RetryPolicy()

    def __init__(self, seconds: float = 0.05) -> None:
        self.programs = {"zero_shot": Program(seconds), "tfidf_logreg": Program(0)}
        self.built: list[str] = []

    def examples_of(self, diagnosis: str) -> list[Example]:
        return [Example(f"{diagnosis}-{i}", f"text {i} {diagnosis}", diagnosis) for i in range(2)]

    def program(self, name: str) -> Any:
        self.built.append(name)
        return self.programs[name]

    def uses_lm(self, name: str) -> bool:
        return name != "tfidf_logreg"


def run_session(concurrency: Concurrency, source: Source, items: list[Any]) -> tuple[list[Any], Evaluations]:
    evaluations = Evaluations(source, concurrency, SequentialLookahead(items), items)
    records = []
    try:
        for item in items:
            records.extend(evaluations.records(item, item.params["evals_program"], item.params["diagnosis"]))
    finally:
        evaluations.close()
    return records, evaluations


@pytest.mark.parametrize(
    ("setting", "backend", "limit"),
    [(None, "litellm", 8), (None, "llamacpp", 0), (None, "mlx", 0), (3, "llamacpp", 3), (16, "litellm", 16)],
)
def test_defaults(setting: int | None, backend: str, limit: int) -> None:
    assert concurrency_for(setting, backend).limit == limit


def test_without_a_cap_each_test_runs_its_own_examples_inline() -> None:
    items = [eval_item("zero_shot", d) for d in DIAGNOSES]
    source = Source()
    records, evaluations = run_session(Concurrency(0), source, items)
    assert evaluations.gate is UNLIMITED and source.programs["zero_shot"].peak == 1
    assert [r.example_id for r in records] == [f"{d}-{i}" for d in DIAGNOSES for i in range(2)]


def test_with_a_cap_tests_run_ahead_up_to_it_and_records_match_inline() -> None:
    items = [eval_item("zero_shot", d) for d in DIAGNOSES] + [eval_item("tfidf_logreg", d) for d in DIAGNOSES]
    inline, _ = run_session(Concurrency(0), Source(), items)
    source = Source()
    started = time.monotonic()
    ahead, evaluations = run_session(Concurrency(4), source, items)
    assert time.monotonic() - started < 10 * 0.05 * 0.8
    assert source.programs["zero_shot"].peak == 4  # two examples per test: four in flight means across tests
    key = [(r.program, r.example_id, r.predicted, r.error, r.attempts) for r in ahead]
    assert key == [(r.program, r.example_id, r.predicted, r.error, r.attempts) for r in inline]
    assert isinstance(evaluations.gate, Limiter) and evaluations.gate.stats().peak_in_flight == 4
    progress = evaluations.progress()
    assert (progress.done, progress.total, progress.in_flight) == (20, 20, 0)


def test_total_counts_eval_tests_only() -> None:
    items = [eval_item("zero_shot", "allergy"), FakeItem("other", {}, ("tmp_path",)), eval_item("p", "dengue")]
    assert total_examples(items, Source()) == 4


def test_progress_files_sum_up_for_the_controller(tmp_path: Path) -> None:
    items = [eval_item("zero_shot", d) for d in DIAGNOSES]
    for worker, done in (("gw0", 2), ("gw1", 4)):
        evaluations = Evaluations(Source(), Concurrency(2), SequentialLookahead(items), items)
        evaluations.counter.add_done(done)
        evaluations.write_progress(tmp_path, worker)
        evaluations.close()
    (tmp_path / "progress-gw2.json").write_text("{half a fi")  # a file being replaced is skipped
    reading = read_progress(tmp_path, 12.0)
    assert reading is not None and (reading.done, reading.total, reading.elapsed_s) == (6, 10, 12.0)
    assert read_progress(tmp_path / "nothing", 1.0) is None
