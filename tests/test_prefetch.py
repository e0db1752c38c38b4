"""Unit tests of the prefetcher: plan order, a test's own batch first, order of results, steals, errors."""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from evals.harness.prefetch import (
    Key,
    Prefetcher,
    SequentialLookahead,
    XdistLookahead,
    find_xdist_interactor,
    item_key,
)

A, B, C, D = (Key("zero_shot", d) for d in ("allergy", "migraine", "malaria", "dengue"))


class Script:
    """``prepare`` for tests: ``per_key`` thunks per key, each logging ``(key, i)`` when it runs."""

    def __init__(self, per_key: int = 2, seconds: float = 0.0, fail: set[Key] | None = None) -> None:
        self.per_key, self.seconds, self.fail = per_key, seconds, fail or set()
        self.ran: list[tuple[Key, int]] = []
        self.prepared: list[Key] = []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, key: Key) -> list[Callable[[], tuple[Key, int]]]:
        self.prepared.append(key)
        if key in self.fail:
            raise ValueError(f"cannot build {key.program}")
        return [self._thunk(key, i) for i in range(self.per_key)]

    def _thunk(self, key: Key, i: int) -> Callable[[], tuple[Key, int]]:
        def run() -> tuple[Key, int]:
            self.gate.wait(10)
            time.sleep(self.seconds * (self.per_key - i))  # later examples end first
            self.ran.append((key, i))
            return key, i

        return run


def settle(prefetcher: Prefetcher[Any], queued: int) -> None:
    """Wait until the threads have taken their first examples (``queued`` left in the queue)."""
    deadline = time.monotonic() + 5
    while prefetcher.queued != queued and time.monotonic() < deadline:
        time.sleep(0.005)
    assert prefetcher.queued == queued


def test_results_come_in_example_order_whatever_ends_first() -> None:
    script = Script(per_key=4, seconds=0.05)
    prefetcher: Prefetcher[tuple[Key, int]] = Prefetcher(4, script)
    prefetcher.plan([A])
    results = prefetcher.results(prefetcher.take(A))
    assert results == [(A, 0), (A, 1), (A, 2), (A, 3)]
    assert script.ran[0] == (A, 3)  # the last example ended first
    prefetcher.close()


def test_the_plan_runs_in_run_order_and_a_taken_batch_goes_first() -> None:
    script = Script()
    script.gate.clear()  # hold the one thread until the queue is set
    prefetcher: Prefetcher[tuple[Key, int]] = Prefetcher(1, script)
    prefetcher.plan([A, B, C])
    settle(prefetcher, 5)
    futures_c = prefetcher.take(C)  # the test for C runs first after all (e.g. another argument order)
    script.gate.set()
    prefetcher.results(futures_c)
    prefetcher.results(prefetcher.take(A) + prefetcher.take(B))
    # A's first example had already been taken by the thread; C's go next, then the rest in plan order.
    assert script.ran == [(A, 0), (C, 0), (C, 1), (A, 1), (B, 0), (B, 1)]
    prefetcher.close()


def test_an_unplanned_key_is_submitted_at_the_front() -> None:
    script = Script()
    script.gate.clear()
    prefetcher: Prefetcher[tuple[Key, int]] = Prefetcher(1, script)
    prefetcher.plan([A, B])
    settle(prefetcher, 3)
    futures = prefetcher.take(D)
    script.gate.set()
    assert prefetcher.results(futures) == [(D, 0), (D, 1)]
    assert script.ran[1:3] == [(D, 0), (D, 1)]
    prefetcher.close()


def test_planning_again_adds_new_tests_and_drops_stolen_ones() -> None:
    script = Script()
    script.gate.clear()
    prefetcher: Prefetcher[tuple[Key, int]] = Prefetcher(1, script)
    prefetcher.plan([A, B, C])
    prefetcher.plan([A, C, D])  # B was stolen by another worker; D arrived
    assert script.prepared == [A, B, C, D]
    script.gate.set()
    prefetcher.results(prefetcher.take(A) + prefetcher.take(C) + prefetcher.take(D))
    assert B not in {key for key, _ in script.ran}
    prefetcher.close()


def test_a_key_planned_twice_is_evaluated_twice() -> None:
    script = Script(per_key=1)
    prefetcher: Prefetcher[tuple[Key, int]] = Prefetcher(2, script)
    prefetcher.plan([A, B, A])
    assert script.prepared == [A, A, B]
    assert prefetcher.results(prefetcher.take(A)) == [(A, 0)]
    prefetcher.plan([B, A])  # the first A was taken: one left to run
    assert script.prepared == [A, A, B]
    prefetcher.close()


def test_a_build_error_is_raised_by_the_test_that_asks_for_its_key() -> None:
    script = Script(fail={B})
    prefetcher: Prefetcher[tuple[Key, int]] = Prefetcher(2, script)
    prefetcher.plan([A, B, C])  # planning never raises
    assert prefetcher.results(prefetcher.take(A)) == [(A, 0), (A, 1)]
    with pytest.raises(ValueError, match="cannot build zero_shot"):
        prefetcher.take(B)
    assert prefetcher.results(prefetcher.take(C)) == [(C, 0), (C, 1)]
    prefetcher.close()


def test_an_error_inside_an_example_is_raised_by_results() -> None:
    def prepare(key: Key) -> list[Callable[[], int]]:
        return [lambda: 1, lambda: 1 // 0]

    prefetcher: Prefetcher[int] = Prefetcher(2, prepare)
    with pytest.raises(ZeroDivisionError):
        prefetcher.results(prefetcher.take(A))
    prefetcher.close()


def test_close_cancels_what_has_not_started() -> None:
    script = Script()
    script.gate.clear()
    prefetcher: Prefetcher[tuple[Key, int]] = Prefetcher(1, script)
    prefetcher.plan([A, B, C])
    settle(prefetcher, 5)
    prefetcher.close()
    script.gate.set()
    time.sleep(0.1)
    assert script.ran == [(A, 0)]  # the one running finishes; nothing else starts


def test_examples_run_concurrently_and_the_waiting_test_ticks() -> None:
    script = Script(per_key=2, seconds=0.1)  # 0.2 s and 0.1 s
    prefetcher: Prefetcher[tuple[Key, int]] = Prefetcher(8, script)
    ticks: list[float] = []
    started = time.monotonic()
    prefetcher.plan([A, B, C, D])
    for key in (A, B, C, D):
        prefetcher.results(prefetcher.take(key), tick=lambda: ticks.append(time.monotonic()), tick_s=0.02)
    assert time.monotonic() - started < 0.6  # 8 examples of up to 0.2 s, sequentially 1.2 s
    assert len(ticks) >= 3
    prefetcher.close()


def test_examples_run_in_the_submitting_threads_context() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    var.set("the test's context")
    prefetcher: Prefetcher[str] = Prefetcher(2, lambda key: [var.get])
    assert prefetcher.results(prefetcher.take(A)) == ["the test's context"]
    prefetcher.close()


def test_on_done_counts_each_example() -> None:
    done: list[int] = []
    prefetcher: Prefetcher[tuple[Key, int]] = Prefetcher(3, Script(per_key=3), on_done=lambda: done.append(1))
    prefetcher.plan([A, B])
    prefetcher.results(prefetcher.take(A) + prefetcher.take(B))
    assert len(done) == 6
    prefetcher.close()


# --- which tests come next ----------------------------------------------------------------------


@dataclass
class FakeCallSpec:
    params: dict[str, Any]


@dataclass
class FakeItem:
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    fixturenames: tuple[str, ...] = ("evals_program", "diagnosis", "evals_evaluate")

    @property
    def callspec(self) -> FakeCallSpec:
        return FakeCallSpec(self.params)


def eval_item(program: str, diagnosis: str) -> FakeItem:
    return FakeItem(f"{program}-{diagnosis}", {"evals_program": program, "diagnosis": diagnosis})


def test_item_key_reads_eval_tests_only() -> None:
    assert item_key(eval_item("zero_shot", "allergy")) == A
    robustness = FakeItem(
        "r", {"evals_program": "zero_shot", "diagnosis": "allergy"}, ("evals_program", "diagnosis", "evals_stability")
    )
    assert item_key(robustness) is None
    assert item_key(FakeItem("plain", {}, ("tmp_path",))) is None
    assert item_key(object()) is None


def test_sequential_lookahead_is_every_item_after_the_current_one() -> None:
    items = [eval_item("zero_shot", d) for d in ("allergy", "migraine", "malaria")]
    lookahead = SequentialLookahead(items)
    assert lookahead.upcoming(items[0]) == items[1:]
    assert lookahead.upcoming(items[2]) == []
    assert lookahead.upcoming(FakeItem("unknown")) == items


def test_xdist_lookahead_reads_the_workers_queue() -> None:
    import execnet
    from xdist.remote import Marker, TestQueue

    class Interactor:
        def __init__(self) -> None:
            self.torun = TestQueue(execnet.gateway_base.get_execmodel("thread"))
            self.nextitem_index: Any = None

    items = [eval_item("zero_shot", str(i)) for i in range(6)]
    interactor = Interactor()
    lookahead = XdistLookahead(interactor, items)
    interactor.nextitem_index = 1
    for index in (3, 4):
        interactor.torun.put(index)
    assert lookahead.upcoming(items[0]) == [items[1], items[3], items[4]]
    interactor.torun.put(5)  # the controller sends more
    interactor.torun.put(Marker.SHUTDOWN)
    assert lookahead.upcoming(items[0]) == [items[1], items[3], items[4], items[5]]
    with interactor.torun.lock() as queue:  # another worker steals 4
        interactor.torun.replace(i for i in queue if i != 4)
    assert lookahead.upcoming(items[0]) == [items[1], items[3], items[5]]
    assert find_xdist_interactor([object(), interactor]) is interactor
    assert find_xdist_interactor([object()]) is None
