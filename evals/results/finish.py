"""The one ordered place where a session's end has side effects.

:func:`finish` runs once, on the controller, after :func:`~evals.results.summary.summarize`:

1. save the robustness suite's new counterexamples (``suites/robustness_regressions.json``);
2. write the regression gate's Markdown (``artifacts/regression.md``, and the GitHub job summary);
3. write the bundle from data cleaned of secrets and personal data (the local report);
4. unless ``--evals-no-mlflow``: spool it when the session was interrupted, else publish it
   (upload, then register candidates), promote with ``--evals-promote``, and spool it when
   MLflow is unavailable.

What happened is returned as a :class:`SessionEnd` for the terminal summary.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from evals import secrets
from evals.context import SessionContext
from evals.errors import ConfigError, EvalsWarning
from evals.gates.robustness import REGRESSIONS_FILE, save_counterexamples
from evals.redact import Redactor
from evals.results.bundle import write_bundle, write_markdown
from evals.results.sections import gate_markdown
from evals.results.summary import SessionSummary
from evals.store.client import TrackingUnavailable, mlflow_client, mlflow_errors
from evals.store.publish import clean_records, publish_bundle, scrubber
from evals.store.registry import promote_session
from evals.store.spool import spool_bundle
from evals.store.upload import run_url_hint


@dataclass
class SessionEnd:
    """What the end of a session did: where the bundle went and what the user should read.

    Attributes:
        bundle_dir: The written bundle (the local report).
        saved_counterexamples: New robustness counterexamples saved.
        run_id: The MLflow parent run, when published.
        mlflow_hint: Where to look at the run.
        registered: Registered model name -> version aliased ``candidate``.
        promotions: What ``--evals-promote`` did, one line per program.
        notes: Yellow ``WARNING:`` lines (spooled, MLflow unavailable).
    """

    bundle_dir: Path | None = None
    saved_counterexamples: int = 0
    run_id: str | None = None
    mlflow_hint: str | None = None
    registered: dict[str, str] = field(default_factory=dict)
    promotions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def publishable(summary: SessionSummary, redactor: Redactor | None) -> SessionSummary:
    """A copy of a session summary fit to be written anywhere: records and params cleaned.

    Params lose secrets here (URL credentials masked in place, secret values as a whole); the
    redactor is applied to them at upload, as before.
    """
    return dataclasses.replace(
        summary,
        records=clean_records(summary.records, scrubber(redactor)),
        params=secrets.scrub(dict(summary.params)),
        program_params={name: secrets.scrub(dict(values)) for name, values in summary.program_params.items()},
    )


def finish(context: SessionContext, summary: SessionSummary) -> SessionEnd:
    """Save, write, then log (or spool) the session; the steps in the module docstring, in order."""
    settings = context.settings
    end = SessionEnd()
    if context.stability and not context.policies_problem:
        end.saved_counterexamples = save_counterexamples(settings.rootdir / REGRESSIONS_FILE, context.stability)
    redactor = Redactor.from_config(redact_patterns(context.redact_patterns))
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(context.started_at))
    bundle = settings.path("report-dir") / f"{stamp}-{context.session_id[:8]}"
    _write_gate_summary(bundle / "artifacts", summary)
    # Nothing secret is written: the bundle gets the cleaned summary.
    write_bundle(bundle, context, publishable(summary, redactor), scrubber(redactor), end.saved_counterexamples)
    end.bundle_dir = bundle
    if settings["no-mlflow"]:
        return end
    if settings.values.get("shard"):  # a part of a session: python -m evals merge logs the whole
        end.notes.append(
            f"shard {settings['shard']}: not logged to MLflow; make one session of every shard's bundle with: "
            "python -m evals merge BUNDLE_DIR..."
        )
        return end
    if context.interrupted:
        # Ctrl-C: keep what was gathered without waiting on MLflow; `python -m evals sync` uploads it.
        spooled = _spool(context, bundle, redactor, "session interrupted")
        end.notes.append(
            f"session interrupted: what was gathered is kept in {spooled}; upload it with: python -m evals sync"
        )
        return end
    _publish(context, summary, end, bundle, redactor)
    return end


def redact_patterns(lines: tuple[str, ...]) -> dict[str, str]:
    """Parse the ``NAME=REGEX`` lines of the ini key ``evals_redact_patterns``."""
    patterns = {}
    for line in lines:
        name, sep, regex = line.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"ini key evals_redact_patterns: expected NAME=REGEX, found {line!r}")
        patterns[name.strip()] = regex.strip()
    return patterns


def _write_gate_summary(artifacts: Path, summary: SessionSummary) -> None:
    """The regression gate's result and warnings: artifacts/regression.md, and the GitHub job summary."""
    if summary.regression is None or not summary.regression.programs:
        return
    artifacts.mkdir(parents=True, exist_ok=True)
    write_markdown(artifacts / "regression.md", gate_markdown(summary.regression))


def _spool(context: SessionContext, bundle: Path, redactor: Redactor, reason: str) -> Path:
    return spool_bundle(
        bundle,
        context.settings.path("spool-dir"),
        tracking_uri=context.settings["tracking-uri"],
        reason=reason,
        redactor=redactor,
    )


def _publish(
    context: SessionContext, summary: SessionSummary, end: SessionEnd, bundle: Path, redactor: Redactor
) -> None:
    """Upload and register (as ``python -m evals sync`` does), then promote; spool when MLflow is unavailable."""
    uri = context.settings["tracking-uri"]
    try:
        published = publish_bundle(bundle, uri, redactor)
        end.run_id, end.registered = published.run_id, published.registered
        with mlflow_errors(uri):
            experiment_id = mlflow_client(uri).get_run(end.run_id).info.experiment_id
            end.mlflow_hint = run_url_hint(uri, experiment_id, end.run_id)
            if context.settings["promote"]:
                end.promotions.extend(
                    promote_session(
                        uri, end.run_id, dict(context.policies.promote_requires), summary.params.get("git.commit", "")
                    )
                )
    except TrackingUnavailable as exc:
        spooled = _spool(context, bundle, redactor, str(exc))
        message = f"{exc}; session kept in {spooled}; upload it later with: python -m evals sync"
        end.notes.append(message)
        warnings.warn(EvalsWarning(message), stacklevel=1)
