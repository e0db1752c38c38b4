"""The xdist worker's only session hook: send this process's compile events to the controller."""

from __future__ import annotations

import pytest

from evals.harness.resources import Harness


class Worker:
    """Hooks of an xdist worker; everything else a worker does is the :class:`Harness`'s."""

    def __init__(self, config: pytest.Config, harness: Harness) -> None:
        self.config = config
        self.harness = harness

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        # Read by the controller in pytest_testnodedown (node.workeroutput), as xdist intends.
        self.config.workeroutput["evals"] = {  # type: ignore[attr-defined]
            "compile_events": [event.to_dict() for event in self.harness.compile_events]
        }
