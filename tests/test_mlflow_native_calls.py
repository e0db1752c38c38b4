"""Capturing the LM calls of one example for its MLflow trace (issue #13)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from evals.calls import MAX_CALLS, MAX_MESSAGES_CHARS, CallRecorder, LMCall, entries_after, from_history_entry


def entry(uuid: str, cost: float | None = 0.002, cache_hit: bool = False, text: str = "hello") -> dict:
    return {
        "uuid": uuid,
        "model": "openai/gpt-4o-mini",
        "messages": [{"role": "user", "content": text}],
        "outputs": ['{"diagnosis": "migraine"}'],
        "usage": {"prompt_tokens": 50, "completion_tokens": 7},
        "cost": cost,
        "response": SimpleNamespace(cache_hit=cache_hit),
    }


def test_a_billed_call_keeps_cost_tokens_messages_and_completion() -> None:
    call = from_history_entry(entry("a"))
    assert call.cost_usd == pytest.approx(0.002)
    assert (call.prompt_tokens, call.completion_tokens, call.cached) == (50, 7, False)
    assert json.loads(call.messages) == [{"role": "user", "content": "hello"}]
    assert call.completion == '{"diagnosis": "migraine"}'


def test_a_cache_hit_costs_nothing_even_when_the_entry_remembers_a_cost() -> None:
    call = from_history_entry(entry("a", cost=0.5, cache_hit=True))
    assert (call.cost_usd, call.prompt_tokens, call.cached) == (0.0, 0, True)


@pytest.mark.parametrize("cost", [None, float("nan"), -1.0, "free"])
def test_an_unreported_or_absurd_cost_counts_zero(cost: object) -> None:
    assert from_history_entry(entry("a", cost=cost)).cost_usd == 0.0  # type: ignore[arg-type]


def test_long_messages_are_bounded_and_marked() -> None:
    call = from_history_entry(entry("a", text="x" * (MAX_MESSAGES_CHARS * 2)))
    assert len(call.messages) == MAX_MESSAGES_CHARS and call.messages.endswith("[truncated]")


def test_only_the_calls_after_the_mark_are_taken_and_at_most_max_calls() -> None:
    history = [entry(str(i)) for i in range(10)]
    assert len(entries_after(history, "7")) == 2
    assert len(entries_after(history, None)) == MAX_CALLS
    assert len(entries_after(history, "gone")) == MAX_CALLS  # the mark fell out of the bounded history


def test_dict_round_trip_and_cleaning() -> None:
    call = from_history_entry(entry("a", text="mail me at a@b.org"))
    assert LMCall.from_dict(call.to_dict()) == call
    assert "a@b.org" not in call.cleaned(lambda t: t.replace("a@b.org", "[EMAIL]")).messages


def test_a_real_dspy_program_call_is_captured_with_its_rendered_prompt() -> None:
    import dspy
    from dspy.utils.dummies import DummyLM

    lm = DummyLM([{"diagnosis": "migraine"}] * 2)
    program = dspy.Predict("symptoms -> diagnosis")
    recorder = CallRecorder()
    with dspy.context(lm=lm), recorder.recording():
        program(symptoms="pounding headache behind the eyes")
    with dspy.context(lm=lm):
        program(symptoms="not recorded: outside the block")
    calls = recorder.result()
    assert len(calls) == 1
    assert "pounding headache behind the eyes" in calls[0].messages
    assert "migraine" in calls[0].completion


def test_threads_running_at_once_each_record_only_their_own_calls() -> None:
    import threading

    import dspy
    from dspy.utils.dummies import DummyLM

    lm = DummyLM([{"diagnosis": "migraine"}] * 20)
    program = dspy.Predict("symptoms -> diagnosis")
    found: dict[int, tuple[LMCall, ...]] = {}

    def one(index: int) -> None:
        recorder = CallRecorder()
        with dspy.context(lm=lm), recorder.recording():
            program(symptoms=f"patient number {index} has a headache")
        found[index] = recorder.result()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(len(calls) == 1 and f"patient number {i} " in calls[0].messages for i, calls in found.items())


def test_each_recorded_call_carries_its_own_start_and_end() -> None:
    import time

    import dspy
    from dspy.utils.dummies import DummyLM

    lm = DummyLM([{"diagnosis": "migraine"}] * 2)
    program = dspy.Predict("symptoms -> diagnosis")
    recorder = CallRecorder()
    before = time.time()
    with dspy.context(lm=lm), recorder.recording():
        program(symptoms="first")
        between = time.time()
        time.sleep(0.05)
        program(symptoms="second")
    after = time.time()
    first, second = recorder.result()
    assert before <= first.started_at <= first.ended_at <= between
    assert between + 0.05 <= second.started_at <= second.ended_at <= after
    assert first.timed and second.timed
    assert LMCall.from_dict(second.to_dict()) == second  # kept in the bundle's traces
    assert not from_history_entry(entry("a")).timed  # read back from LM history: no timing
