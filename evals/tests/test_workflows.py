"""The GitHub workflows are well-formed and call the harness with options that exist."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from evals.settings import OPTIONS

WORKFLOWS = sorted((Path(__file__).parents[2] / ".github" / "workflows").glob("*.yml"))
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
