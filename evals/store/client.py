"""Open MLflow clients; a new sqlite store is initialised by one process at a time.

MLflow creates and migrates a sqlite store's schema (alembic) when a process first opens it,
for the tracking store and again for the model registry store. Two processes doing that at
once on a *new* file race: ``table ... already exists``, ``alembic_version ... 0 found``, or
a store left half-migrated (``table _alembic_tmp_experiments already exists``) that no later
open survives. Matrix shards on a fresh CI runner start exactly like that. So the first open
in a process holds a file lock beside the database (``<db>.lock``) while both stores are built;
MLflow caches them per URI, so later clients in the process are built without the lock.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

SQLITE_PREFIX = "sqlite:///"
INIT_TIMEOUT_S = 300.0
"""How long a process waits for another one to finish initialising the store."""

_ready: set[str] = set()
_guard = threading.Lock()


def sqlite_file(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (``None`` for other stores and in-memory ones)."""
    if not tracking_uri.startswith(SQLITE_PREFIX):
        return None
    database = tracking_uri[len(SQLITE_PREFIX) :].split("?", 1)[0]
    if database in ("", ":memory:"):
        return None
    return Path(database)


def lock_path(database: Path) -> Path:
    """The lock file held while a process initialises ``database``."""
    return database.with_name(database.name + ".lock")


def mlflow_client(tracking_uri: str) -> MlflowClient:
    """Return an ``MlflowClient`` for ``tracking_uri``; initialise a sqlite store under its lock first.

    A missing directory is left to MLflow, which reports it (no lock can be taken there).
    """
    from mlflow.tracking import MlflowClient

    database = sqlite_file(tracking_uri)
    if database is None or tracking_uri in _ready or not database.resolve().parent.is_dir():
        return MlflowClient(tracking_uri)
    from filelock import FileLock

    with _guard, FileLock(str(lock_path(database.resolve())), timeout=INIT_TIMEOUT_S):
        client = MlflowClient(tracking_uri)
        # Build (and so create or migrate) both stores now, while no other process can.
        client.search_experiments(max_results=1)
        client.search_registered_models(max_results=1)
        _ready.add(tracking_uri)
    return client
