"""Keep library noise out of a session's terminal (and out of the CLI's).

What leaks without this, measured on a real session (mlflow 3.17, SQLAlchemy 2):

- ``SADeprecationWarning: The noload loader strategy is deprecated`` (raised inside
  ``mlflow.store.tracking.sqlalchemy_store``) and other Deprecation/FutureWarnings attributed to
  mlflow, SQLAlchemy or alembic. pytest keeps an ``always::DeprecationWarning`` filter for the
  whole session, so a warning raised outside a test (the controller's gate and upload run after
  the test loop) is printed raw in the middle of the progress dots; the ``filterwarnings`` ini line
  only covers the phases pytest wraps (tests, collection, sessionfinish, terminal summary).
- ``INFO mlflow.store.db.utils: Creating initial MLflow database tables...`` and friends: mlflow
  configures its own ``mlflow`` logger at INFO on import, reading ``MLFLOW_LOGGING_LEVEL``.
- ``Downloading artifacts: 100%|...|`` tqdm bars whenever a champion's records or a model
  version are downloaded; mlflow reads ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR``.

:func:`quiet_libraries` sets both variables (only when the user has not: a user who wants mlflow's
INFO lines back sets ``MLFLOW_LOGGING_LEVEL=INFO``), raises the level of loggers already
configured, and installs the warning filters. Call it from the plugin's ``pytest_configure``
(controller and, through the inherited environment and their own configure, xdist workers) and at
the start of the ``evals`` CLI.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import MutableMapping

ENVIRONMENT = {"MLFLOW_LOGGING_LEVEL": "WARNING", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
"""mlflow's own switches, read when mlflow is imported (logging) and at each download (progress bars)."""
NOISY_MODULES = r"(mlflow|sqlalchemy|alembic)(\..*)?"
"""Modules whose deprecation and future warnings no user of the harness can act on."""
LOGGERS = ("mlflow", "alembic")


def quiet_libraries(environ: MutableMapping[str, str] | None = None) -> None:
    """Silence mlflow's INFO lines and progress bars and the deprecation warnings of its stack.

    Args:
        environ: The environment to set the defaults in (``os.environ`` by default, which xdist
            workers inherit).
    """
    target = os.environ if environ is None else environ
    for name, value in ENVIRONMENT.items():
        target.setdefault(name, value)
    level = logging.getLevelName(target.get("MLFLOW_LOGGING_LEVEL", "WARNING").upper())
    if isinstance(level, int):
        for logger in LOGGERS:
            # mlflow sets its logger's level on import: when it was imported already, set it here too.
            if logger == "alembic" or logger in sys.modules:
                logging.getLogger(logger).setLevel(max(level, logging.getLogger(logger).level))
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category, module=NOISY_MODULES)


def warning_filter_lines() -> list[str]:
    """The same filters as ``filterwarnings`` ini lines, for the phases pytest wraps in its own filters."""
    return [
        f"ignore::{category}:{NOISY_MODULES}"
        for category in ("DeprecationWarning", "PendingDeprecationWarning", "FutureWarning")
    ]
