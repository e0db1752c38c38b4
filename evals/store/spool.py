"""Keep session bundles that could not be uploaded, and upload them later exactly once.

Layout::

    <spool_dir>/<session_id>/            a pending bundle (a copy of the original)
    <spool_dir>/<session_id>/spool.json  tracking URI (without credentials), reason, time, redaction
    <spool_dir>/<session_id>/reason.txt  why it was spooled, for humans
    <spool_dir>/synced/<session_id>/     bundles uploaded by :func:`sync_spool`
    <spool_dir>/.lock                    held by a sync, so two syncs never race

A bundle is copied into a hidden temp directory and renamed into place, so a pending entry is
always complete. A sync publishes it exactly as the live session would have
(:func:`~evals.store.publish.publish_bundle`: upload, then register the compiled programs as
``candidate`` versions) and moves it to ``synced/`` only after both succeeded; an interrupted
sync leaves it pending and the next sync finds what was done instead of repeating it.

No credential is written to the spool: the tracking URI is recorded without its
``user:password@`` part. A sync to a server that needs them takes them from ``--tracking-uri`` /
``$EVALS_TRACKING_URI``, or from MLflow's own ``MLFLOW_TRACKING_USERNAME`` and
``MLFLOW_TRACKING_PASSWORD`` (or ``MLFLOW_TRACKING_TOKEN``) variables.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evals import secrets
from evals.errors import ConfigError
from evals.redact import Redactor
from evals.store.client import TrackingUnavailable, display_uri
from evals.store.publish import publish_bundle
from evals.store.schema import Bundle

SYNCED = "synced"
SPOOL_FILE = "spool.json"
REASON_FILE = "reason.txt"
LOCK_FILE = ".lock"


@dataclass(frozen=True)
class SyncResult:
    """What happened to one pending bundle during a sync.

    Attributes:
        session_id: The bundle's session id (its directory name).
        bundle: Where the bundle is now (under ``synced/`` when uploaded).
        run_id: The MLflow parent run id, or ``None`` when the bundle stayed pending.
        error: Why it stayed pending, one line, or ``None``.
        registered: Registered model name -> version aliased ``candidate`` by this sync.
    """

    session_id: str
    bundle: Path
    run_id: str | None = None
    error: str | None = None
    registered: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.run_id is not None


def spool_bundle(
    bundle: Path,
    spool_dir: Path,
    *,
    tracking_uri: str | None = None,
    reason: str = "MLflow was unavailable",
    redactor: Redactor | None = None,
) -> Path:
    """Copy a bundle into ``spool_dir/<session_id>`` atomically and return that path.

    Args:
        bundle: A bundle directory (it is left in place).
        spool_dir: The spool; created when missing.
        tracking_uri: Where the bundle should have gone; :func:`sync_spool` uses it by default.
            Recorded without credentials.
        reason: Why it is spooled, e.g. the ``TrackingUnavailable`` message (secrets masked).
        redactor: Recorded so that a later sync redacts exactly as the direct upload would.

    Raises:
        ConfigError: The bundle is not a valid session bundle.
    """
    session = Bundle.load(bundle)
    spool_dir.mkdir(parents=True, exist_ok=True)
    target = spool_dir / session.session_id
    if (target / SPOOL_FILE).is_file():
        return target  # Already spooled: the same session must not become two entries.
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{session.session_id}-", dir=spool_dir))
    try:
        copy = staging / "bundle"
        shutil.copytree(bundle, copy)
        _write_spool_files(copy, tracking_uri, reason, redactor)
        os.replace(copy, target)
    except OSError:
        if (target / SPOOL_FILE).is_file():
            return target  # Another process spooled the same session first.
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def pending(spool_dir: Path) -> list[Path]:
    """Return the pending bundle directories, oldest spooled first."""
    if not spool_dir.is_dir():
        return []
    entries = [
        entry
        for entry in spool_dir.iterdir()
        if entry.is_dir() and entry.name != SYNCED and not entry.name.startswith(".")
    ]
    return sorted(entries, key=lambda entry: (_spooled_at(entry), entry.name))


def sync_spool(
    spool_dir: Path, tracking_uri: str | None = None, *, fallback_uri: str | None = None
) -> list[SyncResult]:
    """Publish every pending bundle; move each one to ``synced/`` once that succeeded.

    A bundle that fails stays pending and the others go on. When a server is unreachable, the
    remaining bundles for the same URI are not tried again in this sync.

    Args:
        spool_dir: The spool directory.
        tracking_uri: Upload everything here; ``None`` uses each bundle's recorded URI.
        fallback_uri: For bundles that recorded no URI (else they stay pending).
    """
    from filelock import FileLock

    if not spool_dir.is_dir():
        return []
    results: list[SyncResult] = []
    down: dict[str, str] = {}
    with FileLock(str(spool_dir / LOCK_FILE)):
        for entry in pending(spool_dir):
            results.append(_sync_one(entry, spool_dir, tracking_uri, fallback_uri, down))
    return results


def _sync_one(
    entry: Path,
    spool_dir: Path,
    tracking_uri: str | None,
    fallback_uri: str | None,
    down: dict[str, str],
) -> SyncResult:
    meta = _read_meta(entry)
    uri = tracking_uri or meta.get("tracking_uri") or fallback_uri
    if not isinstance(uri, str) or not uri:
        return SyncResult(entry.name, entry, error="no tracking URI recorded; pass one")
    if uri in down:
        return SyncResult(entry.name, entry, error=down[uri])
    try:
        published = publish_bundle(entry, uri, _redactor(meta))
    except TrackingUnavailable as exc:
        if exc.unreachable:
            down[uri] = str(exc)
        return SyncResult(entry.name, entry, error=str(exc))
    except ConfigError as exc:
        return SyncResult(entry.name, entry, error=secrets.scrub_text(str(exc)))
    synced = _move_to_synced(entry, spool_dir)
    return SyncResult(entry.name, synced, run_id=published.run_id, registered=published.registered)


def _move_to_synced(entry: Path, spool_dir: Path) -> Path:
    synced = spool_dir / SYNCED
    synced.mkdir(exist_ok=True)
    target = synced / entry.name
    if target.exists():
        # A previous sync uploaded this session but died before the move: replace it.
        shutil.rmtree(target)
    os.replace(entry, target)
    return target


def _write_spool_files(copy: Path, tracking_uri: str | None, reason: str, redactor: Redactor | None) -> None:
    now = time.time()
    meta: dict[str, Any] = {
        "format": 1,
        "tracking_uri": None if tracking_uri is None else display_uri(tracking_uri),
        "reason": secrets.scrub_text(reason),
        "spooled_at": now,
        "redact": None if redactor is None else [list(pair) for pair in redactor.patterns],
    }
    (copy / SPOOL_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
    (copy / REASON_FILE).write_text(f"{stamp}: {meta['reason']}\n", encoding="utf-8")


def _read_meta(entry: Path) -> dict[str, Any]:
    """Return ``spool.json`` of an entry; an unreadable one counts as empty."""
    try:
        meta = json.loads((entry / SPOOL_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _redactor(meta: dict[str, Any]) -> Redactor | None:
    patterns = meta.get("redact")
    if not patterns:
        return None
    return Redactor([(str(name), str(regex)) for name, regex in patterns])


def _spooled_at(entry: Path) -> float:
    value = _read_meta(entry).get("spooled_at")
    return float(value) if isinstance(value, (int, float)) else 0.0
