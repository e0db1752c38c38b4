"""The pytest plugin: options, ini keys, markers, fixtures and parametrization.

Each process gets one :class:`~evals.harness.resources.Harness` (its lazily built resources),
kept on ``config.stash`` and handed to the fixtures. The controller registers a
:class:`~evals.controller.Controller`, which gathers, gates, writes and logs once; an xdist
worker registers a :class:`~evals.harness.worker.Worker`, which only reports back.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from evals.config.settings import OPTIONS, resolve
from evals.errors import ConfigError, LMUnavailable
from evals.labels import DIAGNOSES, slug
from evals.records import RECORDS_PROPERTY, STABILITY_PROPERTY, evaluates

if TYPE_CHECKING:
    from evals.config.shard import Shard
    from evals.harness.resources import DiagnosisOutcome, Harness

HARNESS_KEY = pytest.StashKey["Harness"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("evals", "symptom-diagnosis evals")
    for option in OPTIONS:
        if option.flag:
            group.addoption(option.cli, dest=option.dest, action="store_true", default=None, help=option.help)
        else:
            group.addoption(
                option.cli,
                dest=option.dest,
                default=None,
                metavar=option.name.upper().replace("-", "_"),
                help=f"{option.help} (env {option.env}, default {option.default})",
            )
        parser.addini(option.ini, option.help, default=None)
    parser.addini(
        "evals_redact_patterns", "Extra NAME=REGEX patterns redacted from logged texts", type="linelist", default=[]
    )


def pytest_configure(config: pytest.Config) -> None:
    from evals.controller import Controller
    from evals.harness.resources import Harness
    from evals.harness.worker import Worker
    from evals.quiet import quiet_libraries, warning_filter_lines

    # litellm would fetch its model cost map from the network at first use; offline that is a slow failure.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "true")
    config.addinivalue_line("markers", "evals: an eval suite test that runs a real LM")
    config.addinivalue_line("markers", "slow: a slow harness test (real mlx-lm calls and the like)")
    config.addinivalue_line("markers", "robustness: a metamorphic robustness suite (select with -m robustness)")
    # mlflow's INFO lines, download bars and its stack's deprecation warnings: no user can act on them.
    quiet_libraries()
    for line in warning_filter_lines():
        config.addinivalue_line("filterwarnings", line)
    cli = {option.dest: config.getoption(option.dest) for option in OPTIONS}
    ini = {option.ini: config.getini(option.ini) for option in OPTIONS}
    settings = resolve(cli, ini, os.environ, config.rootpath, config.invocation_params.dir)
    worker_input = getattr(config, "workerinput", None)
    harness = Harness(settings, worker_input)
    config.stash[HARNESS_KEY] = harness
    hooks = Worker(config, harness) if worker_input is not None else Controller(config, harness)
    config.pluginmanager.register(hooks, "evals-session")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``(evals_program, diagnosis)`` over the selected programs and the 22 diagnoses."""
    if "evals_program" not in metafunc.fixturenames:
        return
    programs = metafunc.config.stash[HARNESS_KEY].program_names()
    if "diagnosis" in metafunc.fixturenames:
        cases = [(program, diagnosis) for program in programs for diagnosis in DIAGNOSES]
        ids = [f"{program}-{slug(diagnosis)}" for program, diagnosis in cases]
        metafunc.parametrize(("evals_program", "diagnosis"), cases, ids=ids)
    else:
        metafunc.parametrize("evals_program", programs)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "evals_program" in getattr(item, "fixturenames", ()):
            item.add_marker("evals")
    shard = config.stash[HARNESS_KEY].settings["shard"]
    if shard is not None:  # --evals-shard K/N: keep this shard's eval tests (the rule in evals.config.shard)
        dropped = [item for item in items if not in_shard(item, shard)]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = [item for item in items if in_shard(item, shard)]


def in_shard(item: pytest.Item, shard: Shard) -> bool:
    """True for a test of ``shard``, and for every test that is no eval test (each shard runs those)."""
    fixtures = getattr(item, "fixturenames", ())
    if "evals_program" not in fixtures:
        # A test that evaluates without being parametrized by program (a saved robustness case) runs in
        # one shard, by its node id: in every shard it would be counted N times by the merge.
        return not evaluates(item) or shard.holds(None, None, item.nodeid)
    params = getattr(getattr(item, "callspec", None), "params", {})
    return shard.holds(params.get("evals_program"), params.get("diagnosis"), item.nodeid)


@pytest.fixture(scope="session")
def evals_session(pytestconfig: pytest.Config) -> Harness:
    """The harness of this process (settings, dataset, LM, thresholds)."""
    return pytestconfig.stash[HARNESS_KEY]


SETUP_STOP = "a setup error stops the session (the line at the end)"
"""Why the test that met a setup error is skipped: the error itself is printed once, as the stop reason."""


def guarded(session: Harness, request: pytest.FixtureRequest, call: Callable[[], Any]) -> Any:
    """Run ``call``; a setup problem (bad data, LM down) stops the session with its one line.

    The line is pytest's stop reason (``Interrupted: <line>``, exit 2), printed once. The test that
    met it is skipped with a short reason rather than failed: every xdist worker meets the problem
    by itself, and a failure each would repeat the line once per worker.
    """
    if not session.fatal:
        try:
            return call()
        except (ConfigError, LMUnavailable) as exc:
            session.fatal = str(exc)
    request.session.shouldstop = session.fatal
    pytest.skip(SETUP_STOP)


@pytest.fixture(scope="session")
def evals_lm(evals_session: Harness, request: pytest.FixtureRequest) -> Iterator[Any]:
    """The configured ``dspy.LM``, loaded once per process and set as dspy's default LM."""
    yield guarded(evals_session, request, lambda: evals_session.lm)


@pytest.fixture
def evals_evaluate(
    evals_session: Harness, evals_lm: Any, request: pytest.FixtureRequest
) -> Callable[[str, str], DiagnosisOutcome]:
    """Run a program on one diagnosis's sampled examples; the records travel with the test report."""

    def evaluate(program: str, diagnosis: str) -> DiagnosisOutcome:
        outcome = guarded(
            evals_session, request, lambda: evaluate_recording(evals_session, request, program, diagnosis)
        )
        request.node.user_properties.append(outcome.as_property())
        return outcome

    return evaluate


def evaluate_recording(
    session: Harness, request: pytest.FixtureRequest, program: str, diagnosis: str
) -> DiagnosisOutcome:
    """``session.evaluate``; when it finds the LM down, the records it gathered still travel with the report."""
    session.start_evaluations(request.session)  # the first eval test plans the process's (--evals-concurrency)
    try:
        return session.evaluate(program, diagnosis, request.node)
    except LMUnavailable as exc:
        request.node.user_properties.append((RECORDS_PROPERTY, [record.to_dict() for record in exc.records]))
        raise


@pytest.fixture
def evals_stability(evals_session: Harness, evals_lm: Any, request: pytest.FixtureRequest) -> Callable[..., Any]:
    """Compare a program's answers on an example and on a perturbed text; the record travels with the report."""

    def check(program: str, example: Any, text: str, perturbations: tuple[str, ...]) -> Any:
        evals_session.start_evaluations(request.session)  # its calls count against --evals-concurrency
        record = evals_session.stability(program, example, text, perturbations)
        request.node.user_properties.append((STABILITY_PROPERTY, [{"record": record.to_dict(), "text": text}]))
        return record

    return check
