"""The limiter, the runner and the prefetcher together against the fake OpenAI-compatible server.

Real HTTP calls through dspy's own client: the server's peak of calls in flight proves the cap
(one process and several), 429s from a provider's concurrency cap are retried and counted, and
the records equal a sequential run's, in order.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import dspy

from evals.data import Example
from evals.harness.limiter import UNLIMITED, FileSlots, Gate, Limiter, LocalSlots
from evals.harness.prefetch import Key, Prefetcher
from evals.harness.runner import RetryPolicy, run_one
from evals.records import ExampleRecord
from tests.fake_openai import FakeOpenAI

DATA = Path(os.environ.get("EVALS_DATA_DIR", "/work/shared/data/symptom_to_diagnosis"))


def examples(count: int) -> list[Example]:
    lines = (DATA / "test.jsonl").read_text().splitlines()[:count]
    rows = [json.loads(line) for line in lines]
    return [Example(f"test-{i:04d}", row["input_text"], row["output_text"]) for i, row in enumerate(rows)]


def by_key(chosen: list[Example]) -> dict[Key, list[Example]]:
    """Two examples per test, as with the default sample: concurrency must come from across tests."""
    keys: dict[Key, list[Example]] = {}
    for i in range(0, len(chosen), 2):
        keys[Key("zero_shot", f"case-{i // 2}")] = chosen[i : i + 2]
    return keys


def lm(server: FakeOpenAI) -> dspy.LM:
    return dspy.LM("openai/fake", api_base=server.base_url, api_key="x", num_retries=0, cache=False)


RETRY = RetryPolicy(budget_s=60, call_timeout_s=10)


def evaluate(
    server: FakeOpenAI, tests: dict[Key, list[Example]], gate: Gate, threads: int, retry: RetryPolicy = RETRY
) -> list[ExampleRecord]:
    """What the harness does: plan every test, then each test takes and waits for its own records."""
    from programs.signatures import Diagnose

    program = dspy.Predict(Diagnose)

    def prepare(key: Key) -> list[Callable[[], ExampleRecord]]:
        return [partial(run_one, program, key.program, example, retry=retry, gate=gate) for example in tests[key]]

    records: list[ExampleRecord] = []
    with dspy.context(lm=lm(server), adapter=dspy.JSONAdapter()):
        prefetcher: Prefetcher[ExampleRecord] = Prefetcher(threads, prepare)
        try:
            prefetcher.plan(tests)
            for key in tests:
                records.extend(prefetcher.results(prefetcher.take(key)))
        finally:
            prefetcher.close()
    return records


def essentials(records: list[ExampleRecord]) -> list[tuple[object, ...]]:
    return [(r.program, r.example_id, r.gold, r.predicted, r.error, r.attempts, r.rate_limited) for r in records]


def test_n_calls_in_flight_across_tests_and_records_as_sequential() -> None:
    tests = by_key(examples(24))
    with FakeOpenAI(latency=0.15) as server:
        started = time.monotonic()
        concurrent = evaluate(server, tests, Limiter(LocalSlots(4)), threads=4)
        elapsed = time.monotonic() - started
        peak = server.stats.peak_in_flight
        server.reset_stats()
        sequential = evaluate(server, tests, UNLIMITED, threads=1)
        assert server.stats.peak_in_flight == 1
    assert peak == 4
    assert elapsed < 24 * 0.15 / 4 * 2, f"24 calls of 0.15 s with 4 in flight took {elapsed:.1f} s"
    assert essentials(concurrent) == essentials(sequential)
    assert [r.example_id for r in concurrent] == [e.id for e in examples(24)]
    assert all(r.predicted and r.error is None for r in concurrent)  # answered, parsed, valid


def test_429s_from_a_providers_cap_are_retried_counted_and_lower_the_window() -> None:
    tests = by_key(examples(30))
    gate = Limiter(LocalSlots(8))
    with FakeOpenAI(latency=0.2, max_concurrency=3, retry_after=0.2) as server:
        records = evaluate(server, tests, gate, threads=8)
        statuses = dict(server.stats.statuses)
    assert all(r.error is None for r in records), [r.error for r in records if r.error]
    assert sum(r.rate_limited for r in records) == statuses[429] > 0
    assert statuses[200] == 30
    assert gate.stats().rate_limited == statuses[429]
    assert gate.window.limit < 8


def _worker(base_url: str, slots: str, size: int, first: int, count: int, out: str) -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "true")

    class Remote:
        base_url = ""

    server = Remote()
    server.base_url = base_url
    tests = by_key(examples(first + count)[first:])
    records = evaluate(server, tests, Limiter(FileSlots(Path(slots), size)), threads=size)  # type: ignore[arg-type]
    Path(out).write_text(json.dumps([r.to_dict() for r in records]))


def test_several_processes_share_one_cap(tmp_path: Path) -> None:
    """Two processes (like two xdist workers), 4 threads each, 3 session slots: the server never sees more than 3."""
    slots = tmp_path / "slots"
    slots.mkdir()
    context = multiprocessing.get_context("spawn")
    with FakeOpenAI(latency=0.2) as server:
        processes = [
            context.Process(
                target=_worker, args=(server.base_url, str(slots), 3, first, 16, str(tmp_path / f"out-{first}.json"))
            )
            for first in (0, 16)
        ]
        for process in processes:
            process.start()
        for process in processes:
            process.join(120)
            assert process.exitcode == 0
        peak, statuses = server.stats.peak_in_flight, dict(server.stats.statuses)
    assert statuses == {200: 32}
    assert peak == 3
    records = [r for first in (0, 16) for r in json.loads((tmp_path / f"out-{first}.json").read_text())]
    assert [r["example_id"] for r in records] == [e.id for e in examples(32)]
