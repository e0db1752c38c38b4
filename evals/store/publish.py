"""What leaves a session: cleaned data for the bundle, and the one way a bundle reaches MLflow.

* :func:`scrubber` and :func:`clean_records` remove secrets (:mod:`evals.secrets`) and personal
  data (:mod:`evals.redact`) from texts and records *before* the bundle is written
  (:func:`evals.results.finish.publishable`), so every artifact format (parquet, CSV, JSON,
  Markdown, HTML), the local report and the spool get the same treatment.
* :func:`publish_bundle` uploads a bundle and registers its compiled programs as ``candidate``
  model versions. The live end of a session and ``python -m evals sync`` both call it, so a
  spooled session ends up exactly like a live one; both steps are idempotent, so a re-sync
  (or a sync after a live upload that failed half way) adds nothing twice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evals import secrets
from evals.records import ExampleRecord
from evals.store.client import mlflow_errors
from evals.store.registry import register_candidates
from evals.store.upload import upload_bundle

if TYPE_CHECKING:
    from evals.redact import Redactor


@dataclass(frozen=True)
class Published:
    """Where a bundle went in MLflow.

    Attributes:
        run_id: The session's parent run.
        registered: Registered model name -> version now aliased ``candidate``.
    """

    run_id: str
    registered: dict[str, str]


def scrubber(redactor: Redactor | None) -> Callable[[str], str]:
    """Return a text function that masks secrets, then redacts personal data with ``redactor``."""
    scrub = secrets.text_scrubber()
    if redactor is None:
        return scrub
    return lambda text: redactor.text(scrub(text))


def clean_records(records: Iterable[ExampleRecord], clean: Callable[[str], str]) -> list[ExampleRecord]:
    """Return the records with ``clean`` applied to the patient text, the error line and the LM calls.

    Error lines are cleaned too: an LM or adapter error may echo the prompt or a credential.
    """
    return [
        dataclasses.replace(
            record,
            symptoms=clean(record.symptoms),
            error=record.error and clean(record.error),
            calls=tuple(call.cleaned(clean) for call in record.calls),  # prompts hold the patient text
        )
        for record in records
    ]


def clean_json(value: Any, clean: Callable[[str], str]) -> Any:
    """Return a JSON-like value with ``clean`` applied to every string in it (keys kept)."""
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, dict):
        return {key: clean_json(item, clean) for key, item in value.items()}
    if isinstance(value, list):
        return [clean_json(item, clean) for item in value]
    return value


def publish_bundle(bundle: Path, tracking_uri: str, redactor: Redactor | None = None) -> Published:
    """Upload a session bundle (exactly once) and register its compiled programs as candidates.

    Raises:
        ConfigError: The bundle breaks the contract (nothing was sent).
        TrackingUnavailable: Talking to MLflow failed; one readable line. Whatever was done
            before the failure is found again, not repeated, by the next call.
    """
    run_id = upload_bundle(bundle, tracking_uri, redactor=redactor)
    with mlflow_errors(tracking_uri):
        registered = register_candidates(tracking_uri, run_id)
    return Published(run_id, registered)
