"""The compile cache as plain functions: key, envelope, corrupt entries, recompile, atomicity, locking."""

from __future__ import annotations

import json
import multiprocessing
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from evals.errors import EvalsWarning
from evals.harness import compile_cache
from evals.harness.compile_cache import CompileEvent, compile_key, entry_path, get_or_compile, read_entry

PARTS = {
    "program": "zero_shot",
    "program_source": "aaaa",
    "optimizer": "labeled",
    "optimizer_config": "bbbb",
    "trainset": "cccc",
    "valset": "dddd",
    "lm": "eeee",
    "dspy": "3.4.0",
    "metric": "ffff",
}
PROGRAM = "zero_shot+labeled"


class FakeModule:
    """The smallest thing the cache stores: ``dump_state`` / ``load_state`` over a dict."""

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        self.state = dict(state or {})

    def dump_state(self) -> dict[str, Any]:
        return dict(self.state)

    def load_state(self, state: dict[str, Any]) -> FakeModule:
        self.state = dict(state)
        return self


def tiny_predict(demos: list[dict[str, str]] | None = None) -> Any:
    import dspy

    predict = dspy.Predict("question -> answer")
    predict.demos = [dspy.Example(**demo) for demo in demos or []]
    return predict


def as_dicts(demos: list[Any]) -> list[dict[str, Any]]:
    """Demos as plain dicts (dspy keeps loaded demos as dicts, compiled ones as Examples)."""
    return [demo.toDict() if hasattr(demo, "toDict") else dict(demo) for demo in demos]


DEMOS = [{"question": "2+2?", "answer": "4"}, {"question": "capital of France?", "answer": "Paris"}]


class Compiler:
    """A ``compile`` callable that counts its calls and pretends to make LM calls."""

    def __init__(self, lm_calls_per_compile: int = 3, make: Callable[[], Any] | None = None) -> None:
        self.calls = 0
        self.lm_calls = 0
        self.per_compile = lm_calls_per_compile
        self.make = make or (lambda: FakeModule({"demos": [f"compiled #{self.calls}"]}))

    def __call__(self) -> Any:
        self.calls += 1
        self.lm_calls += self.per_compile
        return self.make()


def cached(
    cache_dir: Path,
    compiler: Compiler,
    *,
    parts: dict[str, str] = PARTS,
    session_id: str = "s1",
    recompile: bool = False,
    empty: Callable[[], Any] = FakeModule,
) -> tuple[Any, CompileEvent]:
    return get_or_compile(
        cache_dir=cache_dir,
        program=PROGRAM,
        parts=parts,
        empty=empty,
        compile=compiler,
        count_lm_calls=lambda: compiler.lm_calls,
        session_id=session_id,
        recompile=recompile,
    )


# ----- the key -----


def test_compile_key_is_stable_and_independent_of_part_order() -> None:
    reordered = dict(reversed(list(PARTS.items())))

    assert compile_key(PARTS) == compile_key(dict(PARTS)) == compile_key(reordered)
    assert len(compile_key(PARTS)) == 20 and all(c in "0123456789abcdef" for c in compile_key(PARTS))


@pytest.mark.parametrize("part", sorted(PARTS))
def test_compile_key_changes_with_every_part(part: str) -> None:
    changed = {**PARTS, part: PARTS[part] + "-changed"}

    assert compile_key(changed) != compile_key(PARTS)


def test_compile_key_changes_when_a_part_is_added_or_removed() -> None:
    fewer = {k: v for k, v in PARTS.items() if k != "metric"}

    assert len({compile_key(PARTS), compile_key(fewer), compile_key({**PARTS, "extra": ""})}) == 3


def test_entry_path_is_per_program_and_key(tmp_path: Path) -> None:
    assert entry_path(tmp_path, "zero_shot+labeled", "k1") == tmp_path / "compiled" / "zero_shot+labeled" / "k1.json"
    assert entry_path(tmp_path, "a/b", "k1").parent.name == "a_b"


# ----- compile once, then load -----


def test_first_call_compiles_and_writes_an_envelope(tmp_path: Path) -> None:
    compiler = Compiler(lm_calls_per_compile=3)

    module, event = cached(tmp_path, compiler)

    assert compiler.calls == 1
    assert event.action == "compiled" and event.program == PROGRAM and event.key == compile_key(PARTS)
    assert event.lm_calls == 3 and event.duration_s >= 0
    path = entry_path(tmp_path, PROGRAM, event.key)
    assert event.path == str(path)
    envelope = json.loads(path.read_text())
    assert envelope["key"] == event.key
    assert envelope["parts"] == PARTS
    assert envelope["state"] == module.dump_state() == {"demos": ["compiled #1"]}
    assert envelope["duration_s"] == pytest.approx(event.duration_s)
    assert envelope["lm_calls"] == 3
    assert envelope["session_id"] == "s1"


def test_second_call_loads_without_compiling(tmp_path: Path) -> None:
    compiler = Compiler()
    first, _ = cached(tmp_path, compiler)

    second, event = cached(tmp_path, compiler, session_id="s2")

    assert compiler.calls == 1
    assert event.action == "loaded" and event.lm_calls == 0
    assert second is not first and second.dump_state() == first.dump_state()


def test_a_different_key_compiles_again(tmp_path: Path) -> None:
    compiler = Compiler()
    cached(tmp_path, compiler)

    _, event = cached(tmp_path, compiler, parts={**PARTS, "trainset": "other"})

    assert compiler.calls == 2 and event.action == "compiled"
    assert len(list((tmp_path / "compiled" / PROGRAM).glob("*.json"))) == 2


def test_dspy_state_round_trips_through_the_cache(tmp_path: Path) -> None:
    compiler = Compiler(make=lambda: tiny_predict(DEMOS))
    compiled, _ = cached(tmp_path, compiler)

    loaded, event = cached(tmp_path, compiler, empty=tiny_predict)

    assert event.action == "loaded" and compiler.calls == 1
    assert as_dicts(loaded.demos) == DEMOS
    assert loaded.dump_state() == compiled.dump_state()


def test_dump_state_loads_into_an_empty_module() -> None:
    state = tiny_predict(DEMOS).dump_state()

    empty = tiny_predict()
    empty.load_state(json.loads(json.dumps(state)))

    assert as_dicts(empty.demos) == DEMOS
    assert empty.dump_state() == state


# ----- corrupt entries are a miss, with a warning -----


def _envelope(key: str, state: object) -> str:
    return json.dumps({"format": compile_cache.FORMAT, "key": key, "parts": PARTS, "state": state})


CORRUPTIONS: dict[str, Callable[[str, str], str]] = {
    "truncated-json": lambda text, key: text[: len(text) // 2],
    "empty-file": lambda text, key: "",
    "garbage": lambda text, key: "\x00\x01not json at all{",
    "wrong-key-inside": lambda text, key: _envelope("0" * 20, {"demos": []}),
    "state-not-a-dict": lambda text, key: _envelope(key, ["demos"]),
    "missing-state": lambda text, key: json.dumps({"format": compile_cache.FORMAT, "key": key}),
    "wrong-format": lambda text, key: text.replace('"format": 1', '"format": 99'),
}


@pytest.mark.parametrize("corrupt", list(CORRUPTIONS), ids=list(CORRUPTIONS))
def test_corrupt_entry_warns_and_recompiles(tmp_path: Path, corrupt: str) -> None:
    compiler = Compiler()
    _, first = cached(tmp_path, compiler)
    path = Path(first.path)
    path.write_text(CORRUPTIONS[corrupt](path.read_text(), first.key))

    with pytest.warns(EvalsWarning, match="unusable"):
        module, event = cached(tmp_path, compiler, session_id="s2")

    assert compiler.calls == 2 and event.action == "compiled"
    assert module.dump_state() == {"demos": ["compiled #2"]}
    # The recompiled entry replaced the corrupt one and loads cleanly.
    assert read_entry(path, first.key)["state"] == {"demos": ["compiled #2"]}


@pytest.mark.parametrize("payload", ["null", "[1, 2]", "42"], ids=["null", "list", "number"])
def test_entry_that_is_not_a_json_object_warns_and_recompiles(tmp_path: Path, payload: str) -> None:
    compiler = Compiler()
    _, first = cached(tmp_path, compiler)
    Path(first.path).write_text(payload)

    with pytest.warns(EvalsWarning, match="unusable"):
        _, event = cached(tmp_path, compiler, session_id="s2")

    assert compiler.calls == 2 and event.action == "compiled"


def test_entry_whose_state_does_not_fit_the_module_warns_and_recompiles(tmp_path: Path) -> None:
    compiler = Compiler(make=lambda: tiny_predict(DEMOS))
    _, first = cached(tmp_path, compiler)
    Path(first.path).write_text(_envelope(first.key, {}))

    with pytest.warns(EvalsWarning, match="unusable"):
        module, event = cached(tmp_path, compiler, session_id="s2", empty=tiny_predict)

    assert compiler.calls == 2 and event.action == "compiled"
    assert as_dicts(module.demos) == DEMOS


def test_missing_entry_is_a_silent_miss(tmp_path: Path, recwarn: pytest.WarningsRecorder) -> None:
    assert read_entry(tmp_path / "nope.json", "k") is None
    assert not [w for w in recwarn if issubclass(w.category, EvalsWarning)]


# ----- --evals-recompile: exactly one recompile per session -----


def test_recompile_ignores_entries_of_earlier_sessions_but_not_its_own(tmp_path: Path) -> None:
    compiler = Compiler()
    cached(tmp_path, compiler, session_id="earlier")

    _, recompiled = cached(tmp_path, compiler, session_id="now", recompile=True)
    module, again = cached(tmp_path, compiler, session_id="now", recompile=True)

    assert recompiled.action == "compiled" and again.action == "loaded"
    assert compiler.calls == 2
    assert module.dump_state() == {"demos": ["compiled #2"]}
    assert json.loads(Path(again.path).read_text())["session_id"] == "now"
    # A later session without --evals-recompile loads what the recompiling session wrote.
    _, later = cached(tmp_path, compiler, session_id="later")
    assert later.action == "loaded" and compiler.calls == 2


def test_recompile_with_no_entry_compiles_once(tmp_path: Path) -> None:
    compiler = Compiler()

    events = [cached(tmp_path, compiler, session_id="s", recompile=True)[1] for _ in range(3)]

    assert [e.action for e in events] == ["compiled", "loaded", "loaded"]
    assert compiler.calls == 1


# ----- atomic writes -----


def test_write_leaves_no_temporary_files(tmp_path: Path) -> None:
    compiler = Compiler()
    for trainset in ("a", "b", "c"):
        cached(tmp_path, compiler, parts={**PARTS, "trainset": trainset})

    directory = tmp_path / "compiled" / PROGRAM
    assert not list(directory.glob("*.tmp")) and not list(directory.glob(".*"))
    assert len(list(directory.glob("*.json"))) == 3


def test_failed_write_keeps_the_old_entry_and_removes_the_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compiler = Compiler()
    _, first = cached(tmp_path, compiler)
    before = Path(first.path).read_text()

    def interrupted(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(compile_cache.os, "replace", interrupted)
    with pytest.raises(OSError, match="disk full"):
        compile_cache.write_entry(Path(first.path), first.key, PARTS, {"demos": ["new"]}, {})
    monkeypatch.undo()

    assert Path(first.path).read_text() == before
    assert not list(Path(first.path).parent.glob("*.tmp"))


# ----- racing processes: one compiles, the others wait and load -----


def _race_worker(cache_dir: str, log: str, out: str, barrier: Any) -> None:
    """Run in a spawned process: compile (slowly, logging each compile) or load the same key."""

    def slow_compile() -> FakeModule:
        time.sleep(1.0)
        with open(log, "a") as handle:
            handle.write(f"compiled by {multiprocessing.current_process().name}\n")
        return FakeModule({"demos": ["raced"], "by": multiprocessing.current_process().name})

    barrier.wait(timeout=60)
    module, event = get_or_compile(
        cache_dir=Path(cache_dir),
        program=PROGRAM,
        parts=PARTS,
        empty=FakeModule,
        compile=slow_compile,
        count_lm_calls=lambda: 0,
        session_id="race",
    )
    Path(out).write_text(json.dumps({"state": module.dump_state(), "action": event.action}))


def test_racing_processes_compile_exactly_once(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(3)
    log = tmp_path / "compiles.log"
    outs = [tmp_path / f"out-{i}.json" for i in range(3)]
    processes = [
        context.Process(
            target=_race_worker, args=(str(tmp_path / "cache"), str(log), str(out), barrier), name=f"racer-{i}"
        )
        for i, out in enumerate(outs)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [p.exitcode for p in processes] == [0, 0, 0]

    assert len(log.read_text().splitlines()) == 1
    results = [json.loads(out.read_text()) for out in outs]
    assert sorted(r["action"] for r in results) == ["compiled", "loaded", "loaded"]
    assert results[0]["state"] == results[1]["state"] == results[2]["state"]
    assert results[0]["state"]["demos"] == ["raced"]
