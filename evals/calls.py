"""The LM calls behind one example, captured on the worker from dspy's LM history (MLflow traces).

A record carries, per example, the rendered messages and the raw completion of its LM calls
(bounded in size), their tokens and their cost, so that the controller can write one MLflow
trace per example at upload time. Texts are cleaned with the records (secrets and personal
data) before anything is written; nothing here talks to MLflow.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import Any

MAX_MESSAGES_CHARS = 8000
"""The rendered messages of one call are kept up to this many characters (the tail is cut)."""
MAX_COMPLETION_CHARS = 2000
MAX_CALLS = 4
"""Calls kept per example (the last ones: retries repeat the same prompt)."""
TRUNCATED = " …[truncated]"


@dataclass(frozen=True)
class LMCall:
    """One LM call as the trace shows it.

    Attributes:
        model: The model string dspy called (``openai/gpt-4o-mini``, ``llamacpp/...``).
        messages: The rendered chat messages as JSON text (bounded by ``MAX_MESSAGES_CHARS``).
        completion: The raw completion text (bounded by ``MAX_COMPLETION_CHARS``).
        prompt_tokens: Prompt tokens the provider reported (0 for a cache hit).
        completion_tokens: Completion tokens the provider reported (0 for a cache hit).
        cost_usd: What the call cost as the provider reported it (litellm's ``response_cost``);
            0 for cache hits, local models and providers that report nothing.
        cached: True when the response came from the cache.
        started_at: Epoch seconds when the call started (dspy's ``on_lm_start``); 0 when not
            captured (bundles written before call timing, calls read back from LM history).
        ended_at: Epoch seconds when the call ended (``on_lm_end``); 0 when not captured.
    """

    model: str
    messages: str
    completion: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    cached: bool = False
    started_at: float = 0.0
    ended_at: float = 0.0

    @property
    def timed(self) -> bool:
        """True when the call's start and end were captured (and are in order)."""
        return 0 < self.started_at <= self.ended_at

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LMCall:
        return cls(
            model=str(data.get("model", "")),
            messages=str(data.get("messages", "")),
            completion=str(data.get("completion", "")),
            prompt_tokens=int(data.get("prompt_tokens") or 0),
            completion_tokens=int(data.get("completion_tokens") or 0),
            cost_usd=float(data.get("cost_usd") or 0.0),
            cached=bool(data.get("cached", False)),
            started_at=float(data.get("started_at") or 0.0),
            ended_at=float(data.get("ended_at") or 0.0),
        )

    def cleaned(self, clean: Callable[[str], str]) -> LMCall:
        """This call with ``clean`` applied to its texts (the messages hold the patient text)."""
        return replace(self, messages=clean(self.messages), completion=clean(self.completion))


def bounded(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, marked when cut."""
    return text if len(text) <= limit else text[: max(limit - len(TRUNCATED), 0)] + TRUNCATED


def from_history_entry(entry: dict[str, Any]) -> LMCall:
    """An :class:`LMCall` from one dspy LM history entry (``dspy.clients.base_lm``)."""
    response = entry.get("response")
    cached = bool(getattr(response, "cache_hit", False))
    usage = entry.get("usage") or {}
    outputs = entry.get("outputs") or []
    completion = outputs[0] if outputs else ""
    if isinstance(completion, dict):  # outputs with logprobs or tool calls
        completion = completion.get("text") or json.dumps(completion, default=str)
    raw_cost = entry.get("cost")
    cost = 0.0 if cached or not isinstance(raw_cost, (int, float)) or raw_cost != raw_cost else float(raw_cost)
    messages = entry.get("messages") or [{"role": "user", "content": entry.get("prompt") or ""}]
    return LMCall(
        model=str(entry.get("model") or ""),
        messages=bounded(json.dumps(messages, ensure_ascii=False, default=str), MAX_MESSAGES_CHARS),
        completion=bounded(str(completion), MAX_COMPLETION_CHARS),
        prompt_tokens=0 if cached else int(usage.get("prompt_tokens") or 0),
        completion_tokens=0 if cached else int(usage.get("completion_tokens") or 0),
        cost_usd=max(cost, 0.0),
        cached=cached,
    )


class CallRecorder:
    """Collects the LM calls made inside :meth:`recording` by this thread, as :class:`LMCall`.

    A dspy callback scoped with ``dspy.context`` (per thread): examples run at once in threads
    each see only their own calls. The call's history entry (usage, cost, cache hit) is the one
    holding the very messages the callback saw.
    """

    def __init__(self) -> None:
        self.calls: list[LMCall] = []
        self._started: dict[str, tuple[Any, Any, float]] = {}

    @contextmanager
    def recording(self) -> Iterator[CallRecorder]:
        import dspy

        with dspy.context(callbacks=[*dspy.settings.callbacks, _callback(self)]):
            yield self

    def start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._started[call_id] = (instance, inputs.get("messages") or inputs.get("prompt"), time.time())

    def end(self, call_id: str, outputs: Any) -> None:
        ended_at = time.time()
        instance, messages, started_at = self._started.pop(call_id, (None, None, 0.0))
        history = list(getattr(instance, "history", []) or [])[-50:]
        entry = next((e for e in reversed(history) if e.get("messages") is messages), None) or next(
            (e for e in reversed(history) if messages is not None and e.get("messages") == messages), None
        )
        if entry is None and instance is not None:  # the LM failed: what was sent, and no completion
            entry = {
                "model": getattr(instance, "model", ""),
                "messages": messages,
                "outputs": outputs if isinstance(outputs, list) else [],
            }
        if entry is not None:
            call = from_history_entry(entry)
            self.calls.append(replace(call, started_at=started_at, ended_at=ended_at) if started_at else call)
        del self.calls[:-MAX_CALLS]

    def result(self) -> tuple[LMCall, ...]:
        return tuple(self.calls)


def _callback(recorder: CallRecorder) -> Any:
    """A dspy ``BaseCallback`` forwarding LM starts and ends to ``recorder`` (dspy imported only here)."""
    from dspy.utils.callback import BaseCallback

    class Forward(BaseCallback):
        def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
            recorder.start(call_id, instance, inputs)

        def on_lm_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
            recorder.end(call_id, outputs)

    return Forward()


def entries_after(history: Sequence[dict[str, Any]], mark: str | None) -> tuple[LMCall, ...]:
    """The calls in ``history`` after the entry whose uuid is ``mark`` (all when absent)."""
    start = 0
    for index in range(len(history) - 1, -1, -1):
        if mark is not None and str(history[index].get("uuid")) == mark:
            start = index + 1
            break
    return tuple(from_history_entry(entry) for entry in history[start:][-MAX_CALLS:])


def total_cost(calls: Iterable[LMCall]) -> float:
    return sum(call.cost_usd for call in calls)
