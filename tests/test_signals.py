"""SIGTERM, what a CI runner sends on cancel or time-out, keeps what was gathered like Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from evals.signals import SIGTERM_MESSAGE, trap_sigterm
from tests.conftest import KEYWORD_CONFTEST
from tests.test_champion import cli
from tests.test_plugin import parent_runs

# Each test leaves a mark when its examples are evaluated, then lingers, so that a SIGTERM lands in
# the middle of the session with some results gathered and most tests still to run.
SLOW_SUITE = """
import time
from pathlib import Path

import pytest

def test_diagnosis(evals_program, diagnosis, evals_evaluate):
    outcome = evals_evaluate(evals_program, diagnosis)
    time.sleep(0.3)
    Path("progress").mkdir(exist_ok=True)
    Path("progress", diagnosis).write_text("done")
    time.sleep(0.7)
    if outcome.failure:
        pytest.fail(outcome.failure, pytrace=False)
"""


@pytest.fixture
def slow_project(eval_project: pytest.Pytester) -> pytest.Pytester:
    eval_project.makeconftest(KEYWORD_CONFTEST)
    eval_project.makepyfile(test_suite=SLOW_SUITE)
    return eval_project


def terminate_after(
    project: pytest.Pytester, done: int, *args: str, group: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run a session; once ``done`` tests finished, SIGTERM it (the whole process group if ``group``)."""
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args]
    proc = subprocess.Popen(
        command, cwd=project.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    deadline = time.monotonic() + 240
    progress = project.path / "progress"
    while time.monotonic() < deadline and proc.poll() is None:
        if progress.is_dir() and len(list(progress.iterdir())) >= done:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[0]
    if group:
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(command, proc.returncode, out, "")


@pytest.mark.parametrize(
    ("xdist", "group"),
    [("", False), ("-n 2", False), ("-n 2", True)],
    ids=["no-xdist", "xdist-controller", "xdist-process-group"],
)
def test_sigterm_spools_what_was_gathered_and_sync_uploads_it(
    slow_project: pytest.Pytester, xdist: str, group: bool
) -> None:
    result = terminate_after(slow_project, 3, *xdist.split(), group=group)

    assert result.returncode == pytest.ExitCode.INTERRUPTED, result.stdout
    assert SIGTERM_MESSAGE in result.stdout
    assert "session interrupted: what was gathered is kept in" in result.stdout, result.stdout
    spooled = list((slow_project.path / ".evals" / "spool").glob("*/session.json"))
    assert len(spooled) == 1, result.stdout
    session = json.loads(spooled[0].read_text())
    assert session["status"] == "KILLED"
    assert session["tags"]["evals.complete"] == "false"
    assert 0 < session["programs"]["zero_shot"]["metrics"]["n"] < 44
    assert parent_runs(slow_project)[0] == []  # nothing waited on MLflow

    synced = cli(slow_project, "sync", "--spool", ".evals/spool")

    assert synced.returncode == 0, synced.stdout + synced.stderr
    parents = parent_runs(slow_project)[0]
    assert [(p["status"], p["tags"]["evals.session_id"]) for p in parents] == [("KILLED", session["session_id"])]


def test_trap_raises_once_then_ignores_and_restores_the_previous_handler() -> None:
    before = signal.getsignal(signal.SIGTERM)
    trap = trap_sigterm()
    assert trap is not None
    try:
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler runs at the next bytecode boundary
        os.kill(os.getpid(), signal.SIGTERM)  # a second one while the session writes: ignored
        time.sleep(0.1)
        assert trap.received == 2
    finally:
        trap.release()
    assert signal.getsignal(signal.SIGTERM) == before


def test_after_the_run_loop_sigterm_no_longer_interrupts() -> None:
    trap = trap_sigterm()
    assert trap is not None
    try:
        trap.disarm()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)
        assert trap.received == 1
    finally:
        trap.release()
