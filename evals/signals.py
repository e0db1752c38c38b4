"""SIGTERM, what a CI runner sends on cancel or time-out, handled like Ctrl-C on the controller.

While the tests run, the first SIGTERM raises :class:`KeyboardInterrupt` in the main thread, so
pytest stops the way it does for Ctrl-C and the session spools what was gathered, marked
interrupted. Later SIGTERMs are ignored so that writing the bundle is not cut short (a runner
that really wants the process gone follows with SIGKILL). Once the run loop is over, SIGTERM
no longer interrupts anything: the results are complete and are being written and logged.
"""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass
from types import FrameType
from typing import Any

SIGTERM_MESSAGE = "SIGTERM received: stopping like Ctrl-C"


@dataclass
class SigtermTrap:
    """An installed SIGTERM handler and the one it replaced.

    Attributes:
        previous: The handler before :func:`trap_sigterm`, restored by :meth:`release`.
        armed: While True the first SIGTERM raises ``KeyboardInterrupt``; afterwards it is ignored.
        received: How many SIGTERMs arrived.
    """

    previous: Any
    armed: bool = True
    received: int = 0

    def handle(self, signum: int, frame: FrameType | None) -> None:
        self.received += 1
        if self.armed:
            self.armed = False
            raise KeyboardInterrupt(SIGTERM_MESSAGE)

    def disarm(self) -> None:
        """From now on a SIGTERM is noted and ignored (the session is writing its results)."""
        self.armed = False

    def release(self) -> None:
        """Put the previous handler back (only if ours is still the installed one)."""
        if signal.getsignal(signal.SIGTERM) == self.handle:
            signal.signal(signal.SIGTERM, self.previous if self.previous is not None else signal.SIG_DFL)


def trap_sigterm() -> SigtermTrap | None:
    """Install the handler; ``None`` where signals cannot be handled (not the main thread, no SIGTERM)."""
    if not hasattr(signal, "SIGTERM") or threading.current_thread() is not threading.main_thread():
        return None
    trap = SigtermTrap(previous=signal.getsignal(signal.SIGTERM))
    signal.signal(signal.SIGTERM, trap.handle)
    return trap
