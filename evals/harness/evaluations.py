"""The harness's side of concurrent evaluation: one object per process, asked by each eval test for its records.

:func:`concurrency_for` turns ``--evals-concurrency`` (or its default: 8 for HTTP LMs, none for
in-process engines, which run one call at a time in each process) into a :class:`Concurrency`.
:class:`Evaluations` owns the process's :class:`~evals.harness.limiter.Limiter` (session-wide slots under
xdist), its :class:`~evals.harness.prefetch.Prefetcher` and the progress readings. A test calls
:meth:`Evaluations.records` with its own pytest item; the first call plans every eval test this
process will run, and each wait refreshes that plan and the progress line.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from evals.harness.limiter import UNLIMITED, FileSlots, Gate, Limiter, LocalSlots
from evals.harness.prefetch import Key, Lookahead, Prefetcher, item_key
from evals.harness.progress import Counter, Progress
from evals.harness.runner import RetryPolicy, run_one
from evals.records import ExampleRecord

HTTP_DEFAULT = 8
"""Default calls in flight for an LM reached over HTTP (litellm / dspy's native clients)."""
PROGRESS_FILE = "progress-{}.json"


@dataclass(frozen=True)
class Concurrency:
    """How many LM calls may be in flight, and where.

    Attributes:
        limit: Calls in flight for the whole session (0: no session cap; each process runs one at a time).
        slots_dir: The directory of the session's slot files when several processes share the cap.
    """

    limit: int
    slots_dir: Path | None = None

    @property
    def concurrent(self) -> bool:
        return self.limit > 0


def concurrency_for(setting: int | None, backend: str, slots_dir: Path | None = None) -> Concurrency:
    """``--evals-concurrency`` as given, else 8 for an HTTP backend and no session cap for an in-process one."""
    if setting is None:
        setting = HTTP_DEFAULT if backend == "litellm" else 0
    return Concurrency(setting, slots_dir if setting else None)


def prefetch_threads(limit: int) -> int:
    """Threads that evaluate examples ahead for a cap of ``limit`` calls: more than ``limit``.

    A slot is held only while a call is in flight (:mod:`evals.harness.admission`); the extra
    threads format the next prompts and parse the last answers meanwhile, so the slots stay full.
    """
    return limit + max(2, limit // 2)


def make_gate(concurrency: Concurrency) -> Gate:
    """The process's gate: shared slot files under xdist, a local counter alone, none without a cap."""
    if not concurrency.concurrent:
        return UNLIMITED
    if concurrency.slots_dir is not None:
        return Limiter(FileSlots(concurrency.slots_dir, concurrency.limit))
    return Limiter(LocalSlots(concurrency.limit))


class Source(Protocol):
    """What :class:`Evaluations` needs from the harness."""

    @property
    def retry(self) -> RetryPolicy: ...

    def examples_of(self, diagnosis: str) -> list[Any]: ...

    def program(self, name: str) -> Any: ...

    def uses_lm(self, name: str) -> bool: ...


class Evaluations:
    """Per process: hands each eval test its records, evaluated ahead on ``limit`` threads.

    Args:
        source: The harness (examples, programs, retry policy).
        concurrency: The session's cap; without one, every test evaluates its own examples inline.
        lookahead: The tests this process runs next (plain pytest or the xdist worker's queue).
        items: Every selected test of the session (the total for progress).
        on_tick: Called while a test waits (the progress display).
    """

    def __init__(
        self,
        source: Source,
        concurrency: Concurrency,
        lookahead: Lookahead,
        items: Sequence[Any],
        on_tick: Callable[[], None] = lambda: None,
    ) -> None:
        self.source, self.concurrency, self.lookahead, self.on_tick = source, concurrency, lookahead, on_tick
        self.gate = make_gate(concurrency)
        self.counter = Counter(total_examples(items, source))
        self.started = time.monotonic()
        self._prefetcher: Prefetcher[ExampleRecord] | None = None
        if concurrency.concurrent:
            self._prefetcher = Prefetcher(prefetch_threads(concurrency.limit), self._prepare, self.counter.add_done)

    def records(self, item: Any, program: str, diagnosis: str) -> list[ExampleRecord]:
        """The records of ``program`` on ``diagnosis``'s examples, in example order."""
        if self._prefetcher is None:
            records = [thunk() for thunk in self._prepare(Key(program, diagnosis))]
            self.counter.add_done(len(records))
            return records
        prefetcher = self._prefetcher

        def tick() -> None:
            prefetcher.plan(item_key(next_item) for next_item in self.lookahead.upcoming(item))
            self.on_tick()

        futures = prefetcher.take(Key(program, diagnosis))  # first in line, before the planning below
        tick()
        return prefetcher.results(futures, tick=tick)

    def progress(self, elapsed_s: float | None = None) -> Progress:
        """Examples done of the total, calls in flight and 429s; ``elapsed_s`` from the caller's clock if given."""
        stats = self.gate.stats() if isinstance(self.gate, Limiter) else None
        return Progress(
            self.counter.done,
            self.counter.total,
            stats.in_flight if stats else 0,
            time.monotonic() - self.started if elapsed_s is None else elapsed_s,
            stats.rate_limited if stats else 0,
        )

    def write_progress(self, directory: Path, worker: str) -> None:
        """Write this worker's reading for the controller (atomically: a temp file, then a rename)."""
        reading = self.progress()
        path = directory / PROGRESS_FILE.format(worker)
        temp = path.with_suffix(f".{os.getpid()}.tmp")
        temp.write_text(
            json.dumps(
                {
                    "done": reading.done,
                    "total": reading.total,
                    "in_flight": reading.in_flight,
                    "rate_limited": reading.rate_limited,
                }
            )
        )
        os.replace(temp, path)

    def close(self) -> None:
        if self._prefetcher is not None:
            self._prefetcher.close()
        if isinstance(self.gate, Limiter) and isinstance(self.gate.slots, FileSlots):
            self.gate.slots.close()

    def _prepare(self, key: Key) -> list[Callable[[], ExampleRecord]]:
        module = self.source.program(key.program)
        gate = self.gate if self.source.uses_lm(key.program) else UNLIMITED
        return [
            partial(run_one, module, key.program, example, retry=self.source.retry, gate=gate)
            for example in self.source.examples_of(key.diagnosis)
        ]


def total_examples(items: Iterable[Any], source: Source) -> int:
    """Examples the selected eval tests evaluate, all processes together."""
    counts: dict[str, int] = {}
    total = 0
    for item in items:
        key = item_key(item)
        if key is not None:
            if key.diagnosis not in counts:
                counts[key.diagnosis] = len(source.examples_of(key.diagnosis))
            total += counts[key.diagnosis]
    return total


def read_progress(directory: Path, elapsed_s: float) -> Progress | None:
    """The controller's reading: the workers' files summed (the total is the same in each)."""
    readings = []
    for path in sorted(directory.glob(PROGRESS_FILE.format("*"))):
        try:
            readings.append(json.loads(path.read_text()))
        except (OSError, ValueError):  # a file being replaced: the next reading has it
            continue
    if not readings:
        return None
    return Progress(
        sum(r["done"] for r in readings),
        max(r["total"] for r in readings),
        sum(r["in_flight"] for r in readings),
        elapsed_s,
        sum(r["rate_limited"] for r in readings),
    )
