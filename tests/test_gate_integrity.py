"""The regression gate never passes silently, and knows its power (pytester projects, real MLflow).

A champion lookup that fails is ``unavailable``: a red line that fails the session in CI (or
when promoting) and a warning elsewhere; either way the bundle records it, ``sync`` keeps it
and promotion refuses it. "No champion yet" is its own line; a local store in CI is warned
about; a comparison too weak for ``regression.max_detectable_drop`` cannot be promoted.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals.gates.champion import ProgramGate, RegressionOutcome
from evals.results.sections import gate_markdown, regression_section
from tests.mlflow_server import free_port
from tests.test_champion import cli
from tests.test_plugin import bundles, parent_runs, run


@pytest.mark.parametrize(
    ("statuses", "overall"),
    [
        (("pass", "unavailable", "fail"), "fail"),
        (("pass", "unavailable", "no champion"), "unavailable"),
        (("pass", "no champion"), "pass"),
        (("no champion", "skipped"), "none"),
        ((), "none"),
    ],
)
def test_the_overall_status_never_lets_unavailable_read_as_pass(statuses: tuple[str, ...], overall: str) -> None:
    outcome = RegressionOutcome(programs={f"p{i}": ProgramGate(s, f"why {s}") for i, s in enumerate(statuses)})  # type: ignore[arg-type]
    assert outcome.status == overall
    assert outcome.tags()["evals.regression"] == overall


def test_unavailable_is_tagged_with_reason_and_policy_and_shown_where_people_look() -> None:
    outcome = RegressionOutcome(
        programs={
            "knn": ProgramGate("unavailable", "MLflow at http://x unreachable: no answer"),
            "zero_shot": ProgramGate("no champion", "No champion yet for zero_shot"),
        },
        on_unavailable="warn",
        warnings=["the tracking store is a local file"],
    )
    assert outcome.tags() == {
        "evals.regression": "unavailable",
        "evals.regression.reason": "MLflow at http://x unreachable: no answer",
        "evals.regression.on_unavailable": "warn",
    }
    markdown = gate_markdown(outcome)
    assert markdown.startswith("### Regression gate: unavailable")
    assert "> [!WARNING]\n> the tracking store is a local file" in markdown
    assert "- **knn**: unavailable: MLflow at http://x unreachable: no answer" in markdown
    section = regression_section(outcome)
    assert section is not None and "detectable drop" in section.headers
    assert [row[7] for row in section.rows] == ["unavailable", "no champion"]
    assert "Gate: unavailable." in section.note and "knn: MLflow at http://x unreachable" in section.note


def session_json(project: pytest.Pytester) -> dict:
    return json.loads(bundles(project)[-1].read_text())


def verdict_json(project: pytest.Pytester) -> dict:
    return json.loads((bundles(project)[-1].parent / "artifacts" / "verdict.json").read_text())


def sync_and_promote(project: pytest.Pytester) -> tuple[dict, str]:
    """Upload the spooled session to the project's sqlite store, then try to promote it."""
    synced = cli(project, "sync", "--spool", ".evals/spool")
    assert synced.returncode == 0, synced.stdout + synced.stderr
    parents, _ = parent_runs(project)
    assert len(parents) == 1
    promoted = cli(project, "promote", parents[0]["id"])
    assert promoted.returncode == 1, promoted.stdout + promoted.stderr
    return parents[0], promoted.stdout


def test_unreachable_champion_in_ci_fails_the_session_and_stays_failed_after_sync(
    eval_project: pytest.Pytester,
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"

    result = run(eval_project, "--evals-trigger ci", f"--evals-tracking-uri {dead}")

    assert result.ret == 1, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            f"ERROR: regression gate could not run: MLflow at {dead} unreachable: *"
            "(zero_shot; regression.on_unavailable: fail)"
        ]
    )
    tags = session_json(eval_project)["tags"]
    assert (tags["evals.regression"], tags["evals.verdict"]) == ("unavailable", "fail")
    assert "unreachable" in tags["evals.regression.reason"]
    gate = verdict_json(eval_project)["regression"]
    assert gate["status"] == "unavailable" and gate["programs"]["zero_shot"]["status"] == "unavailable"

    parent, promoted = sync_and_promote(eval_project)
    assert (parent["tags"]["evals.verdict"], parent["tags"]["evals.regression"]) == ("fail", "unavailable")
    assert "promotion refused" in promoted and "the regression gate could not run" in promoted


def test_unreachable_champion_locally_warns_but_the_session_cannot_be_promoted(
    eval_project: pytest.Pytester,
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"

    result = run(eval_project, "--evals-trigger local", f"--evals-tracking-uri {dead}")

    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "WARNING: regression gate could not run: MLflow at * unreachable: *"
            "(zero_shot; regression.on_unavailable: warn); the session cannot be promoted"
        ]
    )
    assert "ERROR: regression gate" not in result.stdout.str()
    tags = session_json(eval_project)["tags"]
    assert (tags["evals.regression"], tags["evals.verdict"]) == ("unavailable", "pass")

    parent, promoted = sync_and_promote(eval_project)
    assert (parent["tags"]["evals.verdict"], parent["tags"]["evals.regression"]) == ("pass", "unavailable")
    assert "promotion refused" in promoted and "the regression gate could not run (MLflow at" in promoted


def test_a_store_that_is_no_database_makes_the_gate_unavailable(eval_project: pytest.Pytester) -> None:
    (eval_project.path / "broken.db").write_text("this is not a database\n" * 200)

    result = run(eval_project, "--evals-promote", "--evals-tracking-uri sqlite:///broken.db")

    assert result.ret == 1, result.stdout.str()  # --evals-promote: on_unavailable defaults to fail
    result.stdout.fnmatch_lines(["ERROR: regression gate could not run: MLflow at sqlite:///broken.db failed: *"])
    assert session_json(eval_project)["tags"]["evals.regression"] == "unavailable"


def test_no_champion_is_its_own_line_and_a_local_store_in_ci_is_warned_about(
    eval_project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    summary = tmp_path / "step_summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))

    result = run(eval_project, "--evals-trigger ci")

    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "No champion yet for zero_shot (registered as symptom-diagnosis.zero_shot): nothing to compare; "
            "promote a session to create one",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "WARNING: the tracking store sqlite:///* is a local file: on an ephemeral CI runner "
            "it cannot keep a champion between runs*persistent `mlflow server`"
        ]
    )
    job_summary = summary.read_text()
    assert "### Regression gate: none" in job_summary
    assert "> [!WARNING]" in job_summary and "cannot keep a champion between runs" in job_summary
    assert "EVALS_TRACKING_URI" in job_summary
    tags = session_json(eval_project)["tags"]
    assert (tags["evals.regression"], tags["evals.verdict"]) == ("none", "pass")
    assert tags["evals.regression.reason"].startswith("No champion yet for zero_shot")

    local = run(eval_project, "--evals-trigger local")
    assert "ephemeral CI runner" not in local.stdout.str()


def test_a_comparison_too_weak_for_max_detectable_drop_is_not_promoted(eval_project: pytest.Pytester) -> None:
    thresholds = eval_project.path / "thresholds.yaml"
    thresholds.write_text(thresholds.read_text() + "regression:\n  max_detectable_drop: 0.10\n")
    assert run(eval_project, "--evals-per-diagnosis 1 --evals-promote").ret == 0  # no champion yet: promoted

    result = run(eval_project, "--evals-per-diagnosis 1 --evals-promote")

    assert result.ret == 0, result.stdout.str()  # too weak is no regression
    out = result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "regression gate for zero_shot: pass against version 1 (run *) on n=22; it catches a true accuracy drop "
            "of 0.* or more with 80% power",
            "*promotion refused for session *: zero_shot: comparison too weak: on n=22 it could only see accuracy "
            "drops of ≥ 0.*, thresholds require 0.10 (regression.max_detectable_drop)",
        ]
    )
    assert "WARNING: zero_shot: comparison too weak" in out
    assert "promoted symptom-diagnosis.zero_shot version 1 -> 2" not in out
    result.stdout.fnmatch_lines(["*Regression against the champion*", "*detectable*", "*zero_shot*accuracy*0.*"])
    parents, runs = parent_runs(eval_project)
    latest = max(parents, key=lambda r: r["tags"]["mlflow.runName"])
    assert latest["tags"]["evals.regression"] == "pass"
    assert "comparison too weak" in latest["tags"]["evals.regression.too_weak"]
    child = next(r for r in runs if r["tags"].get("mlflow.parentRunId") == latest["id"])
    assert 0.2 < child["metrics"]["regression.accuracy.min_detectable_drop"] < 0.6
    report = (bundles(eval_project)[-1].parent / "artifacts" / "report.html").read_text()
    assert "detectable drop" in report
