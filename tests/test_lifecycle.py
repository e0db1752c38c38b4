"""A session warms its end while the tests run, and a process that ends with it exits without a last GC."""

from __future__ import annotations

import json
import sys
import threading
import time
from types import SimpleNamespace

import pytest

from evals.lifecycle import freeze_for_exit, imports, owns_process, warm
from tests.conftest import DUMMY_CONFTEST

WATCH = """

import gc
import json
import threading


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session):
    for thread in threading.enumerate():
        if thread.name == "evals-warm":
            thread.join(60)
    # Before the controller's end: only the warm thread can have imported the PNG backend.
    print("WARM", json.dumps({"agg": "matplotlib.backends.backend_agg" in sys.modules}))


def pytest_unconfigure(config):
    from evals.lifecycle import owns_process
    print("EXIT", json.dumps({"owns": owns_process(config), "frozen": gc.get_freeze_count()}))
"""


def outcome(lines: list[str], tag: str) -> dict[str, object]:
    found = [json.loads(line.split(tag, 1)[1]) for line in lines if tag in line]  # may follow a progress dot
    assert found, f"no {tag} line in the output"
    return found[-1]


@pytest.mark.parametrize(
    ("args", "warmed"),
    [
        (["--evals-lm", "openai/fake"], True),
        (["--evals-lm", "openai/fake", "-n", "1"], True),  # the xdist controller warms at the first records
        ([], False),  # the default in-process model keeps the cores busy: warming would only move work earlier
    ],
    ids=["http", "http-xdist-1", "in-process"],
)
def test_a_pytest_process_warms_its_end_and_exits_without_a_last_collection(
    eval_project: pytest.Pytester, args: list[str], warmed: bool
) -> None:
    # The scripted DummyLM answers whatever --evals-lm names; the spec says how the LM is reached.
    eval_project.makeconftest(DUMMY_CONFTEST + "\nimport sys\n" + WATCH)
    result = eval_project.runpytest_subprocess(
        "-s", "-k", "allergy", "--evals-no-mlflow", "-p", "no:cacheprovider", *args
    )
    result.assert_outcomes(passed=1)
    lines = result.outlines
    assert outcome(lines, "WARM ") == {"agg": warmed}
    exit_state = outcome(lines, "EXIT ")
    assert exit_state["owns"] is True and int(str(exit_state["frozen"])) > 0


def test_a_session_inside_another_program_frees_its_garbage_as_usual(eval_project: pytest.Pytester) -> None:
    # pytest.main() from a program (a notebook, a script): the program goes on after the session.
    eval_project.makeconftest(DUMMY_CONFTEST + "\nimport sys\n" + WATCH)
    args = ["-s", "-k", "allergy", "--evals-no-mlflow", "-p", "no:cacheprovider", "--evals-lm", "openai/fake"]
    result = eval_project.run(sys.executable, "-c", f"import sys, pytest; sys.exit(pytest.main({args!r}))")
    assert result.ret == 0, result.stdout.str()
    assert outcome(result.outlines, "WARM ") == {"agg": False}  # no warm thread: its end imports what it needs
    assert outcome(result.outlines, "EXIT ") == {"owns": False, "frozen": 0}


def test_owns_process_needs_pytest_as_main_with_the_session_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    config = SimpleNamespace(invocation_params=SimpleNamespace(args=("suites", "-q")))
    main = type(sys)("__main__")
    main.__file__ = "/venv/bin/pytest"
    monkeypatch.setitem(sys.modules, "__main__", main)
    monkeypatch.setattr(sys, "argv", ["/venv/bin/pytest", "suites", "-q"])
    assert owns_process(config)  # type: ignore[arg-type]
    monkeypatch.setattr(sys, "argv", ["/venv/bin/pytest", "other", "args"])
    assert not owns_process(config)  # type: ignore[arg-type]  # pytest.main() with its own arguments
    main.__file__ = "/venv/bin/jupyter-kernel"
    monkeypatch.setattr(sys, "argv", ["/venv/bin/jupyter-kernel", "suites", "-q"])
    assert not owns_process(config) and not freeze_for_exit(config)  # type: ignore[arg-type]
    worker = SimpleNamespace(invocation_params=config.invocation_params, workerinput={"workerid": "gw0"})
    assert owns_process(worker)  # type: ignore[arg-type]  # an xdist worker ends with its session


def test_warm_runs_every_thunk_whatever_fails_and_imports_load_modules() -> None:
    done: list[str] = []

    def fails() -> None:
        raise ImportError("not installed")

    thread = warm(fails, lambda: done.append("after a failure"), imports(("json", "no_such_module_xyz")))
    thread.join(10)
    assert not thread.is_alive() and thread.daemon and done == ["after a failure"]
    started = time.monotonic()
    imports(("json",))()  # what the warm thread did not finish, the session's end does itself
    assert time.monotonic() - started < 1 and threading.current_thread() is threading.main_thread()
