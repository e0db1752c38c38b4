"""Evaluate the examples of the tests this process will run next, ahead of them, on a few threads.

With the default two examples per diagnosis, concurrency inside one test keeps at most two
calls in flight. So the first eval test of a process plans every eval test the process will
run — ``session.items`` after its own under plain pytest (``-k`` and deselection already
applied), or the xdist worker's queue of test indices (:class:`XdistLookahead`) — and submits
their examples, in run order, to a :class:`Prefetcher`: N threads that take the next example
from one ordered queue and run it (each call admitted by the session's limiter). A test then
takes the futures of its own (program, diagnosis), waits for them in example order, and
asserts on its own records: what each test reports, and in which order, is what a sequential
run reports. A test whose key was not planned (other arguments) is submitted at the front.
While a test waits, the plan is refreshed: xdist hands a worker more tests as it goes, and
tests another worker stole are dropped (their examples not started are cancelled).
"""

from __future__ import annotations

import contextvars
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

R = TypeVar("R")
WAIT_TICK_S = 0.1
"""How often a waiting test refreshes the plan and the progress line."""


@dataclass(frozen=True)
class Key:
    """What one eval test evaluates: a program on one diagnosis's sampled examples."""

    program: str
    diagnosis: str


def item_key(item: Any) -> Key | None:
    """The key an eval test will ask for: a test using ``evals_evaluate``, parametrized by program and diagnosis."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    if "evals_evaluate" not in getattr(item, "fixturenames", ()):
        return None
    if "evals_program" in params and "diagnosis" in params:
        return Key(str(params["evals_program"]), str(params["diagnosis"]))
    return None


class Lookahead(Protocol):
    """The tests this process runs after ``current``, in order (as far as it knows now)."""

    def upcoming(self, current: Any) -> list[Any]: ...


class SequentialLookahead:
    """Plain pytest: every selected test after the current one."""

    def __init__(self, items: Sequence[Any]) -> None:
        self.items = list(items)
        self._index = {id(item): i for i, item in enumerate(self.items)}

    def upcoming(self, current: Any) -> list[Any]:
        return self.items[self._index.get(id(current), -1) + 1 :]


class XdistLookahead:
    """An xdist worker: the next test and the worker's queue of test indices (``WorkerInteractor.torun``).

    The queue grows while the worker runs (the controller sends more indices) and shrinks when
    another worker steals from it; every read takes the queue's own lock.
    """

    def __init__(self, interactor: Any, items: Sequence[Any]) -> None:
        self.interactor, self.items = interactor, items

    def upcoming(self, current: Any) -> list[Any]:
        with self.interactor.torun.lock() as queue:
            indices = [self.interactor.nextitem_index, *queue]
        return [self.items[i] for i in indices if isinstance(i, int) and 0 <= i < len(self.items)]


def find_xdist_interactor(plugins: Iterable[object]) -> Any | None:
    """The worker side of pytest-xdist among the registered plugins, if this process is a worker."""
    return next((p for p in plugins if hasattr(p, "torun") and hasattr(p, "nextitem_index")), None)


@dataclass
class _Batch(Generic[R]):
    key: Key
    futures: list[Future[R]]
    error: BaseException | None = None


class Prefetcher(Generic[R]):
    """Run planned work ahead of the tests on ``threads`` daemon threads, in plan order.

    Args:
        threads: Worker threads (the concurrency N: the limiter decides how many calls run at once).
        prepare: ``prepare(key)`` -> one thunk per example, in example order (called on the
            submitting thread; it may build the program, and what it raises is raised by ``take``).
        on_done: Called after each thunk ends (progress counting).
    """

    def __init__(
        self, threads: int, prepare: Callable[[Key], list[Callable[[], R]]], on_done: Callable[[], None] = lambda: None
    ) -> None:
        self.threads, self.prepare, self.on_done = threads, prepare, on_done
        self._cond = threading.Condition()
        self._queue: deque[tuple[Future[R], Callable[[], R]]] = deque()
        self._batches: dict[Key, deque[_Batch[R]]] = {}
        self._workers: list[threading.Thread] = []
        self._closed = False

    # ----- the test's side (one thread: pytest's) -----

    def plan(self, upcoming: Iterable[Key | None]) -> None:
        """Make the submitted work match the upcoming tests: submit what is missing, in order; drop the rest."""
        keys = [key for key in upcoming if key is not None]
        wanted = Counter(keys)
        with self._cond:
            for key, batches in self._batches.items():
                while len(batches) > wanted[key]:  # stolen by another worker, or never coming
                    self._cancel(batches.pop())
        for key in dict.fromkeys(keys):
            while len(self._batches.get(key, ())) < wanted[key]:
                self._submit(key, urgent=False)

    def take(self, key: Key) -> list[Future[R]]:
        """The futures of ``key``'s next batch (submitted ahead of everything else if it was not planned)."""
        if not self._batches.get(key):
            self._submit(key, urgent=True)
        with self._cond:
            batch = self._batches[key].popleft()
            if batch.error is None:
                self._hurry(batch)
        if batch.error is not None:
            raise batch.error
        return batch.futures

    def results(
        self, futures: Sequence[Future[R]], tick: Callable[[], None] = lambda: None, tick_s: float = WAIT_TICK_S
    ) -> list[R]:
        """Wait for ``futures``, calling ``tick`` every ``tick_s`` seconds; their results in order."""
        pending = set(futures)
        while pending:
            _, pending = wait(pending, timeout=tick_s, return_when=FIRST_COMPLETED)
            tick()
        return [future.result() for future in futures]

    def close(self) -> None:
        """Cancel everything not started; the threads end after their current example."""
        with self._cond:
            self._closed = True
            for batches in self._batches.values():
                for batch in batches:
                    self._cancel(batch)
            self._batches.clear()
            for future, _ in self._queue:
                future.cancel()
            self._queue.clear()
            self._cond.notify_all()

    @property
    def queued(self) -> int:
        with self._cond:
            return len(self._queue)

    # ----- internals -----

    def _submit(self, key: Key, *, urgent: bool) -> None:
        try:
            thunks = self.prepare(key)
        except Exception as exc:  # raised again by take(), in the test that asks for this key
            batch: _Batch[R] = _Batch(key, [], exc)
            with self._cond:
                self._batches.setdefault(key, deque()).append(batch)
            return
        tasks = [(Future[R](), _in_context(thunk)) for thunk in thunks]
        with self._cond:
            if self._closed:
                raise RuntimeError("the prefetcher is closed")
            self._batches.setdefault(key, deque()).append(_Batch(key, [future for future, _ in tasks]))
            if urgent:
                self._queue.extendleft(reversed(tasks))
            else:
                self._queue.extend(tasks)
            self._start_workers()
            self._cond.notify_all()

    def _hurry(self, batch: _Batch[R]) -> None:
        """Move a taken batch's examples not started to the front of the queue (lock held)."""
        mine = {id(future) for future in batch.futures}
        front = [task for task in self._queue if id(task[0]) in mine]
        if front and self._queue[0] is not front[0]:
            rest = [task for task in self._queue if id(task[0]) not in mine]
            self._queue = deque([*front, *rest])

    def _cancel(self, batch: _Batch[R]) -> None:
        """Cancel a batch's examples not started (lock held); started ones finish and are dropped."""
        mine = {id(future) for future in batch.futures}
        self._queue = deque(task for task in self._queue if id(task[0]) not in mine)
        for future in batch.futures:
            future.cancel()

    def _start_workers(self) -> None:
        while len(self._workers) < self.threads:
            thread = threading.Thread(target=self._work, name=f"evals-prefetch-{len(self._workers)}", daemon=True)
            self._workers.append(thread)
            thread.start()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed and not self._queue:
                    return
                future, thunk = self._queue.popleft()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(thunk())
            except BaseException as exc:  # delivered to the test that takes the future
                future.set_exception(exc)
            finally:
                self.on_done()


def _in_context(thunk: Callable[[], R]) -> Callable[[], R]:
    """Run ``thunk`` in a copy of the submitting thread's context (dspy's per-context settings)."""
    context = contextvars.copy_context()
    return lambda: context.run(thunk)
