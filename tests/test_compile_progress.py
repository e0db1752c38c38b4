"""Compile progress: the readings of a running optimizer, their sinks, and the lines a session shows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import evals.harness.compile_progress as compile_progress
from evals.config.optimizers import OptimizerConfig, load_setup
from evals.errors import ConfigError
from evals.harness.compile_progress import CompileReading, Tracker, compile_line
from evals.harness.compile_sinks import CompileWatcher, FileSink, TerminalSink, stream_sink
from evals.harness.optimize import compile_program
from evals.harness.progress import CLEAR_TO_END, TerminalWriters, progress_interval
from tests.test_optimizers import (
    CONFIG_FILE,
    MAGIC,
    PROGRAMS,
    _examples,
    _gold,
    _instruction_following_lm,
    with_optimizers,
)


def reading(**changes: Any) -> CompileReading:
    fields: dict[str, Any] = {
        "program": "zero_shot+miprov2_light",
        "optimizer": "MIPROv2",
        "unit": "trials",
        "done": 3,
        "total": 11,
        "best": 0.5909,
        "lm_calls": 41,
        "elapsed_s": 62.4,
        "compile_id": "c1",
    }
    return CompileReading(**{**fields, **changes})


# ----- the lines -----


def test_compile_line_while_running_and_at_the_end() -> None:
    assert compile_line(reading()) == (
        "evals: compiling zero_shot+miprov2_light (MIPROv2): 3/11 trials, best 0.591, 41 LM calls, 1:02"
    )
    assert compile_line(reading(state="compiled", done=11, elapsed_s=83.25, lm_calls=212)) == (
        "evals: compiled zero_shot+miprov2_light (MIPROv2) in 83.2 s: 11/11 trials, best 0.591, 212 LM calls"
    )
    assert compile_line(reading(state="failed", best=None, elapsed_s=12)) == (
        "evals: compiling zero_shot+miprov2_light (MIPROv2) failed after 12.0 s: 3/11 trials, 41 LM calls"
    )
    unknown = reading(optimizer="Mine", unit="metric calls", done=7, total=None, best=None, elapsed_s=5)
    assert compile_line(unknown) == "evals: compiling zero_shot+miprov2_light (Mine): 7 metric calls, 41 LM calls, 0:05"


def test_reading_round_trips_through_a_dict() -> None:
    assert CompileReading.from_dict(json.loads(json.dumps(reading().to_dict()))) == reading()


# ----- the tracker -----


def test_trials_count_evaluations_and_only_full_ones_set_the_best() -> None:
    tracker = Tracker("trials", 11)
    tracker.metric_called()  # bootstrapping demos: no trial
    tracker.evaluated(0.25, 22)  # the default program, on the whole validation set
    tracker.evaluated(0.9, 5)  # a minibatch: a trial, but not a best score
    tracker.evaluated(0.5, 22)
    tracker.lm_called()

    taken = tracker.reading("p", "MIPROv2", 1.0)
    assert (taken.done, taken.total, taken.best, taken.lm_calls) == (3, 11, 0.5, 1)
    assert tracker.metric_calls == 1


def test_gepa_budget_and_validation_scores() -> None:
    tracker = Tracker("metric calls", 100)
    tracker.evaluated(1.0, 3)  # GEPA's own Evaluate calls are not what it counts
    tracker.budget_used(22, 78)
    tracker.validated(0.05)
    tracker.budget_used(101, 0)  # past its budget: the total stays the budget
    tracker.validated(0.02)

    taken = tracker.reading("p", "GEPA", 1.0)
    assert (taken.done, taken.total, taken.best) == (101, 100, 0.05)


def test_examples_count_metric_calls() -> None:
    tracker = Tracker()
    tracker.planned("examples", 22)
    for _ in range(4):
        tracker.metric_called()
    assert tracker.reading("p", "BootstrapFewShot", 1.0).done == 4


# ----- the sinks -----


class Screen:
    def __init__(self, tty: bool, columns: int = 60) -> None:
        self.raw: list[str] = []
        self.lines: list[str] = []
        self.fresh = 0
        self.writers = TerminalWriters(
            raw=self.raw.append,
            line=self.lines.append,
            fresh_line=self.new_line,
            room=lambda: None,
            columns=lambda: columns,
            tty=tty,
        )

    def new_line(self) -> None:
        self.fresh += 1


def test_plain_terminal_writes_a_line_per_period_then_the_summary() -> None:
    screen = Screen(tty=False)
    sink = TerminalSink(screen.writers, every_s=30)
    for elapsed in (0.25, 10, 29.9):
        sink.show(reading(elapsed_s=elapsed))
    assert screen.lines == []  # a short compile prints no progress line
    sink.show(reading(elapsed_s=30.1))
    sink.show(reading(elapsed_s=45))
    sink.show(reading(elapsed_s=60.2, done=5))
    sink.finish(reading(elapsed_s=70, done=11, state="compiled"))

    assert screen.lines == [
        compile_line(reading(elapsed_s=30.1)),
        compile_line(reading(elapsed_s=60.2, done=5)),
        compile_line(reading(elapsed_s=70, done=11, state="compiled")),
    ]
    assert screen.raw == []


def test_a_tty_gets_one_live_line_rewritten_in_place_then_erased_and_the_summary() -> None:
    screen = Screen(tty=True, columns=60)
    sink = TerminalSink(screen.writers, every_s=30, tty_every_s=0.5)
    sink.show(reading(elapsed_s=0.25, done=0))
    sink.show(reading(elapsed_s=0.5))  # too soon
    sink.show(reading(elapsed_s=0.8, done=1))
    assert screen.fresh == 1  # the live line stands on a line of its own
    # First the example progress shown in place after pytest's dots is erased, then the line twice.
    assert screen.raw[0] == CLEAR_TO_END and len(screen.raw) == 3 and screen.lines == []
    for text in screen.raw[1:]:
        assert text.startswith("\revals: compiling zero_shot+miprov2_li") and text.endswith(CLEAR_TO_END)
        assert len(text) - len("\r" + CLEAR_TO_END) <= 59  # cut to the terminal's width
    sink.finish(reading(elapsed_s=1.0, done=11, state="compiled"))

    assert screen.raw[-2:] == ["\r" + CLEAR_TO_END, CLEAR_TO_END]
    assert screen.lines == [compile_line(reading(elapsed_s=1.0, done=11, state="compiled"))]


def test_an_instant_compile_without_lm_calls_ends_quietly() -> None:
    screen = Screen(tty=False)
    sink = TerminalSink(screen.writers, every_s=30)
    sink.finish(reading(optimizer="LabeledFewShot", lm_calls=0, elapsed_s=0.01, state="compiled"))
    assert screen.lines == []
    sink.finish(reading(lm_calls=0, elapsed_s=0.01, state="failed"))
    assert len(screen.lines) == 1


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_controller_prints_workers_compiles_from_their_files(tmp_path: Path) -> None:
    clock, lines = Clock(), []
    gw0, gw1 = FileSink(tmp_path, "gw0", clock=clock), FileSink(tmp_path, "gw1", clock=clock)
    watcher = CompileWatcher(tmp_path, lines.append, every_s=30, clock=clock)
    (tmp_path / "progress-gw0.json").write_text("{}")  # the example progress file is not a compile's
    (tmp_path / "compile-gw9.json").write_text("{not json")  # half written: skipped this time

    gw0.show(reading(elapsed_s=1))
    watcher.poll()
    assert lines == []  # first seen: nothing yet
    clock.now += 10
    gw0.show(reading(elapsed_s=11, done=4))
    watcher.poll()
    assert lines == []
    clock.now += 21
    gw0.show(reading(elapsed_s=32, done=6))
    gw1.show(reading(program="zero_shot+gepa", compile_id="c2", elapsed_s=1))
    watcher.poll()
    assert lines == [compile_line(reading(elapsed_s=32, done=6))]
    gw0.finish(reading(elapsed_s=40, done=11, state="compiled"))
    watcher.poll()
    watcher.poll()
    assert lines[1:] == [compile_line(reading(elapsed_s=40, done=11, state="compiled"))]  # once
    gw0.show(reading(compile_id="c3", program="zero_shot+other", elapsed_s=0.3))  # the worker's next compile
    gw0.finish(reading(compile_id="c3", program="zero_shot+other", elapsed_s=2, state="compiled"))
    gw1.finish(reading(program="zero_shot+gepa", compile_id="c2", elapsed_s=3, state="compiled"))
    watcher.stop()
    assert sorted(lines[2:]) == [  # both ends, though gw0 began its next compile before the controller looked
        compile_line(reading(program="zero_shot+gepa", compile_id="c2", elapsed_s=3, state="compiled")),
        compile_line(reading(compile_id="c3", program="zero_shot+other", elapsed_s=2, state="compiled")),
    ]


def test_a_file_sink_writes_at_most_once_a_period_but_always_the_end(tmp_path: Path) -> None:
    clock = Clock()
    sink = FileSink(tmp_path, "gw0", every_s=1.0, clock=clock)
    path = tmp_path / "compile-gw0-c1.json"
    sink.show(reading(done=1))
    clock.now += 0.5
    sink.show(reading(done=2))
    assert CompileReading.from_dict(json.loads(path.read_text())).done == 1
    sink.finish(reading(done=11, state="compiled"))
    assert CompileReading.from_dict(json.loads(path.read_text())).state == "compiled"
    assert [p.name for p in tmp_path.iterdir()] == ["compile-gw0-c1.json"]  # no temp file left behind


def test_a_script_shows_a_compile_on_its_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    monkeypatch.setenv("EVALS_PROGRESS_INTERVAL", "10")
    stream = io.StringIO()
    sink = stream_sink(stream)  # StringIO is no tty: periodic lines
    sink.show(reading(elapsed_s=5))
    sink.show(reading(elapsed_s=10.5))
    sink.finish(reading(elapsed_s=12, state="compiled"))
    assert stream.getvalue().splitlines() == [
        compile_line(reading(elapsed_s=10.5)),
        compile_line(reading(elapsed_s=12, state="compiled")),
    ]


def test_progress_interval_from_the_environment() -> None:
    assert progress_interval({}) == 30.0
    assert progress_interval({"EVALS_PROGRESS_INTERVAL": "0.5"}) == 0.5
    for bad in ("0", "-3", "soon", "nan"):
        with pytest.raises(ConfigError, match=f"EVALS_PROGRESS_INTERVAL: expected .* found '{bad}'"):
            progress_interval({"EVALS_PROGRESS_INTERVAL": bad})


# ----- real compiles on a scripted LM -----


class Recorder:
    """A sink that keeps every reading."""

    def __init__(self) -> None:
        self.shown: list[CompileReading] = []
        self.finished: list[CompileReading] = []

    def show(self, reading: CompileReading) -> None:
        self.shown.append(reading)

    def finish(self, reading: CompileReading) -> None:
        self.finished.append(reading)


def _compile(name: str, data_dir: Path, sink: Any, config: OptimizerConfig | None = None) -> Any:
    import dspy

    from evals.scoring import diagnosis_match

    config = config or load_setup(CONFIG_FILE, PROGRAMS).optimizers[name]
    trainset = _examples("train", config.trainset_per_diagnosis or 99, data_dir)
    valset = _examples("val", config.valset_per_diagnosis or 99, data_dir)
    lm = _instruction_following_lm(_gold(data_dir))
    with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
        student = PROGRAMS["zero_shot"].build(trainset)
        return compile_program(
            config, student, trainset, valset, diagnosis_match, progress=sink, name=f"zero_shot+{name}"
        )


@pytest.fixture
def fast_ticks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compile_progress, "TICK_S", 0.005)


def test_a_miprov2_compile_reports_its_trials_up_to_the_total_and_a_best_score(
    tiny_data_dir: Path, fast_ticks: None
) -> None:
    sink = Recorder()
    compiled = _compile("miprov2_light", tiny_data_dir, sink)

    assert MAGIC in compiled.signature.instructions  # tracking changed nothing the optimizer found
    # auto: light with demos: dspy plans 10 trials; with the default program's evaluation, 11.
    assert {r.total for r in [*sink.shown, *sink.finished]} == {11}
    done = [r.done for r in sink.shown]
    assert done == sorted(done) and any(0 < d < 11 for d in done), done
    assert all(r.state == "running" and r.unit == "trials" for r in sink.shown)
    (final,) = sink.finished
    assert (final.state, final.done, final.total, final.best) == ("compiled", 11, 11, 1.0)
    assert final.lm_calls > 11 and final.program == "zero_shot+miprov2_light" and final.optimizer == "MIPROv2"
    assert len({r.compile_id for r in [*sink.shown, *sink.finished]}) == 1


def test_a_gepa_compile_reports_metric_calls_of_its_budget(tiny_data_dir: Path, fast_ticks: None) -> None:
    sink = Recorder()
    _compile("gepa", tiny_data_dir, sink)

    (final,) = sink.finished
    assert final.unit == "metric calls" and final.total == 100  # max_metric_calls in optimizers.yaml
    assert final.done >= 100 and final.best == 1.0


def test_bootstrap_optimizers_report_examples_and_candidates(tiny_data_dir: Path) -> None:
    sinks = {name: Recorder() for name in ("bootstrap_few_shot", "bootstrap_random_search")}
    for name, sink in sinks.items():
        _compile(name, tiny_data_dir, sink)

    (boot,) = sinks["bootstrap_few_shot"].finished
    assert (boot.unit, boot.total) == ("examples", 22) and 0 < boot.done <= 22
    (search,) = sinks["bootstrap_random_search"].finished
    assert (search.unit, search.done, search.total) == ("candidates", 5, 5)  # 2 random + 3 baselines
    assert search.best is not None


def test_a_failing_compile_ends_its_progress_as_failed(tiny_data_dir: Path) -> None:
    sink = Recorder()
    broken = OptimizerConfig("broken", "MIPROv2", {"auto": "light"}, {"num_trials": 3})  # dspy refuses both
    with pytest.raises(ValueError, match="num_trials"):
        _compile("broken", tiny_data_dir, sink, config=broken)
    (final,) = sink.finished
    assert final.state == "failed"


def test_the_compile_cache_counts_the_calls_of_lm_copies(tmp_path: Path) -> None:
    """MIPROv2 proposes with a copy of the LM, which keeps its own history: dspy's callbacks count those calls."""
    import dspy
    from dspy.utils.dummies import DummyLM

    from evals.harness.compile_cache import get_or_compile

    lm = DummyLM([{"answer": "x"}] * 10, adapter=dspy.JSONAdapter())

    def compile() -> Any:
        predict = dspy.Predict("question -> answer")
        with dspy.context(lm=lm.copy(temperature=0.7), adapter=dspy.JSONAdapter()):
            predict(question="q1")
            predict(question="q2")
        lm("one call on the session's LM itself")
        return predict

    _, event = get_or_compile(
        cache_dir=tmp_path,
        program="p+o",
        parts={"program": "p"},
        empty=lambda: dspy.Predict("question -> answer"),
        compile=compile,
        count_lm_calls=lambda: len(lm.history),
        session_id="s",
    )
    assert len(lm.history) == 1 and event.lm_calls == 3


# ----- sessions -----

LM_CONFTEST = '''
import re

import pytest

MAGIC = "Name the diagnosis these symptoms point to."


@pytest.fixture(scope="session")
def evals_lm(evals_session):
    """Answers every signature; the gold diagnosis only under an instruction containing MAGIC."""
    import dspy
    from dspy.clients.engines.dummy_engine import DummyEngine
    from dspy.lm15 import Message, Response, TextPart, Usage
    from dspy.utils.dummies import DummyLM

    from evals.labels import DIAGNOSES

    data = evals_session.dataset()
    gold = {e.symptoms: e.diagnosis for split in ("train", "val", "test") for e in data.split(split)}

    class Engine(DummyEngine):
        def _complete_messages(self, messages):
            system, last = messages[0]["content"], messages[-1]["content"]
            declared = system.split("Your output fields are:")[-1].split("All interactions")[0]
            answer = {}
            for name in re.findall(r"^\\d+\\. `(\\w+)`", declared, flags=re.MULTILINE):
                if name == "diagnosis":
                    symptoms = re.search(r"\\[\\[ ## symptoms ## \\]\\]\\n(.*?)\\n\\n", last, flags=re.DOTALL).group(1)
                    right = gold[symptoms]
                    answer[name] = right if MAGIC in system else DIAGNOSES[(DIAGNOSES.index(right) + 1) % 22]
                else:
                    answer[name] = MAGIC if "instruction" in name else "scripted"
            return Response(id=None, model="dummy", message=Message.assistant([TextPart(
                self.owner._format_answer_fields(answer))]), finish_reason="stop",
                usage=Usage(input_tokens=0, output_tokens=0, total_tokens=0))

    class InstructionFollowingLM(DummyLM):
        def __init__(self):
            super().__init__({}, adapter=dspy.JSONAdapter())
            self._engine_spec = Engine(self)

        def copy(self, **kwargs):
            copied = super().copy(**kwargs)
            copied._engine_spec = Engine(copied)
            return copied

    lm = InstructionFollowingLM()
    dspy.configure(lm=lm, adapter=dspy.JSONAdapter())
    return lm
'''

MIPRO_YAML = """
optimizers:
  mipro:
    class: MIPROv2
    params: {auto: light, max_bootstrapped_demos: 1, max_labeled_demos: 1, num_threads: 1}
    trainset_per_diagnosis: 1
    valset_per_diagnosis: 1
evaluate: []
"""


@pytest.fixture
def mipro_project(eval_project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """eval_project compiling zero_shot with MIPROv2 on the scripted LM, progress every 0.05 s."""
    monkeypatch.setenv("EVALS_PROGRESS_INTERVAL", "0.05")
    return with_optimizers(eval_project, MIPRO_YAML, LM_CONFTEST, programs="zero_shot+mipro")


COMPILING = "evals: compiling zero_shot+mipro (MIPROv2): */11 trials, *LM calls, 0:0*"
COMPILED = "evals: compiled zero_shot+mipro (MIPROv2) in * s: 11/11 trials, best 1.000, * LM calls"


def run(project: pytest.Pytester, *args: str) -> pytest.RunResult:
    result = project.runpytest_subprocess(*args, "-p", "no:cacheprovider")
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    return result


def test_plain_pytest_shows_the_compile_and_a_cache_hit_shows_nothing(mipro_project: pytest.Pytester) -> None:
    result = run(mipro_project, "-n", "0")

    result.stdout.fnmatch_lines([COMPILING, COMPILED])
    (summary,) = [line for line in result.outlines if line.startswith("evals: compiled ")]
    calls = summary.rsplit(", ", 1)[1].split()[0]  # the session's compile table counts the same calls
    result.stdout.fnmatch_lines([f"zero_shot+mipro: compiled (* s, {calls} LM calls; key *"])

    again = run(mipro_project, "-n", "0")

    assert not [line for line in again.outlines if line.startswith("evals: compil")], again.stdout.str()
    again.stdout.fnmatch_lines(["*zero_shot+mipro: loaded from cache*"])


def test_xdist_workers_compile_shows_on_the_controller(mipro_project: pytest.Pytester) -> None:
    result = run(mipro_project, "-n", "2")

    # One worker compiles (the other waits for the cache entry): its file, printed by the controller.
    result.stdout.fnmatch_lines([COMPILING, COMPILED])
    assert len([line for line in result.outlines if line.startswith("evals: compiled ")]) == 1


def test_a_broken_display_never_costs_the_compile(tiny_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sink whose writes fail (a closed terminal) and a plan that cannot be read: the program still compiles."""
    import evals.harness.compile_progress as compile_progress

    class Broken(Recorder):
        def show(self, reading: CompileReading) -> None:
            raise BrokenPipeError("terminal gone")

        def finish(self, reading: CompileReading) -> None:
            raise BrokenPipeError("terminal gone")

    def unreadable(*args: Any) -> tuple[str, int | None]:
        raise RuntimeError("an optimizer of a newer dspy")

    monkeypatch.setattr(compile_progress, "plan", unreadable)
    compiled = _compile("bootstrap_few_shot", tiny_data_dir, Broken())
    assert compiled is not None


def test_the_controller_erases_its_example_progress_before_each_compile_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    import evals.harness.compile_sinks as compile_sinks

    events: list[str] = []
    writers = dataclasses.replace(Screen(tty=True).writers, line=lambda text: events.append(f"line {text}"))
    monkeypatch.setattr(compile_sinks, "terminal_writers", lambda config: writers)
    watcher = compile_sinks.watch_compiles(object(), tmp_path, before_line=lambda: events.append("clear"))
    assert watcher is not None
    FileSink(tmp_path, "gw0").finish(reading(elapsed_s=40, done=11, state="compiled"))
    watcher.stop()

    assert events == ["clear", f"line {compile_line(reading(elapsed_s=40, done=11, state='compiled'))}"]
