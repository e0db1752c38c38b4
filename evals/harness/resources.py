"""One harness session per pytest process: worker-side evaluation, controller-side results.

On every process (xdist worker or a plain ``pytest``) it lazily loads the dataset,
thresholds, programs and LM and runs evaluations for the tests. On the controller
(the only process when xdist is off) it gathers the records from test reports,
gates them after the run loop, and writes the reports and the MLflow run once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any

import pytest

from evals.data import Example, SymptomDataset
from evals.errors import ConfigError, LMUnavailable
from evals.records import RECORDS_PROPERTY, STABILITY_PROPERTY, ExampleRecord
from evals.config.settings import Settings

ANSWERED_ERRORS = ("AdapterParseError", "answer outside")
"""Errors that mean the LM did answer (with garbage), as opposed to being down."""


@dataclass(frozen=True)
class DiagnosisOutcome:
    """The records of one (program, diagnosis) test and its floor verdict."""

    program: str
    diagnosis: str
    records: tuple[ExampleRecord, ...]
    failure: str | None

    @property
    def passed(self) -> bool:
        return self.failure is None

    def as_property(self) -> tuple[str, list[dict[str, Any]]]:
        return RECORDS_PROPERTY, [record.to_dict() for record in self.records]


@dataclass
class ControllerState:
    """What the controller gathers while the tests run."""

    records: list[ExampleRecord] = field(default_factory=list)
    eval_reports: int = 0
    eval_failures: int = 0
    crashed_workers: list[str] = field(default_factory=list)
    worker_outputs: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False
    stability: list[dict[str, Any]] = field(default_factory=list)


class EvalsSession:
    """Hooks and lazily loaded resources of the harness for one pytest process."""

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self.is_worker = hasattr(config, "workerinput")
        self.session_id = (config.workerinput["evals_session_id"] if self.is_worker else uuid.uuid4().hex)
        self.started_at = time.time()
        self.state = ControllerState()
        self.summary: Any = None
        self._cache: dict[str, Any] = {}
        self.compile_events: list[Any] = []
        self.lm_answered = False
        self.fatal: str | None = None
        self.sigterm: Any = None  # the controller's SIGTERM trap (evals.signals), set at session start

    # ----- resources (any process) -----

    def registry(self) -> dict[str, Any]:
        """The PROGRAMS dict of the configured registry module."""
        if "registry" not in self._cache:
            name = self.settings["registry"]
            try:
                module = import_module(name)
            except ModuleNotFoundError as exc:
                raise ConfigError(f"--evals-registry: cannot import program registry {name!r} ({exc})") from None
            self._cache["registry"] = dict(module.PROGRAMS)
        return self._cache["registry"]

    def optimizer_setup(self) -> Any:
        """The parsed optimizers file (configurations and evaluated pairs)."""
        if "optimizers" not in self._cache:
            from programs.optimizers import load_setup

            self._cache["optimizers"] = load_setup(self.settings.path("optimizers"), self.registry())
        return self._cache["optimizers"]

    def program_names(self) -> list[str]:
        """The programs selected by ``--evals-programs`` (default: all registered plus configured pairs)."""
        from programs.optimizers import check_pair

        setup = self.optimizer_setup()
        chosen = self.settings["programs"] or (*self.registry(), *setup.evaluate)
        for name in chosen:
            check_pair(name, self.registry(), setup.optimizers, "--evals-programs")
        return list(dict.fromkeys(chosen))

    def known_program_names(self) -> list[str]:
        """Every name thresholds.yaml may configure: each program alone and with each optimizer."""
        bases = list(self.registry())
        optimizers = list(self.optimizer_setup().optimizers)
        return [*bases, *(f"{base}+{opt}" for base in bases for opt in optimizers)]

    def dataset(self) -> SymptomDataset:
        if "dataset" not in self._cache:
            from evals.data import load_dataset

            data_dir = self.settings["data-dir"]
            self._cache["dataset"] = load_dataset(
                self.settings.path("data-dir") if data_dir else None, seed=self.settings["seed"]
            )
        return self._cache["dataset"]

    def examples(self) -> tuple[Example, ...]:
        """The sampled examples of the evaluated split (sampled once per process; every test reads it)."""
        if "examples" not in self._cache:
            from evals.data import sample

            split = self.dataset().split(self.settings["split"])
            self._cache["examples"] = sample(split, self.settings["per-diagnosis"], seed=self.settings["seed"])
        return self._cache["examples"]

    def thresholds(self) -> Any:
        if "thresholds" not in self._cache:
            from evals.config.thresholds import load_thresholds

            from evals.gates.champion import split_policy
            from evals.stats.drift import parse_drift_policy
            from evals.stats.regression import parse_regression_policy

            thresholds = load_thresholds(self.settings.path("thresholds"), self.known_program_names())
            parse_regression_policy(split_policy(thresholds.regression)[0], thresholds.source)
            parse_drift_policy(thresholds.drift, thresholds.source)
            from evals.gates.robustness import parse_robustness_policy

            parse_robustness_policy(thresholds.robustness, thresholds.source)
            self._cache["thresholds"] = thresholds
        return self._cache["thresholds"]

    def lm_spec(self) -> Any:
        """The LM spec; with --evals-lm-server, the session's shared server instead of an in-process model."""
        from evals.lm.spec import parse_lm_spec

        s = self.settings
        spec, api_base = s["lm"], s["lm-api-base"]
        server = self.config.workerinput.get("evals_lm_server") if self.is_worker else self.lm_server_address()
        if server:
            spec, api_base = server["spec"], server["api_base"]
        return parse_lm_spec(spec, temperature=s["temperature"], max_tokens=s["max-tokens"], api_base=api_base,
                             timeout_s=s["timeout"])

    def lm_server_address(self) -> dict[str, str] | None:
        server = self._cache.get("lm_server")
        return {"spec": server.spec(), "api_base": server.api_base} if server else None

    def start_lm_server(self) -> None:
        """Controller: start the shared model server before any worker (``--evals-lm-server``)."""
        from evals.lm.spec import parse_lm_spec
        from evals.lm.server import start_mlx_server
        from evals.lm.mlx import resolve_target

        spec = parse_lm_spec(self.settings["lm"])
        if spec.backend != "mlx":
            raise ConfigError(f"--evals-lm-server starts an mlx_lm server: use an mlx: LM spec, not {spec.spec!r}")
        model, _ = resolve_target(spec.model, cache_dir=self.settings.path("cache-dir"))
        self._cache["lm_server"] = start_mlx_server(Path(model), self.settings.path("cache-dir") / "logs")

    def lm(self) -> Any:
        """Build the LM once per process and make it dspy's default, with the JSON adapter."""
        if "lm" not in self._cache:
            import dspy

            from evals.lm.spec import build_lm, worker_threads

            workers = int(self.config.workerinput.get("workercount", 1)) if self.is_worker else 1
            # One response cache for all workers and sessions (diskcache is safe across processes).
            dspy.configure_cache(disk_cache_dir=str(self.settings.path("cache-dir") / "lm"))
            spec = self.lm_spec()
            try:
                lm = build_lm(spec, n_threads=worker_threads(workers), cache=not self.settings["no-cache"],
                              cache_dir=self.settings.path("cache-dir"))
                if hasattr(lm.engine, "llama"):
                    lm.engine.llama  # load in-process models now: a bad file is one clear line, once
            except ConfigError:
                raise
            except Exception as exc:  # llama.cpp, mlx and litellm raise many types
                from evals.harness.runner import one_line

                raise LMUnavailable(f"LM {spec.spec!r} cannot be loaded: {one_line(exc)}; check --evals-lm") from None
            dspy.configure(lm=lm, adapter=dspy.JSONAdapter())
            self._cache["lm"] = lm
        return self._cache["lm"]

    def program(self, name: str) -> Any:
        """The named program, built once per process; ``base+optimizer`` comes from the compile cache."""
        key = f"program:{name}"
        if key not in self._cache:
            from programs.optimizers import split_name

            base, optimizer = split_name(name)
            spec = self.registry()[base]
            trainset = self.dspy_examples("train")
            if optimizer is None:
                self._cache[key] = spec.build(trainset)
            else:
                self._cache[key] = self._compiled(name, spec, self.optimizer_setup().optimizers[optimizer])
        return self._cache[key]

    def dspy_examples(self, split: str, per_diagnosis: int | None = None) -> list[Any]:
        import dspy

        from evals.data import sample

        examples = sample(self.dataset().split(split), per_diagnosis, seed=self.settings["seed"])
        return [dspy.Example(symptoms=e.symptoms, diagnosis=e.diagnosis).with_inputs("symptoms") for e in examples]

    def _compiled(self, name: str, spec: Any, config: Any) -> Any:
        from evals.harness.compile_cache import get_or_compile
        from programs.optimizers import compile_program, empty_shape

        from evals.scoring import diagnosis_match

        trainset = self.dspy_examples("train", config.trainset_per_diagnosis)
        valset = self.dspy_examples("val", config.valset_per_diagnosis) if config.uses_valset else []
        import dspy

        # The LM the tests run on (the evals_lm fixture may be overridden, e.g. by a scripted LM).
        lm = dspy.settings.lm or self.lm()
        full_train = self.dspy_examples("train")
        module, event = get_or_compile(
            cache_dir=self.settings.path("cache-dir"),
            program=name,
            parts=self.compile_parts(spec, config, trainset, valset),
            empty=lambda: empty_shape(config, spec.build(full_train), trainset),
            compile=lambda: compile_program(config, spec.build(full_train), trainset, valset, diagnosis_match),
            count_lm_calls=lambda: len(lm.history),
            session_id=self.session_id,
            recompile=self.settings["recompile"],
        )
        self.compile_events.append(event)
        return module

    def compile_parts(self, spec: Any, config: Any, trainset: list[Any], valset: list[Any]) -> dict[str, str]:
        """Everything that changes a compiled program, readable (hashed into the cache key)."""
        from importlib.metadata import version

        from evals.harness.compile_cache import source_hash
        from evals.data import Example, fingerprint
        from evals.scoring import diagnosis_match

        def fp(examples: list[Any]) -> str:
            return fingerprint(Example(str(i), e.symptoms, e.diagnosis) for i, e in enumerate(examples))

        return {
            "program": spec.name,
            "program_source": spec.source_hash(),
            "optimizer": config.name,
            "optimizer_config": config.fingerprint(),
            "optimizer_source": source_hash("programs.optimizers", "programs.knn"),
            "trainset": fp(trainset),
            "valset": fp(valset),
            "lm": self.lm_spec().cache_key(),
            "dspy": version("dspy"),
            "metric": source_hash(diagnosis_match),
        }

    def evaluate(self, program: str, diagnosis: str) -> DiagnosisOutcome:
        """Run ``program`` on the sampled examples of ``diagnosis`` and check its recall floor.

        A diagnosis with no example in the sample skips its test (nothing to measure is no pass).
        """
        from evals.gates.thresholds import diagnosis_failure
        from evals.harness.runner import RetryPolicy, run_examples
        from programs.optimizers import split_name

        examples = [e for e in self.examples() if e.diagnosis == diagnosis]
        if not examples:
            pytest.skip(f"no examples of {diagnosis!r} in the {self.settings['split']} sample")
        retry = RetryPolicy(budget_s=self.settings["example-budget"], call_timeout_s=self.settings["timeout"])
        records = run_examples(self.program(program), program, examples, retry=retry)
        if not self.registry()[split_name(program)[0]].reference:  # a reference program makes no LM call
            self._check_lm_alive(records)
        correct = sum(record.correct for record in records)
        limits = self.thresholds().for_program(program)
        failure = diagnosis_failure(program, diagnosis, correct, len(records), limits)
        return DiagnosisOutcome(program, diagnosis, tuple(records), failure)

    def all_compile_events(self) -> list[dict[str, Any]]:
        """Compile events of this process and of every xdist worker (controller only)."""
        events = [event.to_dict() for event in self.compile_events]
        for output in self.state.worker_outputs:
            events.extend(output.get("compile_events", []))
        return events

    def _check_lm_alive(self, records: list[ExampleRecord]) -> None:
        """Until the LM first answers, stop if it is clearly down: every call refused (connection, host, key).

        A time-out or a hang is not clearly down: those examples stay recorded errors and the session
        goes on. The records travel with the stop, so that what was gathered is still written.
        """
        if self.lm_answered or not records:
            return
        if any(not r.error or r.error.startswith(ANSWERED_ERRORS) for r in records):
            self.lm_answered = True
        elif all(r.lm_down for r in records):
            from evals.lm.spec import unavailable_line

            first = records[0]
            raise LMUnavailable(unavailable_line(self.lm_spec(), str(first.lm_down), str(first.error)), records)

    def stability(self, program: str, example: Example, text: str, perturbations: tuple[str, ...]) -> Any:
        """Run ``program`` on an example and on a perturbed copy of its text; compare the answers."""
        from dataclasses import replace

        from evals.stats.robustness import StabilityRecord
        from evals.harness.runner import run_one

        module = self.program(program)
        original = run_one(module, program, example)
        perturbed = run_one(module, program, replace(example, symptoms=text))
        return StabilityRecord(program, example.id, example.diagnosis, perturbations, original.predicted,
                               perturbed.predicted, perturbed.error or original.error)

    # ----- xdist plumbing -----

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput["evals_session_id"] = self.session_id
        node.workerinput["evals_lm_server"] = self.lm_server_address()

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        output = getattr(node, "workeroutput", {}) or {}
        if "evals" in output:
            self.state.worker_outputs.append(output["evals"])
        if error:
            self.state.crashed_workers.append(str(getattr(node, "gateway", node).id))

    # ----- hooks -----

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        if self.is_worker:
            return
        from evals.signals import trap_sigterm

        # A CI runner cancels with SIGTERM: stop like Ctrl-C, so what was gathered is spooled.
        self.sigterm = trap_sigterm()
        if self.settings["lm-server"]:
            self.start_lm_server()
        # Fail fast, before any worker starts or any LM call: bad program names, a bad thresholds.yaml.
        if self.settings["programs"] or self.settings.path("optimizers").exists():
            self.program_names()
        if self.settings.path("thresholds").exists() or self.config.getoption("evals_thresholds"):
            self.thresholds()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.is_worker or report.when != "call":
            return
        for key, value in report.user_properties:
            if key == STABILITY_PROPERTY:
                self.state.stability.extend(value)
        batches = [value for key, value in report.user_properties if key == RECORDS_PROPERTY]
        if not batches:
            return
        self.state.eval_reports += 1
        self.state.eval_failures += int(report.failed)
        self.state.records.extend(ExampleRecord.from_dict(item) for batch in batches for item in batch)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Iterator[None]:
        try:
            result = yield
        except KeyboardInterrupt:
            self.state.interrupted = True
            raise
        finally:
            if self.sigterm is not None:
                self.sigterm.disarm()  # the results are complete: a late SIGTERM must not cut the writing
        if not self.is_worker and (self.state.records or self.state.stability):
            from evals.results.summary import summarize

            self.summary = summarize(self)
            # Like pytest-cov: fail the session here, print the red lines in the terminal summary.
            session.testsfailed += len(self.summary.error_lines)
        return result

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.is_worker:
            self.config.workeroutput["evals"] = {  # type: ignore[attr-defined]
                "compile_events": [event.to_dict() for event in self.compile_events]
            }
            return
        if self.state.records or self.state.stability:
            from evals.results.summary import summarize, write_and_log

            if self.summary is None:  # interrupted before the loop ended: keep what was gathered
                self.state.interrupted = True
                self.summary = summarize(self)
            write_and_log(self, self.summary)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if self.sigterm is not None:
            self.sigterm.release()
        server = self._cache.pop("lm_server", None)
        if server is not None:
            server.stop()

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.is_worker or self.summary is None:
            return
        from evals.results.terminal import render_summary

        render_summary(self, self.summary, terminalreporter)
