"""A session's process starts its end early and exits fast (measured in ``python -m evals bench --only http``).

* :func:`warm`: the end of a session writes its tables with pandas and renders the confusion
  PNGs with matplotlib (their first imports and font set-up took ~0.9 s), asks git and the
  installed packages for the session's params (~0.45 s) and hashes the dataset (~0.15 s). While
  the tests wait on an LM reached over HTTP the controller's process is mostly idle, so a daemon
  thread does those then (not with an in-process model, which keeps the cores busy), in a
  process that pytest runs as its program (:func:`owns_process`: pytester restores
  ``sys.modules`` after an in-process run, which would leave modules imported twice).
  Best effort: a failure there is left for the end of the session to meet (and report) itself.
* :func:`freeze_for_exit`: once a session's results are written, a process that pytest runs as
  its own program only has to exit. Python's last garbage collection and module teardown over
  dspy, scikit-learn, pandas and matplotlib took 0.5–0.9 s, and pytest's own collections at
  unconfigure another 0.2 s; ``gc.freeze()`` leaves the objects of the session to be freed by
  reference counting alone. Never done for a session run inside another program (``pytest.main``
  from a notebook, pytester): there the cyclic garbage would be kept for the life of the process.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
import threading
from collections.abc import Callable, Iterable, Sequence

import pytest

FINISH_MODULES = (
    "pandas",
    "pyarrow.parquet",
    "matplotlib",
    "matplotlib.figure",
    "matplotlib.backends.backend_agg",
    "matplotlib.font_manager",
)
"""What the end of a session imports that the tests may not have: the bundle's tables
(:mod:`evals.results.bundle`) and its plots (:mod:`evals.results.plots`)."""

PYTEST_MAIN = frozenset({"pytest", "py.test", "pytest.__main__"})
"""``__main__``'s spec name (``python -m pytest``) or file name (the console script)."""


def warm(*thunks: Callable[[], object]) -> threading.Thread:
    """Run ``thunks`` in order on a daemon thread (started; nobody joins it).

    Each thunk must be idempotent and safe to run alongside its own later call (an import, a
    ``cached_property``): the session's end calls it again, meets any failure itself, and reports it.
    """
    thread = threading.Thread(target=_run_all, args=(thunks,), name="evals-warm", daemon=True)
    thread.start()
    return thread


def imports(modules: Sequence[str] = FINISH_MODULES) -> Callable[[], None]:
    """A thunk importing ``modules`` (and loading matplotlib's font cache when it is among them)."""

    def load() -> None:
        for name in modules:
            importlib.import_module(name)
        if "matplotlib.font_manager" in modules:
            from matplotlib.font_manager import fontManager

            fontManager.findfont("DejaVu Sans")  # reads the font cache the first text needs

    return load


def _run_all(thunks: Iterable[Callable[[], object]]) -> None:
    for thunk in thunks:
        try:
            thunk()
        except BaseException:  # noqa: BLE001, S112 - best effort: the session's end runs it again and reports
            continue


def owns_process(config: pytest.Config) -> bool:
    """Whether this session is the program its process runs: ``pytest`` / ``python -m pytest`` with these arguments.

    An xdist worker counts too: its process ends with its session.
    """
    if hasattr(config, "workerinput"):
        return True
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    names = {getattr(spec, "name", None), os.path.basename(getattr(main, "__file__", None) or "")}
    return bool(names & PYTEST_MAIN) and tuple(config.invocation_params.args) == tuple(sys.argv[1:])


def freeze_for_exit(config: pytest.Config) -> bool:
    """``gc.freeze()`` when the process ends with this session (:func:`owns_process`); whether it did."""
    if not owns_process(config):
        return False
    gc.freeze()
    return True
