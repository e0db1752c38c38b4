"""The fake OpenAI-compatible server, driven through the real clients: dspy's native engine and LiteLLM."""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dspy
import pytest
from dspy.utils.exceptions import (
    AdapterParseError,
    LMError,
    LMProviderError,
    LMRateLimitError,
    LMServerError,
)

from evals.labels import DIAGNOSES
from programs.signatures import Diagnose
from tests.fake_openai import (
    FakeOpenAI,
    answer_content,
    fake_openai_fixture,  # noqa: F401 - registers the fake_openai fixture
    fake_openai_process,
    get_json,
    keep_alive_round_trip_ms,
    requested_fields,
)

# LiteLLM would fetch its model cost map from the network at first use (the plugin sets this too).
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "true")

ENGINES = ["auto", "litellm"]
"""dspy's native (lm15) OpenAI client and its LiteLLM one: the fake must satisfy both."""


def make_lm(server: FakeOpenAI, engine: str = "auto", model: str = "fake", **kwargs: Any) -> dspy.LM:
    return dspy.LM(
        f"openai/{model}", api_base=server.base_url, api_key="x", cache=False, num_retries=0, engine=engine, **kwargs
    )


def diagnose(lm: dspy.LM, symptoms: str, adapter: Any = None, program: type = dspy.Predict) -> dspy.Prediction:
    with dspy.context(lm=lm, adapter=adapter or dspy.JSONAdapter()):
        return program(Diagnose)(symptoms=symptoms)


def post(server_url: str, body: dict[str, Any], timeout: float | None = 10.0) -> tuple[int, dict[str, str], bytes]:
    """A raw chat completion: status, headers and body, whatever the status."""
    request = urllib.request.Request(
        f"{server_url}/chat/completions", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


MESSAGES: Any = [{"role": "user", "content": "I have jaundice, I think"}]
PLAIN = {"model": "fake", "messages": MESSAGES}


@pytest.mark.parametrize("adapter", [dspy.JSONAdapter, dspy.ChatAdapter])
@pytest.mark.parametrize("engine", ENGINES)
def test_predict_answers_the_first_label_named_in_the_symptoms(
    fake_openai: FakeOpenAI, engine: str, adapter: type
) -> None:
    lm = make_lm(fake_openai, engine)
    assert diagnose(lm, "Itchy scaly patches; my aunt had Psoriasis too.", adapter()).diagnosis == "psoriasis"
    assert diagnose(lm, "I feel tired all day", adapter()).diagnosis == "allergy"  # no label named: the default
    # One call each: an answer the adapter could not parse would have cost a JSONAdapter retry.
    assert fake_openai.stats.total == 2
    assert fake_openai.stats.statuses == {200: 2}


@pytest.mark.parametrize("engine", ENGINES)
def test_chain_of_thought_gets_every_field_of_the_response_schema(fake_openai: FakeOpenAI, engine: str) -> None:
    lm = make_lm(fake_openai, engine, model="gpt-4o-mini")  # a model known to take json_schema outputs
    prediction = diagnose(lm, "High fever and joint pain after a trip, dengue maybe", program=dspy.ChainOfThought)
    assert fake_openai.last_request is not None
    assert fake_openai.last_request["response_format"]["type"] == "json_schema"
    assert prediction.diagnosis == "dengue"
    assert "dengue" in prediction.reasoning
    # ChatAdapter's sections for ChainOfThought parse too.
    chat = diagnose(make_lm(fake_openai, engine), "chicken pox rash", dspy.ChatAdapter(), dspy.ChainOfThought)
    assert (chat.diagnosis, fake_openai.stats.total) == ("chicken pox", 2)


@pytest.mark.parametrize("engine", ENGINES)
def test_chain_of_thought_and_demos_without_a_schema_answer_in_one_call(fake_openai: FakeOpenAI, engine: str) -> None:
    """The bench's shapes: ``openai/fake`` (no json_schema) with JSONAdapter, ChainOfThought and kNN-style demos."""
    lm = make_lm(fake_openai, engine)
    prediction = diagnose(lm, "Blurry vision, thirst; is it diabetes?", program=dspy.ChainOfThought)
    assert fake_openai.last_request is not None
    assert (fake_openai.last_request.get("response_format") or {}).get("type") != "json_schema"
    assert (prediction.diagnosis, prediction.reasoning) == ("diabetes", "The symptoms name diabetes.")
    # The reasoning field comes first, as the prompt lists the output fields.
    answer = answer_content(fake_openai.last_request, "diabetes")
    assert list(json.loads(answer)) == ["reasoning", "diagnosis"]
    # Demos (knn_few_shot's) are earlier user/assistant turns: the answer reads the last user message only.
    demos = [dspy.Example(symptoms="my skin shows psoriasis", diagnosis="psoriasis")]
    with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
        predict = dspy.Predict(Diagnose)
        predict.demos = demos
        assert predict(symptoms="yellow eyes, jaundice").diagnosis == "jaundice"
    assert fake_openai.stats.statuses == {200: 2}  # one call each: no adapter fallback, no retry


def test_answer_follows_the_schema_then_the_prompt() -> None:
    schema = {
        "properties": {
            "diagnosis": {"$ref": "#/$defs/Diagnosis"},
            "confidence": {"type": "number"},
            "urgent": {"type": "boolean"},
            "notes": {"type": "string"},
        },
        "$defs": {"Diagnosis": {"enum": list(DIAGNOSES), "type": "string"}},
    }
    body = {
        "messages": [{"role": "user", "content": "x"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "out", "schema": schema}},
    }
    assert json.loads(answer_content(body, "migraine")) == {
        "diagnosis": "migraine",
        "confidence": 0.0,
        "urgent": False,
        "notes": "The symptoms name migraine.",
    }
    # No schema, no system message: the fields come from the "Respond with" sentence of the last user message.
    prompt = (
        "[[ ## symptoms ## ]]\nx\n\n"
        "Respond with a JSON object in the following order of fields: `why`, then `diagnosis`."
    )
    chat = {"messages": [{"role": "user", "content": [{"type": "text", "text": prompt}]}]}
    assert list(requested_fields(chat)) == ["why", "diagnosis"]
    assert json.loads(answer_content(chat, "typhoid"))["diagnosis"] == "typhoid"
    assert answer_content(PLAIN, "jaundice") == "jaundice"  # no dspy prompt: the bare label


@pytest.mark.parametrize("engine", ENGINES)
def test_sixteen_threads_overlap_on_the_server(fake_openai: FakeOpenAI, engine: str) -> None:
    fake_openai.latency = 0.3
    devset = [
        dspy.Example(symptoms=f"case {i}: {label}?", diagnosis=label).with_inputs("symptoms")
        for i, label in enumerate(DIAGNOSES[:16])
    ]
    evaluate = dspy.Evaluate(
        devset=devset,
        metric=lambda example, pred, trace=None: example.diagnosis == pred.diagnosis,
        num_threads=16,
        display_progress=False,
    )
    with dspy.context(lm=make_lm(fake_openai, engine), adapter=dspy.JSONAdapter()):
        started = time.perf_counter()
        result = evaluate(dspy.Predict(Diagnose))
        elapsed = time.perf_counter() - started
    assert result.score == 100.0
    assert elapsed < 16 * 0.3 / 3, f"16 calls of 0.3 s took {elapsed:.2f} s: not concurrent"
    stats = fake_openai.stats.snapshot()
    assert stats["total"] == 16 and stats["statuses"] == {"200": 16} and stats["in_flight"] == 0
    assert stats["peak_in_flight"] >= 8
    assert all(end - start >= 0.3 for start, end, _ in stats["records"])


def test_a_kept_alive_connection_answers_without_a_delayed_ack_stall(fake_openai: FakeOpenAI) -> None:
    # A reply is written as headers then body; without TCP_NODELAY each call on a kept-alive connection
    # waited for the client's delayed ACK: 44 ms median here, against 0.4 ms with it.
    body = {"model": "fake", "messages": [{"role": "system", "content": "x" * 6000}, {"role": "user", "content": "?"}]}
    assert keep_alive_round_trip_ms(fake_openai.base_url, body) < 20


@pytest.mark.parametrize("engine", ENGINES)
def test_rate_limit_answers_429_with_retry_after(fake_openai: FakeOpenAI, engine: str) -> None:
    fake_openai.configure(rate_limit_every=2, retry_after=2)
    lm = make_lm(fake_openai, engine)
    assert diagnose(lm, "malaria").diagnosis == "malaria"
    with pytest.raises(LMRateLimitError) as caught:
        diagnose(lm, "malaria")
    assert caught.value.retry_after == 2.0
    status, headers, body = post(fake_openai.base_url, PLAIN)
    assert status == 200  # the third call
    status, headers, body = post(fake_openai.base_url, PLAIN)
    assert (status, headers["Retry-After"], headers["retry-after-ms"]) == (429, "2", "2000")
    assert json.loads(body)["error"]["code"] == "rate_limit_exceeded"
    assert fake_openai.stats.statuses == {200: 2, 429: 2}


def test_max_concurrency_turns_the_excess_away(fake_openai: FakeOpenAI) -> None:
    fake_openai.configure(max_concurrency=2, latency=0.8)
    with ThreadPoolExecutor(6) as pool:
        statuses = sorted(status for status, _, _ in pool.map(lambda _: post(fake_openai.base_url, PLAIN), range(6)))
    assert statuses == [200, 200, 429, 429, 429, 429]
    assert fake_openai.stats.peak_in_flight == 2


@pytest.mark.parametrize("engine", ENGINES)
def test_server_errors_and_garbage_reach_the_client_as_errors(fake_openai: FakeOpenAI, engine: str) -> None:
    lm = make_lm(fake_openai, engine)
    fake_openai.error_rate = 1.0
    with pytest.raises(LMServerError):
        diagnose(lm, "typhoid")
    fake_openai.configure(error_rate=0.0, garbage="content")  # a completion no adapter parses
    with pytest.raises(AdapterParseError, match="cannot help"):
        diagnose(lm, "typhoid")
    fake_openai.garbage = "body"  # HTTP 200 whose body is no JSON
    with pytest.raises(LMProviderError, match="upstream hiccup"):
        diagnose(lm, "typhoid")
    fake_openai.garbage = None
    assert diagnose(lm, "typhoid").diagnosis == "typhoid"
    assert fake_openai.stats.statuses == {500: 1, 200: 3}


def test_stream_is_server_sent_events_the_openai_client_reads(fake_openai: FakeOpenAI) -> None:
    import openai

    client = openai.OpenAI(base_url=fake_openai.base_url, api_key="x", max_retries=0)
    whole = client.chat.completions.create(model="fake", messages=MESSAGES)
    assert whole.choices[0].message.content == "jaundice"
    assert whole.usage is not None and whole.usage.total_tokens > 0
    chunks = list(
        client.chat.completions.create(
            model="fake", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "jaundice"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_cli_process_serves_stats_config_and_stops_on_sigterm() -> None:
    with fake_openai_process("--latency", "0.05", "--rate-limit-every", "3") as base_url:
        root = base_url.removesuffix("/v1")
        assert get_json(f"{root}/health") == {"status": "ok"}
        assert get_json(f"{base_url}/models")["data"][0]["id"] == "fake"
        assert [post(base_url, PLAIN)[0] for _ in range(3)] == [200, 200, 429]
        stats = get_json(f"{root}/stats")
        assert (stats["total"], stats["statuses"], stats["peak_in_flight"]) == (3, {"200": 2, "429": 1}, 1)
        assert len(stats["records"]) == 3 and all(end >= start for start, end, _ in stats["records"])
        assert get_json(f"{root}/config", data={"error_rate": 1.0})["error_rate"] == 1.0
        assert post(base_url, PLAIN)[0] == 500
        assert get_json(f"{root}/stats/reset", data={})["total"] == 0
    # Leaving the block checked that SIGTERM stopped the server with exit status 0.


def test_hang_outlasts_the_client_timeout_and_stop_releases_every_connection() -> None:
    import openai

    server = FakeOpenAI(hang_seconds=30).start()
    idle = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)  # keeps its connection open
    assert idle.chat.completions.create(model="fake", messages=MESSAGES).choices[0].message.content
    server.hang = True
    with pytest.raises(LMError, match="timed out"):
        diagnose(make_lm(server, timeout=0.5), "pneumonia")
    outcome: dict[str, Any] = {}

    def wait_without_timeout() -> None:
        try:
            outcome["status"] = post(server.base_url, PLAIN, timeout=None)[0]
        except OSError as error:  # the connection dropped with no answer
            outcome["error"] = error

    client = threading.Thread(target=wait_without_timeout)
    client.start()
    deadline = time.monotonic() + 5
    while server.stats.in_flight < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.stats.in_flight == 2  # the timed-out call still hangs on the server, and the new one
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    stopper.join(timeout=3)
    assert not stopper.is_alive(), "stop() did not release the hanging calls and the idle connection"
    client.join(timeout=5)
    assert not client.is_alive() and "error" in outcome
    assert (server.stats.in_flight, server.stats.statuses) == (0, {200: 1, 0: 2})
    assert not [t.name for t in threading.enumerate() if "_serve" in t.name or "fake-openai" in t.name]
