"""The xdist worker's session hooks: its progress (examples, compiles) and, at the end, its compile events."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from evals.harness.resources import Harness
from evals.lifecycle import freeze_for_exit


class Worker:
    """Hooks of an xdist worker; everything else a worker does is the :class:`Harness`'s."""

    def __init__(self, config: pytest.Config, harness: Harness) -> None:
        self.config = config
        self.harness = harness
        slots = harness.worker_input.get("evals_slots_dir") if harness.worker_input else None
        self.progress_dir = Path(slots) if slots else None
        self.worker_id = str(harness.worker_input.get("workerid", "gw")) if harness.worker_input else "gw"
        self._written = 0.0
        harness.on_tick = self.write_progress
        if self.progress_dir is not None:  # the controller prints this worker's compiles from their file
            from evals.harness.compile_sinks import worker_sink

            harness.compile_sink = worker_sink(self.progress_dir, self.worker_id)

    def write_progress(self, force: bool = False) -> None:
        """This worker's examples done and calls in flight, for the controller's progress line (throttled)."""
        evaluations, now = self.harness.evaluations, time.monotonic()
        if self.progress_dir is None or evaluations is None or not (force or now - self._written >= 1.0):
            return
        self._written = now
        evaluations.write_progress(self.progress_dir, self.worker_id)

    def pytest_runtest_logfinish(self, nodeid: str, location: tuple[str, int | None, str]) -> None:
        self.write_progress(force=True)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.harness.stop_evaluations()
        # Read by the controller in pytest_testnodedown (node.workeroutput), as xdist intends.
        self.config.workeroutput["evals"] = {  # type: ignore[attr-defined]
            "compile_events": [event.to_dict() for event in self.harness.compile_events]
        }
        freeze_for_exit(self.config)  # the worker's process ends with its session: no garbage to collect
