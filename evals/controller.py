"""The controller: gathers the workers' results, and ends the session once.

It runs on the controller process only (the only process without xdist). While the tests run
it collects the records from the test reports (``item.user_properties``, which xdist
serialises) and the workers' compile events (``workeroutput``). After the loop it builds a
frozen :class:`~evals.context.SessionContext`, reads the store once
(:func:`~evals.store.view.read_store`), summarises and gates
(:func:`~evals.results.summary.summarize`), and fails the session like pytest-cov does; at
session finish :func:`~evals.results.finish.finish` writes, logs or spools, in that order.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from evals.config.policies import Policies, parse_policies
from evals.config.thresholds import parse_thresholds
from evals.context import SessionContext
from evals.errors import ConfigError
from evals.harness.models import program_model
from evals.harness.params import program_params, program_state, session_params
from evals.harness.resources import Harness
from evals.lifecycle import FINISH_MODULES, freeze_for_exit, imports, owns_process, warm
from evals.lm.spec import IN_PROCESS
from evals.records import RECORDS_PROPERTY, STABILITY_PROPERTY, ExampleRecord, evaluates
from evals.results.finish import SessionEnd, finish
from evals.results.shard import shard_of, shard_summary
from evals.results.summary import SessionSummary, summarize
from evals.signals import SigtermTrap
from evals.store.view import read_store


@dataclass
class Gathered:
    """What the controller gathers while the tests run."""

    records: list[ExampleRecord] = field(default_factory=list)
    stability: list[dict[str, Any]] = field(default_factory=list)
    crashed_workers: list[str] = field(default_factory=list)
    worker_outputs: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False


class Controller:
    """The controller's hooks: xdist plumbing, report gathering, and the end of the session."""

    def __init__(self, config: pytest.Config, harness: Harness) -> None:
        self.config = config
        self.harness = harness
        self.gathered = Gathered()
        self.context: SessionContext | None = None
        self.summary: SessionSummary | None = None
        self.end: SessionEnd | None = None
        self.sigterm: SigtermTrap | None = None
        self.server: Any = None
        self.slots_dir: Path | None = None  # the session's call slots and workers' progress (xdist)
        self.display: Any = None
        self.compile_watcher: Any = None  # the workers' compiles, printed from their progress files (xdist)
        self.warmed = False

    # ----- xdist plumbing -----

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput["evals_session_id"] = self.harness.session_id
        node.workerinput["evals_lm_server"] = self.harness.lm_server
        if self.slots_dir is None:
            import tempfile

            self.slots_dir = Path(tempfile.mkdtemp(prefix="evals-slots-"))
            from evals.harness.compile_sinks import watch_compiles

            self.compile_watcher = watch_compiles(self.config, self.slots_dir, before_line=self.clear_display)
        node.workerinput["evals_slots_dir"] = str(self.slots_dir)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        output = getattr(node, "workeroutput", {}) or {}
        if "evals" in output:
            self.gathered.worker_outputs.append(output["evals"])
        if error:
            self.gathered.crashed_workers.append(str(getattr(node, "gateway", node).id))

    # ----- the session -----

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        from evals.harness.compile_sinks import terminal_sink
        from evals.harness.progress import terminal_display
        from evals.signals import trap_sigterm

        # A CI runner cancels with SIGTERM: stop like Ctrl-C, so what was gathered is spooled.
        self.sigterm = trap_sigterm()
        self.display = terminal_display(self.config)
        self.harness.compile_sink = terminal_sink(self.config)  # a compile of this process (no xdist)
        self.harness.on_tick = self.show_progress
        if self.harness.settings["lm-server"]:
            self.start_lm_server()
        # Fail fast, before any worker starts or any LM call: bad program names, a bad thresholds.yaml.
        settings = self.harness.settings
        if settings["programs"] or settings.path("optimizers").exists():
            self.harness.program_names()
        if settings.path("thresholds").exists() or self.config.getoption("evals_thresholds"):
            self.harness.policies  # noqa: B018 - parsed (and validated) now

    def start_lm_server(self) -> None:
        """Start the session's model server before any worker (``--evals-lm-server``); fail closed in one line."""
        from evals.errors import LMUnavailable
        from evals.lm.server import start_session_server

        settings = self.harness.settings
        cache_dir = settings.path("cache-dir")
        try:
            self.server = start_session_server(settings["lm"], log_dir=cache_dir / "logs", cache_dir=cache_dir)
        except LMUnavailable as exc:
            pytest.exit(str(exc), returncode=pytest.ExitCode.INTERRUPTED)
        self.harness.lm_server = self.server.for_workers()

    def clear_display(self) -> None:
        """Erase the example progress shown in place (before a line of the workers' compiles)."""
        if self.display is not None:
            self.display.clear()

    def show_progress(self) -> None:
        """Examples done and calls in flight: this process's, or the xdist workers' files summed."""
        if self.display is None:
            return
        if self.slots_dir is not None:
            from evals.harness.evaluations import read_progress

            self.display.update(lambda elapsed: read_progress(self.slots_dir, elapsed))
        elif self.harness.evaluations is not None:
            self.display.update(
                lambda elapsed: self.harness.evaluations.progress(elapsed) if self.harness.evaluations else None
            )

    @pytest.hookimpl(tryfirst=True)  # before pytest writes the test's result where the progress text stands
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.display is not None:
            self.display.clear()
            self.show_progress()
        if report.when != "call":
            return
        for key, value in report.user_properties:
            if key == STABILITY_PROPERTY:
                self.gathered.stability.extend(cast("list[dict[str, Any]]", value))
        batches = [
            cast("list[dict[str, Any]]", value) for key, value in report.user_properties if key == RECORDS_PROPERTY
        ]
        self.gathered.records.extend(ExampleRecord.from_dict(item) for batch in batches for item in batch)
        if batches:
            self.warm_up()

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Iterator[None]:
        if not session.config.option.collectonly and any(map(evaluates, session.items)):
            self.warm_up()  # under xdist the controller collects nothing: it warms at the first records
        try:
            result = yield
        except KeyboardInterrupt:
            self.gathered.interrupted = True
            raise
        finally:
            if self.sigterm is not None:
                self.sigterm.disarm()  # the results are complete: a late SIGTERM must not cut the writing
        if self.gathered.records or self.gathered.stability:
            self.summarize()
            # Like pytest-cov: fail the session here, print the red lines in the terminal summary.
            session.testsfailed += len(self.summary.error_lines) if self.summary else 0
        return result

    def warm_up(self) -> None:
        """What the session's end needs and the tests do not change, done while they wait on the LM (once).

        Only while the session waits on an LM reached over HTTP: an in-process model (or the session's
        model server on this machine) keeps the cores busy, and the same work would only move earlier.
        Only in a session that is its process's program: pytester restores ``sys.modules`` after an
        in-process run, and a module a warm thread imported there would be imported twice in one process.
        """
        if self.warmed:
            return
        self.warmed = True  # decided once: later records do not ask again
        if not owns_process(self.config) or self.harness.lm_spec().backend in IN_PROCESS:
            return
        harness = self.harness
        modules: tuple[str, ...] = FINISH_MODULES
        if self.config.pluginmanager.has_plugin("hypothesispytest"):  # its terminal summary imports this
            modules += ("hypothesis.internal.observability",)
        warm(lambda: harness.environment, lambda: harness.dataset_manifest, imports(modules))

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.harness.stop_evaluations()
        if self.compile_watcher is not None:
            try:
                self.compile_watcher.stop()  # a last look: the summary line of a compile that just ended
            except Exception:  # noqa: BLE001 - a display error must not cost the session its results
                pass
        if self.display is not None:
            self.display.clear()
        if not (self.gathered.records or self.gathered.stability):
            return
        if self.summary is None:  # interrupted before the loop ended: keep what was gathered
            self.gathered.interrupted = True
            self.summarize()
        assert self.context is not None and self.summary is not None
        self.end = finish(self.context, self.summary)
        freeze_for_exit(self.config)  # written: a process that ends with the session need not collect its garbage

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if self.sigterm is not None:
            self.sigterm.release()
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self.slots_dir is not None:
            import shutil

            shutil.rmtree(self.slots_dir, ignore_errors=True)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.summary is None:
            return
        from evals.results.terminal import render_summary

        render_summary(self.summary, self.end or SessionEnd(), terminalreporter)

    # ----- the seam: plain data from here on -----

    def summarize(self) -> None:
        """Build the session context, read the store once, and gate."""
        self.context = self.build_context()
        self.summary = summarize(self.context, read_store(self.context))
        shard = shard_of(self.context.settings)
        if shard is not None:  # gates of a part of the session are notes: the merge of the shards gates
            self.summary = shard_summary(self.summary, shard)

    def build_context(self) -> SessionContext:
        """Freeze what was gathered and what this process loaded into a :class:`SessionContext`."""
        harness, gathered = self.harness, self.gathered
        records = tuple(sorted(gathered.records, key=lambda r: (r.program, r.example_id)))
        policies, problem = self.policies_or_defaults()
        events = self.compile_events()
        params = session_params(harness, policies.thresholds.sha256, len(gathered.worker_outputs) or 1)
        per_program = program_params(harness, records, params, events)
        return SessionContext(
            session_id=harness.session_id,
            started_at=harness.started_at,
            settings=harness.settings,
            policies=policies,
            policies_problem=problem,
            records=records,
            stability=tuple(gathered.stability),
            compile_events=tuple(events),
            crashed_workers=tuple(gathered.crashed_workers),
            interrupted=gathered.interrupted,
            manifest=harness.dataset_manifest,
            params=params,
            program_params=per_program,
            program_states={name: program_state(harness, name, p) for name, p in per_program.items()},
            program_models={name: program_model(harness, name) for name in per_program},
            redact_patterns=tuple(self.config.getini("evals_redact_patterns")),
            references=tuple(name for name, spec in harness.registry.items() if getattr(spec, "reference", False)),
        )

    def policies_or_defaults(self) -> tuple[Policies, str | None]:
        """The session's policies; when thresholds.yaml cannot be read, all-default limits and the reason."""
        try:
            return self.harness.policies, None
        except ConfigError as exc:
            defaults = parse_thresholds({"version": 1}, "<defaults>", self.harness.known_program_names())
            return parse_policies(defaults), str(exc)

    def compile_events(self) -> list[Mapping[str, Any]]:
        """Compile events of this process and of every xdist worker."""
        events: list[Mapping[str, Any]] = [event.to_dict() for event in self.harness.compile_events]
        for output in self.gathered.worker_outputs:
            events.extend(output.get("compile_events", []))
        return events
