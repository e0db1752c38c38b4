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

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from evals import secrets
from evals.errors import ConfigError

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

SQLITE_PREFIX = "sqlite:///"
INIT_TIMEOUT_S = 300.0
"""How long a process waits for another one to finish initialising the store."""

_ready: set[str] = set()
_guard = threading.Lock()
FAST_FAIL_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
}
"""Set around calls to http(s) servers unless the user set them: a dead server fails in seconds."""
_CONNECTION_REASONS = (
    (("connection refused",), "connection refused"),
    (("timed out", "timeout"), "timed out"),
    (("name or service not known", "nodename nor servname", "failed to resolve"), "unknown host"),
    (("connection reset", "aborted", "remote end closed", "broken pipe"), "connection dropped"),
    (("connection broken", "incompleteread", "protocolerror"), "connection dropped"),
    (("too many 5",), "the server keeps answering HTTP 5xx"),
    (("max retries exceeded",), "no answer"),
    (("unable to open database file",), "cannot open the database file"),
)


class TrackingUnavailable(Exception):
    """MLflow could not be reached or refused the upload; the message is one readable line.

    Attributes:
        uri: The tracking URI, without credentials.
        reason: The short reason, e.g. ``"connection refused"``.
        unreachable: True when the server could not be talked to at all (connection level),
            False when it answered with an error.
    """

    def __init__(self, uri: str, reason: str, unreachable: bool = True) -> None:
        self.uri = uri
        self.reason = reason
        self.unreachable = unreachable
        word = "unreachable" if unreachable else "failed"
        super().__init__(f"MLflow at {uri} {word}: {reason}")


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


def display_uri(tracking_uri: str) -> str:
    """Return the tracking URI without any ``user:password@`` part."""
    try:
        parts = urlsplit(tracking_uri)
    except ValueError:  # not a parseable URL: mask whatever looks like credentials
        return secrets.mask_url_credentials(tracking_uri)
    if "@" not in parts.netloc:
        return tracking_uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


@contextmanager
def mlflow_errors(tracking_uri: str) -> Iterator[None]:
    """Make MLflow calls inside fail fast and as :class:`TrackingUnavailable`.

    For http(s) URIs short timeouts and at most one retry are set in the environment (only
    where the user has not set them) and restored afterwards; MLflow's "View run at" lines
    are suppressed.
    """
    overrides = {"MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
    if tracking_uri.startswith(("http://", "https://")):
        overrides.update(FAST_FAIL_ENV)
    saved = {name: os.environ.get(name) for name in overrides}
    for name, value in overrides.items():
        os.environ.setdefault(name, value)
    try:
        yield
    except (ConfigError, TrackingUnavailable):
        raise
    except Exception as exc:  # any failure below MLflow means "tracking unavailable"
        raise unavailable(tracking_uri, exc) from exc
    finally:
        for name, before in saved.items():
            if before is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = before


def unavailable(tracking_uri: str, exc: BaseException) -> TrackingUnavailable:
    """Turn any exception raised while talking to MLflow into one readable line."""
    chain = _causes(exc)
    lowered = " ".join(str(link) for link in chain).lower()
    for needles, reason in _CONNECTION_REASONS:
        if any(needle in lowered for needle in needles):
            return TrackingUnavailable(display_uri(tracking_uri), reason)
    lost = [link for link in chain if isinstance(link, (ConnectionError, TimeoutError))]
    if lost:
        return TrackingUnavailable(display_uri(tracking_uri), type(lost[0]).__name__)
    first_line = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    code = getattr(exc, "error_code", None)
    prefix = f"{code}: " if isinstance(code, str) else f"{type(exc).__name__}: "
    reason = secrets.scrub_text(prefix + first_line)[:200]
    return TrackingUnavailable(display_uri(tracking_uri), reason, unreachable=False)


def _causes(exc: BaseException) -> list[BaseException]:
    """Return ``exc`` and what caused it (MLflow re-raises without ``from``: follow the context)."""
    chain = [exc]
    while len(chain) < 8:
        cause = chain[-1].__cause__ or chain[-1].__context__
        if cause is None or cause in chain:
            break
        chain.append(cause)
    return chain
