"""Compile progress: what a running optimizer has done so far, shown while it runs.

A compile is tracked through hooks that do not depend on any log format: dspy's callbacks
(every ``Evaluate`` call's score: a MIPROv2 trial or a random-search candidate; every LM
call), GEPA's own callbacks (metric calls used of its budget, each validation score), and the
metric the harness hands the optimizer (counted: a BootstrapFewShot example). A
:class:`Tracker` counts; :func:`watching` refreshes a :class:`CompileSink` from it while the
compile runs and gives it the final reading at the end; the sinks of a session are in
:mod:`evals.harness.compile_sinks`.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Protocol

TICK_S = 0.25
"""How often a running compile's reading is taken (each sink throttles what it shows)."""
RANDOM_SEARCH_BASELINES = 3
"""Candidates BootstrapFewShotWithRandomSearch evaluates besides its random ones (zero-shot, labels, unshuffled)."""


@dataclass(frozen=True)
class CompileReading:
    """One reading of a compile.

    Attributes:
        program: The compiled pair (``zero_shot+miprov2_light``).
        optimizer: The optimizer class (``MIPROv2``).
        unit: What ``done`` counts: ``trials``, ``metric calls``, ``candidates`` or ``examples``.
        done: Units done so far.
        total: Units the optimizer plans (None: unknown).
        best: Best validation score so far, 0-1 (None: none yet, or the optimizer keeps none).
        lm_calls: LM calls made by the compile so far.
        elapsed_s: Seconds since the compile started.
        state: ``running``, ``compiled`` or ``failed``.
        compile_id: Tells two compiles of one process apart (in progress files).
    """

    program: str
    optimizer: str
    unit: str
    done: int
    total: int | None
    best: float | None
    lm_calls: int
    elapsed_s: float
    state: str = "running"
    compile_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CompileReading:
        return cls(**{key: data[key] for key in cls.__dataclass_fields__})


def compile_line(reading: CompileReading) -> str:
    """The line of a reading.

    ``evals: compiling zero_shot+miprov2_light (MIPROv2): 3/11 trials, best 0.591, 41 LM calls, 1:02`` while
    it runs; ``evals: compiled zero_shot+miprov2_light (MIPROv2) in 83.2 s: 11/11 trials, best 0.682,
    212 LM calls`` at the end (``compiling ... failed after 12.0 s: ...`` when it raised).
    """
    counted = f"{reading.done}/{reading.total}" if reading.total is not None else str(reading.done)
    parts = [f"{counted} {reading.unit}"]
    if reading.best is not None:
        parts.append(f"best {reading.best:.3f}")
    parts.append(f"{reading.lm_calls} LM calls")
    what = f"{reading.program} ({reading.optimizer})"
    if reading.state == "running":
        minutes, seconds = divmod(int(reading.elapsed_s), 60)
        return f"evals: compiling {what}: {', '.join(parts)}, {minutes}:{seconds:02d}"
    if reading.state == "failed":
        return f"evals: compiling {what} failed after {reading.elapsed_s:.1f} s: {', '.join(parts)}"
    return f"evals: compiled {what} in {reading.elapsed_s:.1f} s: {', '.join(parts)}"


def worth_a_line(reading: CompileReading) -> bool:
    """Whether an ended compile gets its summary line: one that called an LM, took a second, or failed.

    An instant one (LabeledFewShot, KNNFewShot) stays as quiet as a compile-cache hit.
    """
    return reading.state == "failed" or reading.lm_calls > 0 or reading.elapsed_s >= 1.0


class Tracker:
    """Counts of one running compile, fed from any thread by the hooks below.

    Args:
        unit: What is counted as done (see :class:`CompileReading`); :meth:`planned` may set it later.
        total: Units planned (None: unknown).
    """

    def __init__(self, unit: str = "metric calls", total: int | None = None) -> None:
        self._lock = threading.Lock()
        self.unit, self.total = unit, total
        self.done = self.lm_calls = self.metric_calls = 0
        self.best: float | None = None
        self._full_size: int | None = None

    def planned(self, unit: str, total: int | None) -> None:
        """What the optimizer will do, known once it is built (:func:`plan`)."""
        with self._lock:
            self.unit, self.total = unit, total

    def metric_called(self) -> None:
        """The harness's metric scored one example (a BootstrapFewShot example when the unit is ``examples``)."""
        with self._lock:
            self.metric_calls += 1
            if self.unit == "examples":
                self.done += 1

    def evaluated(self, score: float, size: int) -> None:
        """An ``Evaluate`` call ended: ``score`` 0-1 over ``size`` examples (a trial or a candidate).

        The first evaluation is of the whole validation set (MIPROv2's default program, random
        search's zero-shot candidate); only evaluations of that size count for the best score
        (MIPROv2's minibatch scores do not).
        """
        with self._lock:
            if self.unit not in ("trials", "candidates"):
                return
            self.done += 1
            if self._full_size is None:
                self._full_size = size
            if size >= self._full_size:
                self.best = score if self.best is None else max(self.best, score)

    def budget_used(self, used: int, remaining: int | None) -> None:
        """GEPA counted its metric calls: ``used`` so far, ``remaining`` of its budget."""
        with self._lock:
            if self.unit == "metric calls":
                self.done = used
                if remaining:  # none left: the budget stays as planned (GEPA may end a few calls past it)
                    self.total = used + remaining

    def validated(self, score: float) -> None:
        """GEPA scored a candidate on the validation set (average 0-1)."""
        with self._lock:
            self.best = score if self.best is None else max(self.best, score)

    def lm_called(self) -> None:
        with self._lock:
            self.lm_calls += 1

    def reading(self, program: str, optimizer: str, elapsed_s: float, state: str = "running") -> CompileReading:
        with self._lock:
            total, done, best, calls = self.total, self.done, self.best, self.lm_calls
        return CompileReading(program, optimizer, self.unit, done, total, best, calls, elapsed_s, state)


# ----- what each optimizer plans, and the hooks that count it -----


def plan(
    config: Any, optimizer: Any, student: Any, trainset: Sequence[Any], valset: Sequence[Any]
) -> tuple[str, int | None]:
    """What to count of ``optimizer`` (built from ``config``) and the total it plans: ``(unit, total)``.

    MIPROv2: evaluations of candidate programs (the default program plus ``num_trials``, dspy's own
    count for an ``auto`` setting); GEPA: metric calls of its budget; random search: its candidates;
    BootstrapFewShot: training examples. Any other optimizer: metric calls, no total. A total that
    cannot be worked out (another dspy) is None: progress is shown, not gated on.
    """
    cls = config.cls
    try:
        if cls == "MIPROv2":
            return "trials", _mipro_trials(config, optimizer, student, trainset, valset)
        if cls == "GEPA":
            return "metric calls", _gepa_budget(optimizer, student, trainset, valset)
        if cls == "BootstrapFewShotWithRandomSearch":
            return "candidates", int(optimizer.num_candidate_sets) + RANDOM_SEARCH_BASELINES
    except (AttributeError, ImportError, KeyError, TypeError, ValueError):
        return ("metric calls" if cls == "GEPA" else "trials" if cls == "MIPROv2" else "candidates"), None
    if cls == "BootstrapFewShot":
        return "examples", len(trainset)
    return "metric calls", None


def _mipro_trials(
    config: Any, optimizer: Any, student: Any, trainset: Sequence[Any], valset: Sequence[Any]
) -> int | None:
    """Evaluations MIPROv2 runs: the default program and each trial (and the full ones between minibatches)."""
    from dspy.teleprompt.mipro_optimizer_v2 import AUTO_RUN_SETTINGS, MIN_MINIBATCH_SIZE

    args = config.compile_args
    minibatch = bool(args.get("minibatch", True))
    trials = args.get("num_trials")
    valsize = len(valset) or max(1, int(len(trainset) * 0.8))
    if optimizer.auto is not None:
        bootstrapped = args.get("max_bootstrapped_demos", optimizer.max_bootstrapped_demos)
        labeled = args.get("max_labeled_demos", optimizer.max_labeled_demos)
        settings = AUTO_RUN_SETTINGS[optimizer.auto]
        count = getattr(optimizer, "_set_num_trials_from_num_candidates", None)
        if count is None:
            return None
        trials = count(student, bootstrapped == 0 and labeled == 0, settings["n"])
        minibatch = min(valsize, settings["val_size"]) > MIN_MINIBATCH_SIZE
    if not isinstance(trials, int):
        return None
    if not minibatch:
        return trials + 1
    steps = int(args.get("minibatch_full_eval_steps", 5))
    return trials + trials // steps + 1 + (1 if trials % steps else 0)


def _gepa_budget(optimizer: Any, student: Any, trainset: Sequence[Any], valset: Sequence[Any]) -> int | None:
    """GEPA's ``max_metric_calls``, as its compile computes it (its callbacks correct it as it runs)."""
    if optimizer.max_metric_calls is not None:
        return int(optimizer.max_metric_calls)
    if optimizer.max_full_evals is not None:
        return int(optimizer.max_full_evals) * (len(trainset) + len(valset))
    if optimizer.auto is not None:
        from dspy.teleprompt.mipro_optimizer_v2 import AUTO_RUN_SETTINGS

        return int(
            optimizer.auto_budget(
                num_preds=max(len(student.predictors()), 1),
                num_candidates=AUTO_RUN_SETTINGS[optimizer.auto]["n"],
                valset_size=len(valset) or len(trainset),
            )
        )
    return None


def counting_metric(metric: Callable[..., Any], tracker: Tracker) -> Callable[..., Any]:
    """``metric`` that tells ``tracker`` of each call (what it returns is the metric's)."""

    def counted(*args: Any, **kwargs: Any) -> Any:
        try:
            return metric(*args, **kwargs)
        finally:
            tracker.metric_called()

    return counted


class GepaProgress:
    """GEPA's callbacks (``gepa_kwargs={"callbacks": [...]}``): its budget used and its validation scores."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker

    def on_budget_updated(self, event: Mapping[str, Any]) -> None:
        self.tracker.budget_used(int(event["metric_calls_used"]), event.get("metric_calls_remaining"))

    def on_valset_evaluated(self, event: Mapping[str, Any]) -> None:
        self.tracker.validated(float(event["average_score"]))


def gepa_callbacks_supported() -> bool:
    """Whether the installed ``gepa.optimize`` takes callbacks (GEPA progress shows its budget only then)."""
    import inspect

    from gepa import optimize

    return "callbacks" in inspect.signature(optimize).parameters


@contextmanager
def dspy_hooks(tracker: Tracker) -> Iterator[None]:
    """Within: each ``Evaluate`` call's score and each LM call reach ``tracker`` (dspy callbacks, added to any set)."""
    import dspy
    from dspy.utils.callback import BaseCallback

    class Hooks(BaseCallback):
        def on_evaluate_end(self, call_id: str, outputs: Any | None, exception: BaseException | None = None) -> None:
            if exception is None and outputs is not None:
                tracker.evaluated(float(outputs.score) / 100, len(outputs.results))  # dspy scores are 0-100

        def on_lm_end(self, call_id: str, outputs: Any | None, exception: BaseException | None = None) -> None:
            tracker.lm_called()

    with dspy.context(callbacks=[*(dspy.settings.get("callbacks") or []), Hooks()]):
        yield


@contextmanager
def counting_lm_calls() -> Iterator[Callable[[], int]]:
    """Within: every LM call is counted (any LM, copies included); yields the count so far."""
    tracker = Tracker()
    with dspy_hooks(tracker):
        yield lambda: tracker.lm_calls


# ----- while it runs -----


class CompileSink(Protocol):
    """Where a compile's readings go: ``show`` while it runs (call as often as you like), ``finish`` once."""

    def show(self, reading: CompileReading) -> None: ...

    def finish(self, reading: CompileReading) -> None: ...


@contextmanager
def watching(
    sink: CompileSink | None,
    tracker: Tracker,
    program: str,
    optimizer: str,
    *,
    clock: Callable[[], float] = time.monotonic,
    tick_s: float | None = None,
) -> Iterator[Tracker]:
    """Show ``tracker``'s readings on ``sink`` every ``tick_s`` (:data:`TICK_S`) seconds, on a thread, during the block.

    The final reading (``compiled``, or ``failed`` when the block raises) goes to ``sink.finish``.
    """
    if sink is None:
        yield tracker
        return
    started, compile_id, stop = clock(), uuid.uuid4().hex[:12], threading.Event()

    def reading(state: str = "running") -> CompileReading:
        taken = tracker.reading(program, optimizer, clock() - started, state)
        return CompileReading(**{**taken.to_dict(), "compile_id": compile_id})

    def tick() -> None:
        while not stop.wait(TICK_S if tick_s is None else tick_s):
            try:
                sink.show(reading())
            except Exception:  # noqa: BLE001 - a terminal gone or a file not writable: the compile goes on unshown
                continue

    thread = threading.Thread(target=tick, name="evals-compile-progress", daemon=True)
    thread.start()
    state = "failed"
    try:
        yield tracker
        state = "compiled"
    finally:
        stop.set()
        thread.join()
        try:
            sink.finish(reading(state))
        except Exception:  # noqa: BLE001 - the summary line is not worth a compile (or hiding its error)
            pass
