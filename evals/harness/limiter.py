"""A session-wide cap on LM calls in flight that adapts to rate limits.

Two layers decide whether one more call may start:

* **Slots** — ``N`` permits shared by every process of the session. One process:
  :class:`LocalSlots` (a counter). Under xdist: :class:`FileSlots`, ``N`` lock files in a
  directory the controller made; a permit is a non-blocking exclusive ``flock`` on one of
  them, so a crashed worker's permits die with it and nothing needs cleaning up.
* **Window** — this process's adaptive limit (:class:`Window`, AIMD): halved on an HTTP 429
  (once per round of calls: a call that started before the last decrease does not decrease
  it again), grown by ``1/limit`` per answered call back up to ``N``.

:meth:`Limiter.acquire` blocks until both allow a call (or a deadline passes) and returns a
:class:`Ticket`; the caller releases it with the call's outcome. Waiters are served first in,
first out, and only the first of them polls the slot files, so waiting costs one poll per
process. The clock and the sleep are injectable, so the arithmetic is tested without waiting.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Protocol

POLL_S = 0.005
"""First wait between two tries of the slot files; it doubles while nothing frees, up to MAX_POLL_S."""
MAX_POLL_S = 0.04
SLOT_FILE = "slot-{}.lock"


class Outcome(Enum):
    """How a call ended, as the window sees it."""

    ANSWERED = "answered"
    RATE_LIMITED = "rate_limited"
    FAILED = "failed"  # any other error: the window does not move


class SlotPool(Protocol):
    """``N`` permits; every method is called with the limiter's lock held."""

    size: int

    def try_take(self) -> int | None:
        """Take a free permit without waiting; its number, or ``None`` when all are taken."""

    def give_back(self, slot: int) -> None:
        """Return a permit taken by this process."""


class LocalSlots:
    """The permits of a session that is one process."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._free = list(range(size - 1, -1, -1))

    def try_take(self) -> int | None:
        return self._free.pop() if self._free else None

    def give_back(self, slot: int) -> None:
        self._free.append(slot)


class FileSlots:
    """Permits shared by the processes of one session: a permit is an exclusive lock on one file.

    Args:
        directory: A directory every process of the session sees (the controller makes it).
        size: How many permits (files ``slot-0.lock`` ...).
        start: Where this process starts looking (spreads the processes over the files).
    """

    def __init__(self, directory: Path, size: int, start: int | None = None) -> None:
        self.size = size
        self.directory = directory
        self._start = (os.getpid() if start is None else start) % size
        self._held: set[int] = set()
        self._fds: dict[int, int] = {}

    def _fd(self, slot: int) -> int:
        if slot not in self._fds:
            path = self.directory / SLOT_FILE.format(slot)
            self._fds[slot] = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        return self._fds[slot]

    def try_take(self) -> int | None:
        import fcntl

        for offset in range(self.size):
            slot = (self._start + offset) % self.size
            if slot in self._held:
                continue
            try:
                fcntl.flock(self._fd(slot), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            self._held.add(slot)
            return slot
        return None

    def give_back(self, slot: int) -> None:
        import fcntl

        self._held.discard(slot)
        fcntl.flock(self._fds[slot], fcntl.LOCK_UN)

    def close(self) -> None:
        """Close the files (their locks go with them)."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        self._held.clear()


@dataclass(frozen=True)
class Window:
    """Additive-increase, multiplicative-decrease limit of one process's calls in flight.

    Attributes:
        limit: The current limit; calls allowed in flight is its floor, at least 1.
        ceiling: The configured concurrency N; the limit never grows past it.
        last_decrease: Clock time of the last decrease (calls started before it do not decrease again).
    """

    limit: float
    ceiling: int
    last_decrease: float = -math.inf

    @classmethod
    def full(cls, ceiling: int) -> Window:
        return cls(float(ceiling), ceiling)

    @property
    def allowed(self) -> int:
        return max(1, int(self.limit))

    def answered(self) -> Window:
        """One more answered call: grow by ``1/limit`` (about one per round of calls)."""
        return replace(self, limit=min(float(self.ceiling), self.limit + 1.0 / self.limit))

    def rate_limited(self, call_started: float, now: float) -> Window:
        """A 429: halve, unless the call started before the last decrease (the same round of calls)."""
        if call_started < self.last_decrease:
            return self
        return replace(self, limit=max(1.0, self.limit / 2), last_decrease=now)


@dataclass(frozen=True)
class LimiterStats:
    """What a progress line or a test reads from a limiter."""

    in_flight: int
    peak_in_flight: int
    allowed: int
    rate_limited: int


class Limiter:
    """Admit at most ``min(window, free slots)`` calls at once; thread-safe.

    Args:
        slots: The session's permits (:class:`LocalSlots` or :class:`FileSlots`).
        clock: Monotonic seconds (injectable for tests).
        sleep: Replaces waiting on the limiter's condition (tests pass a fake that advances ``clock``).
    """

    def __init__(
        self,
        slots: SlotPool,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.slots = slots
        self._clock = clock
        self._sleep = sleep
        self._cond = threading.Condition()
        self._window = Window.full(slots.size)
        self._queue: deque[object] = deque()
        self._in_flight = self._peak = self._rate_limited = 0

    @property
    def window(self) -> Window:
        return self._window

    def stats(self) -> LimiterStats:
        with self._cond:
            return LimiterStats(self._in_flight, self._peak, self._window.allowed, self._rate_limited)

    def try_acquire(self) -> Ticket | None:
        """A ticket now if the window and a slot allow it (ignores waiters queued in :meth:`acquire`)."""
        with self._cond:
            return self._take()

    def acquire(self, timeout: float | None = None) -> Ticket | None:
        """Wait (first come, first served) for a ticket; ``None`` if ``timeout`` seconds pass first."""
        deadline = None if timeout is None else self._clock() + timeout
        me = object()
        poll = POLL_S
        with self._cond:
            self._queue.append(me)
            try:
                while True:
                    if self._queue[0] is me:
                        ticket = self._take()
                        if ticket is not None:
                            return ticket
                    now = self._clock()
                    if deadline is not None and now >= deadline:
                        return None
                    # The first waiter polls (other processes free slots silently); the others wait their turn.
                    wait = poll if self._queue[0] is me else MAX_POLL_S
                    self._pause(wait if deadline is None else min(wait, deadline - now))
                    poll = min(poll * 2, MAX_POLL_S)
            finally:
                self._queue.remove(me)
                self._cond.notify_all()

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Hold one slot for a block of sequential LM calls made outside the runner (a compile)."""
        ticket = self.acquire()
        assert ticket is not None  # no deadline
        try:
            yield
        finally:
            ticket.release(Outcome.FAILED)

    def _take(self) -> Ticket | None:
        if self._in_flight >= self._window.allowed:
            return None
        slot = self.slots.try_take()
        if slot is None:
            return None
        self._in_flight += 1
        self._peak = max(self._peak, self._in_flight)
        return Ticket(self, slot, self._clock())

    def _release(self, ticket: Ticket, outcome: Outcome) -> None:
        with self._cond:
            self._in_flight -= 1
            self.slots.give_back(ticket.slot)
            if outcome is Outcome.ANSWERED:
                self._window = self._window.answered()
            elif outcome is Outcome.RATE_LIMITED:
                self._rate_limited += 1
                self._window = self._window.rate_limited(ticket.started, self._clock())
            self._cond.notify_all()

    def _pause(self, seconds: float) -> None:
        """Wait with the lock held by the caller (released while waiting)."""
        if self._sleep is None:
            self._cond.wait(max(seconds, 0.0))
            return
        self._cond.release()
        try:
            self._sleep(max(seconds, 0.0))
        finally:
            self._cond.acquire()


class Ticket:
    """One admitted call; release it exactly once with how the call ended."""

    def __init__(self, limiter: Limiter, slot: int, started: float) -> None:
        self.limiter, self.slot, self.started = limiter, slot, started
        self._released = False

    def release(self, outcome: Outcome) -> None:
        if self._released:
            return
        self._released = True
        self.limiter._release(self, outcome)


class Admission(Protocol):
    """What a gate hands out: released once, with the call's outcome."""

    def release(self, outcome: Outcome) -> None: ...


class Gate(Protocol):
    """Admits LM calls: :class:`Limiter`, or :data:`UNLIMITED` for a sequential run."""

    def acquire(self, timeout: float | None = None) -> Admission | None: ...


class Unlimited:
    """The gate of a sequential run: every call admitted at once, nothing counted."""

    def acquire(self, timeout: float | None = None) -> Admission:
        return _FREE


class _Free:
    def release(self, outcome: Outcome) -> None:
        pass


_FREE = _Free()
UNLIMITED: Gate = Unlimited()


def rate_limit_delay(exc: BaseException, limit: int = 10) -> float | None:
    """Seconds the provider asked to wait when ``exc`` is an HTTP 429 (0.0 when it named none), else ``None``.

    dspy raises ``LMRateLimitError`` with ``retry_after`` from the ``Retry-After`` header; other
    clients say 429 with ``status_code``. The whole cause chain is read.
    """
    link: BaseException | None = exc
    seen: set[int] = set()
    found = False
    while link is not None and id(link) not in seen and len(seen) < limit:
        seen.add(id(link))
        if "RateLimit" in type(link).__name__ or getattr(link, "status_code", None) == 429:
            found = True
            after = getattr(link, "retry_after", None)
            if isinstance(after, (int, float)) and math.isfinite(after) and after > 0:
                return float(after)
        link = link.__cause__ or link.__context__
    return 0.0 if found else None
