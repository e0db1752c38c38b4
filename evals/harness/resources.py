"""The harness of one pytest process: lazily built resources and the evaluation of one test.

On every process (an xdist worker, the controller, or a plain ``pytest``) a :class:`Harness`
builds what the tests need once, on first use: the program registry, the optimizer setup,
the dataset and its sample, thresholds.yaml's policies, the LM and the programs. Its
:meth:`~Harness.evaluate` and :meth:`~Harness.stability` run one test's examples. The
session's end is the controller's (:mod:`evals.controller`); this module knows nothing of it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import cached_property
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from evals.config.optimizers import OptimizerConfig, OptimizerSetup, check_pair, load_setup, split_name
from evals.config.policies import Policies, parse_policies
from evals.config.settings import Settings
from evals.config.thresholds import load_thresholds
from evals.data import Example, SymptomDataset
from evals.errors import ConfigError, LMUnavailable
from evals.harness.runner import RetryPolicy
from evals.records import RECORDS_PROPERTY, ExampleRecord

if TYPE_CHECKING:
    from evals.harness.evaluations import Evaluations

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


class Harness:
    """Lazily built resources of the harness for one pytest process.

    Args:
        settings: The layered settings.
        worker_input: ``config.workerinput`` on an xdist worker (session id, LM server, worker count).
    """

    def __init__(self, settings: Settings, worker_input: Mapping[str, Any] | None = None) -> None:
        self.settings = settings
        self.worker_input = worker_input
        self.session_id: str = worker_input["evals_session_id"] if worker_input else uuid.uuid4().hex
        self.started_at = time.time()
        self.lm_server: dict[str, str] | None = worker_input.get("evals_lm_server") if worker_input else None
        self.compile_events: list[Any] = []
        self.lm_answered = False
        self.fatal: str | None = None
        self._programs: dict[str, Any] = {}
        self.evaluations: Evaluations | None = None
        self.on_tick: Callable[[], None] = lambda: None  # progress, set by the controller or the worker
        self.compile_sink: Any = None  # where a compile shows its progress, set by the controller or the worker

    # ----- resources -----

    @cached_property
    def registry_module(self) -> Any:
        """The configured program registry module (``--evals-registry``)."""
        name = self.settings["registry"]
        try:
            return import_module(name)
        except ModuleNotFoundError as exc:
            raise ConfigError(f"--evals-registry: cannot import program registry {name!r} ({exc})") from None

    @cached_property
    def registry(self) -> dict[str, Any]:
        """The PROGRAMS dict of the configured registry module."""
        return dict(self.registry_module.PROGRAMS)

    @cached_property
    def optimizer_classes(self) -> dict[str, Any]:
        """Optimizer classes the registry adds to dspy's (its ``OPTIMIZERS``)."""
        return dict(getattr(self.registry_module, "OPTIMIZERS", {}))

    @cached_property
    def optimizer_setup(self) -> OptimizerSetup:
        """The parsed optimizers file (configurations and evaluated pairs)."""
        return load_setup(self.settings.path("optimizers"), self.registry, self.optimizer_classes)

    @cached_property
    def policies(self) -> Policies:
        """thresholds.yaml, read and validated once: program limits and the gate policies."""
        return parse_policies(load_thresholds(self.settings.path("thresholds"), self.known_program_names()))

    @cached_property
    def loaded_dataset(self) -> SymptomDataset:
        from evals.data import load_dataset

        data_dir = self.settings["data-dir"]
        return load_dataset(self.settings.path("data-dir") if data_dir else None, seed=self.settings["seed"])

    @cached_property
    def dataset_manifest(self) -> dict[str, Any]:
        """The dataset's :meth:`~evals.data.SymptomDataset.manifest` (it hashes every split: once a session)."""
        return self.loaded_dataset.manifest()

    @cached_property
    def environment(self) -> dict[str, str]:
        """Git facts and package versions of the session (:func:`evals.environment.environment_params`)."""
        from evals.environment import environment_params

        return environment_params(self.settings.rootdir)

    @cached_property
    def sampled_examples(self) -> tuple[Example, ...]:
        """The sampled examples of the evaluated split (sampled once per process; every test reads it)."""
        from evals.data import sample

        split = self.loaded_dataset.split(self.settings["split"])
        return sample(split, self.settings["per-diagnosis"], seed=self.settings["seed"])

    @cached_property
    def lm(self) -> Any:
        """The LM, built once per process and made dspy's default, with the JSON adapter."""
        import dspy

        from evals.harness.runner import one_line
        from evals.lm.spec import build_lm, worker_threads

        workers = int(self.worker_input.get("workercount", 1)) if self.worker_input else 1
        # One response cache for all workers and sessions (diskcache is safe across processes); none on disk
        # with --evals-no-cache (a fresh one is 16 sqlite shards, ~0.7 s of the session's start, for nothing).
        dspy.configure_cache(
            enable_disk_cache=not self.settings["no-cache"], disk_cache_dir=str(self.settings.path("cache-dir") / "lm")
        )
        spec = self.lm_spec()
        try:
            lm = build_lm(
                spec,
                n_threads=worker_threads(workers),
                cache=not self.settings["no-cache"],
                cache_dir=self.settings.path("cache-dir"),
                server=self.lm_server,
                sharers=workers,
            )
            if hasattr(lm.engine, "llama"):
                lm.engine.llama  # noqa: B018 - load in-process models now: a bad file is one clear line, once
        except ConfigError:
            raise
        except Exception as exc:  # llama.cpp, mlx and litellm raise many types
            raise LMUnavailable(f"LM {spec.spec!r} cannot be loaded: {one_line(exc)}; check --evals-lm") from None
        dspy.configure(lm=lm, adapter=dspy.JSONAdapter())
        return lm

    # ----- the fixture's API (suites and user conftests call these) -----

    def dataset(self) -> SymptomDataset:
        return self.loaded_dataset

    def examples(self) -> tuple[Example, ...]:
        return self.sampled_examples

    def thresholds(self) -> Any:
        return self.policies.thresholds

    def program_names(self) -> list[str]:
        """The programs selected by ``--evals-programs`` (default: all registered plus configured pairs)."""
        setup = self.optimizer_setup
        chosen = self.settings["programs"] or (*self.registry, *setup.evaluate)
        for name in chosen:
            check_pair(name, self.registry, setup.optimizers, "--evals-programs")
        return list(dict.fromkeys(chosen))

    def known_program_names(self) -> list[str]:
        """Every name thresholds.yaml may configure: each program alone and with each optimizer."""
        bases = list(self.registry)
        optimizers = list(self.optimizer_setup.optimizers)
        return [*bases, *(f"{base}+{opt}" for base in bases for opt in optimizers)]

    def lm_spec(self) -> Any:
        """The LM spec (the same with --evals-lm-server: the session's server runs that model for every process)."""
        from evals.lm.spec import parse_lm_spec

        s = self.settings
        return parse_lm_spec(
            s["lm"],
            temperature=s["temperature"],
            max_tokens=s["max-tokens"],
            api_base=s["lm-api-base"],
            timeout_s=s["timeout"],
        )

    def program(self, name: str) -> Any:
        """The named program, built once per process; ``base+optimizer`` comes from the compile cache."""
        if name not in self._programs:
            base, optimizer = split_name(name)
            spec = self.registry[base]
            if optimizer is None:
                self._programs[name] = spec.build(self.dspy_examples("train"))
            else:
                self._programs[name] = self._compiled(name, spec, self.optimizer_setup.optimizers[optimizer])
        return self._programs[name]

    def dspy_examples(self, split: str, per_diagnosis: int | None = None) -> list[Any]:
        import dspy

        from evals.data import sample

        examples = sample(self.loaded_dataset.split(split), per_diagnosis, seed=self.settings["seed"])
        return [dspy.Example(symptoms=e.symptoms, diagnosis=e.diagnosis).with_inputs("symptoms") for e in examples]

    def _compiled(self, name: str, spec: Any, config: OptimizerConfig) -> Any:
        import dspy

        from evals.harness.compile_cache import get_or_compile
        from evals.harness.optimize import compile_program, empty_shape
        from evals.scoring import diagnosis_match

        trainset = self.dspy_examples("train", config.trainset_per_diagnosis)
        valset = self.dspy_examples("val", config.valset_per_diagnosis) if config.uses_valset else []
        # The LM the tests run on (the evals_lm fixture may be overridden, e.g. by a scripted LM).
        lm = dspy.settings.lm or self.lm
        full_train = self.dspy_examples("train")
        extra = self.optimizer_classes
        with self.one_call_slot():  # the optimizers here call the LM one call at a time
            module, event = get_or_compile(
                cache_dir=self.settings.path("cache-dir"),
                program=name,
                parts=self.compile_parts(spec, config, trainset, valset),
                empty=lambda: empty_shape(config, spec.build(full_train), trainset, extra),
                compile=lambda: compile_program(
                    config,
                    spec.build(full_train),
                    trainset,
                    valset,
                    diagnosis_match,
                    extra,
                    progress=self.compile_sink,
                    name=name,
                ),
                count_lm_calls=lambda: len(lm.history),
                session_id=self.session_id,
                recompile=self.settings["recompile"],
            )
        self.compile_events.append(event)
        return module

    def compile_parts(
        self, spec: Any, config: OptimizerConfig, trainset: list[Any], valset: list[Any]
    ) -> dict[str, str]:
        """Everything that changes a compiled program, readable (hashed into the cache key)."""
        from importlib.metadata import version

        from evals.config.optimizers import optimizer_class
        from evals.data import fingerprint
        from evals.harness.compile_cache import source_hash
        from evals.scoring import diagnosis_match

        def fp(examples: list[Any]) -> str:
            return fingerprint(Example(str(i), e.symptoms, e.diagnosis) for i, e in enumerate(examples))

        # The optimizer code: the harness's, and the modules of a registry's own optimizer class.
        own = optimizer_class(config.cls, self.optimizer_classes).__mro__
        modules = dict.fromkeys(c.__module__ for c in own if not c.__module__.startswith(("dspy", "builtins")))
        sources = ["evals.config.optimizers", "evals.harness.optimize", *modules]
        return {
            "program": spec.name,
            "program_source": spec.source_hash(),
            "optimizer": config.name,
            "optimizer_config": config.fingerprint(),
            "optimizer_source": source_hash(*sources),
            "trainset": fp(trainset),
            "valset": fp(valset),
            "lm": self.lm_spec().cache_key(),
            "dspy": version("dspy"),
            "metric": source_hash(diagnosis_match),
        }

    # ----- concurrent evaluation (evals.harness.evaluations) -----

    @property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(budget_s=self.settings["example-budget"], call_timeout_s=self.settings["timeout"])

    def examples_of(self, diagnosis: str) -> list[Example]:
        return [e for e in self.sampled_examples if e.diagnosis == diagnosis]

    def uses_lm(self, name: str) -> bool:
        """False for a reference program (no LM call)."""
        return not self.registry[split_name(name)[0]].reference

    def start_evaluations(self, session: pytest.Session) -> Evaluations:
        """The process's evaluations (``--evals-concurrency``), made at its first eval test."""
        if self.evaluations is None:
            from evals.harness.evaluations import Evaluations, concurrency_for
            from evals.harness.prefetch import SequentialLookahead, XdistLookahead, find_xdist_interactor

            slots = self.worker_input.get("evals_slots_dir") if self.worker_input else None
            try:
                backend = self.lm_spec().backend
            except ConfigError:  # reported once, as a usage error, where the session's params are read
                backend = "unknown"
            concurrency = concurrency_for(self.settings["concurrency"], backend, Path(slots) if slots else None)
            interactor = find_xdist_interactor(session.config.pluginmanager.get_plugins())
            # A worker whose queue cannot be read (another xdist) plans nothing ahead: its tests are not all its own.
            ahead = session.items if self.worker_input is None else []
            lookahead = XdistLookahead(interactor, session.items) if interactor else SequentialLookahead(ahead)
            self.evaluations = Evaluations(self, concurrency, lookahead, session.items, on_tick=lambda: self.on_tick())
        return self.evaluations

    def stop_evaluations(self) -> None:
        """Cancel the examples not started (the session ends or stops)."""
        if self.evaluations is not None:
            self.evaluations.close()

    def one_call_slot(self) -> AbstractContextManager[Any]:
        """Hold one of the session's call slots (for LM calls made outside the runner, like a compile)."""
        from evals.harness.limiter import Limiter

        gate = self.evaluations.gate if self.evaluations is not None else None
        return gate.hold() if isinstance(gate, Limiter) else nullcontext()

    # ----- one test -----

    def evaluate(self, program: str, diagnosis: str, item: Any = None) -> DiagnosisOutcome:
        """Run ``program`` on the sampled examples of ``diagnosis`` and check its recall floor.

        With the process's evaluations started and the test's ``item``, the records come from them
        (evaluated ahead, concurrently); else the examples run here, one at a time.
        A diagnosis with no example in the sample skips its test (nothing to measure is no pass).
        """
        from evals.gates.thresholds import diagnosis_failure
        from evals.harness.runner import run_examples

        examples = self.examples_of(diagnosis)
        if not examples:
            pytest.skip(f"no examples of {diagnosis!r} in the {self.settings['split']} sample")
        if self.evaluations is not None and item is not None:
            records = self.evaluations.records(item, program, diagnosis)
        else:
            records = run_examples(self.program(program), program, examples, retry=self.retry)
        if self.uses_lm(program):  # a reference program makes no LM call
            try:
                self._check_lm_alive(records)
            except LMUnavailable:
                self.stop_evaluations()
                raise
        correct = sum(record.correct for record in records)
        limits = self.policies.thresholds.for_program(program)
        failure = diagnosis_failure(program, diagnosis, correct, len(records), limits)
        return DiagnosisOutcome(program, diagnosis, tuple(records), failure)

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

        from evals.harness.limiter import UNLIMITED
        from evals.harness.runner import run_one
        from evals.stats.robustness import StabilityRecord

        module = self.program(program)
        gate = self.evaluations.gate if self.evaluations is not None else UNLIMITED
        original = run_one(module, program, example, gate=gate, retry=self.retry)
        perturbed = run_one(module, program, replace(example, symptoms=text), gate=gate, retry=self.retry)
        return StabilityRecord(
            program,
            example.id,
            example.diagnosis,
            perturbations,
            original.predicted,
            perturbed.predicted,
            perturbed.error or original.error,
        )
