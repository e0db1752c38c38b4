"""Admit each LM call, not each example, through the session's gate.

An example's program formats its prompt, calls the LM (perhaps several times) and parses the
answer. Holding a call slot for the whole program left slots idle while threads formatted and
parsed: against a server at 0.5 s a call, 16 slots kept only ~14 calls in flight on average.
:class:`Admissions` is a dspy callback scoped to one attempt of one example: each LM call takes
an admission when it starts (``on_lm_start``, after the prompt is built) and gives it back when
it ends (``on_lm_end``), with the outcome the limiter's window needs (answered, rate limited,
failed). Every LM call made in the program's dspy context is gated, whoever built the LM (a
thread the program starts itself, outside dspy's context, is not).

When no slot comes free before the attempt's deadline (a retry that could no longer end within
the example's budget), the call is stopped before it is sent with :class:`SlotTimeout`; when
the gate itself fails, with :class:`GateFailed`. Both are ``BaseException``: dspy logs and
swallows an ``Exception`` raised by a callback, and the call would go out uncapped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from evals.harness.limiter import UNLIMITED, Admission, Gate, Outcome, rate_limit_delay


class SlotTimeout(BaseException):
    """No call slot came free early enough for the attempt to end within the example's budget."""


class GateFailed(BaseException):
    """The gate itself failed (e.g. the session's slot files went away); its ``__cause__`` says how.

    Raised through dspy as a ``BaseException`` so that the call is not sent uncapped; the runner
    raises the cause again.
    """


class Admissions:
    """The admissions of one attempt's LM calls (thread-safe: a program may call its LM from threads).

    Args:
        gate: The session's gate (:class:`~evals.harness.limiter.Limiter`, or ``UNLIMITED``).
        deadline: Clock time after which no call is admitted any more (``None``: wait as long as it takes).
        clock: The clock of ``deadline`` (the runner's).

    Attributes:
        admitted: Calls admitted (sent) so far.
        waited_s: Seconds the attempt's own thread waited for slots: not the program's time, so
            the runner leaves it out of the example's latency and of its slowest attempt.
    """

    def __init__(self, gate: Gate, deadline: float | None = None, clock: Callable[[], float] = time.perf_counter):
        self.gate, self.deadline, self.clock = gate, deadline, clock
        self.waited_s = 0.0
        self.admitted = 0
        self._owner = threading.current_thread()
        self._held: dict[str, tuple[Admission, threading.Thread]] = {}
        self._lock = threading.Lock()

    @contextmanager
    def scope(self) -> Iterator[Admissions]:
        """Within: every LM call of this thread's dspy context is admitted (no callback for an unlimited gate)."""
        if self.gate is UNLIMITED:
            yield self
            return
        import dspy

        try:
            # First in the list: a call waiting for its slot is not yet started for the other callbacks.
            with dspy.context(callbacks=[_callback(self), *dspy.settings.callbacks]):
                yield self
        finally:
            self.release_left_behind()

    def start(self, call_id: str) -> None:
        """Wait for an admission for the call ``call_id``; :class:`SlotTimeout` past the deadline."""
        began = self.clock()
        timeout = None if self.deadline is None else max(0.0, self.deadline - began)
        try:
            admission = self.gate.acquire(timeout)
        except Exception as exc:
            raise GateFailed(str(exc)) from exc
        finally:
            if threading.current_thread() is self._owner:
                self.waited_s += self.clock() - began
        if admission is None:
            raise SlotTimeout(f"no LM call slot came free within {timeout:.1f} s")
        with self._lock:
            self.admitted += 1
            self._held[call_id] = (admission, threading.current_thread())

    def end(self, call_id: str, exception: BaseException | None) -> None:
        """Give the call's admission back with how it ended."""
        with self._lock:
            held = self._held.pop(call_id, None)
        if held is not None:
            held[0].release(outcome(exception))

    def release_left_behind(self) -> None:
        """At the attempt's end: give back (as failed) admissions whose call can no longer report its end.

        Those of this thread and of threads that are gone. A call still running on another thread
        (a ``dspy.Parallel`` straggler the program did not wait for) keeps its slot until its end.
        """
        current = threading.current_thread()
        with self._lock:
            gone = [key for key, (_, thread) in self._held.items() if thread is current or not thread.is_alive()]
            left = [self._held.pop(key)[0] for key in gone]
        for admission in left:
            admission.release(Outcome.FAILED)


def outcome(exception: BaseException | None) -> Outcome:
    """How an LM call ended, for the window: answered, an HTTP 429, or any other failure."""
    if exception is None:
        return Outcome.ANSWERED
    return Outcome.FAILED if rate_limit_delay(exception) is None else Outcome.RATE_LIMITED


def _callback(admissions: Admissions) -> Any:
    """A dspy ``BaseCallback`` forwarding LM starts and ends to ``admissions`` (dspy imported only here)."""
    from dspy.utils.callback import BaseCallback

    class Admit(BaseCallback):
        def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
            admissions.start(call_id)

        def on_lm_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
            admissions.end(call_id, exception)

    return Admit()
