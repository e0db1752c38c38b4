"""--evals-lm-server: one server process serves the harness's own constrained engine to every worker.

The HTTP surface and the client engine are tested against a fake engine (fast); the constraint,
the shared response cache and a ``-n 2`` session against the real embedded smollm2 GGUF.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest

from evals.errors import ConfigError
from evals.lm.serve import ChatRequest, EngineServer
from evals.lm.server import ServerEngine, start_session_server
from tests.conftest import SHARED_DATA, SUITE, THRESHOLDS
from tests.fake_openai import keep_alive_round_trip_ms

ENUM_SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string", "enum": ["alpha", "beta"]}},
    "required": ["answer"],
    "additionalProperties": False,
}
ENUM_FORMAT = {"type": "json_schema", "json_schema": {"name": "out", "schema": ENUM_SCHEMA}}


class FakeEngine:
    """Records what the server hands it; answers with a fixed text and usage, or raises on demand."""

    def __init__(self, answer: str = '{"answer": "beta"}') -> None:
        self.answer = answer
        self.requests: list[ChatRequest] = []
        self.fail: Exception | None = None

    def complete(self, request: Any) -> Any:
        from dspy.lm15 import Message, Response, TextPart, Usage

        self.requests.append(request)
        if self.fail is not None:
            raise self.fail
        return Response(
            id=None,
            model="fake",
            message=Message.assistant([TextPart(self.answer)]),
            finish_reason="stop",
            usage=Usage(input_tokens=7, output_tokens=3),
        )


@pytest.fixture
def fake() -> Iterator[tuple[EngineServer, FakeEngine]]:
    engine = FakeEngine()
    server = EngineServer(engine, "llamacpp/fake")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, engine
    server.shutdown()
    server.server_close()


def post(url: str, data: bytes) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def chat(server: EngineServer, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return post(f"{server.api_base}/chat/completions", json.dumps(body).encode())


USER = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "alpha or beta?"}]


def test_the_server_hands_the_engine_the_schema_and_the_settings(fake: tuple[EngineServer, FakeEngine]) -> None:
    server, engine = fake
    body = {"messages": USER, "temperature": 0, "max_tokens": 12, "stop": "\n", "seed": 3, "top_p": 0.5}
    status, reply = chat(server, {**body, "response_format": ENUM_FORMAT})

    assert status == 200
    assert reply["choices"][0]["message"] == {"role": "assistant", "content": '{"answer": "beta"}'}
    assert reply["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    assert reply["model"] == "llamacpp/fake"
    seen = engine.requests[-1]
    assert [(m.role, m.text) for m in seen.messages] == [("system", "be brief"), ("user", "alpha or beta?")]
    config = seen.config
    assert (config.temperature, config.max_tokens, config.stop, config.seed, config.top_p) == (0.0, 12, ("\n",), 3, 0.5)
    assert config.response_format == {"type": "json_schema", "schema": ENUM_SCHEMA}

    chat(server, {"messages": USER, "response_format": {"type": "json_object"}})
    assert engine.requests[-1].config.response_format == {"type": "json_object"}
    chat(server, {"messages": USER, "response_format": {"type": "text"}})
    assert engine.requests[-1].config.response_format is None
    with urllib.request.urlopen(f"{server.api_base}/models", timeout=10) as response:
        assert json.loads(response.read())["data"][0]["id"] == "llamacpp/fake"


def test_a_kept_alive_connection_answers_without_a_delayed_ack_stall(fake: tuple[EngineServer, FakeEngine]) -> None:
    server, _ = fake  # every worker's calls reuse one connection: 44 ms a call without TCP_NODELAY
    body = {"model": "llamacpp/fake", "messages": [{"role": "system", "content": "x" * 6000}, *USER[1:]]}
    assert keep_alive_round_trip_ms(server.api_base, body) < 20


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"garbage", "the body is not JSON"),
        (b"[1, 2]", "the body must be a JSON object"),
        (b"{}", "messages must be a non-empty list"),
        (b'{"messages": [{"role": "wizard", "content": "x"}]}', "messages[0] must be an object with a role"),
        (b'{"messages": [{"role": "user", "content": 3}]}', "messages[0].content must be a string"),
        (b'{"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}', "temperature must be a number"),
        (b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}', "max_tokens must be at least 1"),
        (b'{"messages": [{"role": "user", "content": "x"}], "stream": true}', "stream is not supported"),
        (b'{"messages": [{"role": "user", "content": "x"}], "stop": [1]}', "stop must be a string or a list"),
        (
            b'{"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "yaml"}}',
            "response_format.type must be",
        ),
        (
            b'{"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema"}}',
            "response_format.json_schema.schema must be",
        ),
    ],
)
def test_a_bad_request_is_a_400_json_error_and_the_server_keeps_serving(
    fake: tuple[EngineServer, FakeEngine], data: bytes, message: str
) -> None:
    server, engine = fake
    status, reply = post(f"{server.api_base}/chat/completions", data)

    assert status == 400
    assert reply["error"]["type"] == "invalid_request_error"
    assert reply["error"]["message"].startswith(message)
    assert engine.requests == []  # refused before the engine
    assert chat(server, {"messages": USER})[0] == 200


def test_an_engine_failure_is_that_requests_error_not_the_servers(fake: tuple[EngineServer, FakeEngine]) -> None:
    server, engine = fake
    engine.fail = RuntimeError("the model fell over")
    assert chat(server, {"messages": USER}) == (
        500,
        {"error": {"message": "RuntimeError: the model fell over", "type": "server_error"}},
    )
    engine.fail = ValueError("Requested tokens (5000) exceed context window of 4096")
    assert chat(server, {"messages": USER})[0] == 400
    assert post(f"{server.api_base}/completions", b"{}")[0] == 404
    engine.fail = None
    assert chat(server, {"messages": USER})[0] == 200


def test_workers_always_send_the_answer_schema_whatever_the_model_name(fake: tuple[EngineServer, FakeEngine]) -> None:
    """dspy's JSONAdapter sends the schema because the engine, not litellm's model list, says it is supported."""
    import dspy

    server, engine = fake

    class Pick(dspy.Signature):
        question: str = dspy.InputField()
        answer: Literal["alpha", "beta"] = dspy.OutputField()

    lm = dspy.LM("mlx/nobody-knows-me-0123", engine=ServerEngine(server.api_base), cache=False, num_retries=0)
    with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
        prediction = dspy.Predict(Pick)(question="alpha or beta?")

    assert prediction.answer == "beta"
    schema = engine.requests[-1].config.response_format["schema"]
    assert schema["properties"]["answer"]["enum"] == ["alpha", "beta"]
    assert engine.requests[-1].messages[0].role == "system"


def test_a_refused_connection_reads_as_the_lm_being_down() -> None:
    """The session stops with its one line when the server is gone, as for any LM that refuses."""
    import dspy

    from evals.harness.runner import lm_down_reason

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    lm = dspy.LM("llamacpp/x-1", engine=ServerEngine(f"http://127.0.0.1:{port}/v1"), cache=False, num_retries=0)
    with pytest.raises(Exception) as caught:
        lm("hello")
    assert lm_down_reason(caught.value) == "connection refused"


def test_an_lm_reached_over_the_network_needs_no_session_server(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="drop --evals-lm-server"):
        start_session_server("openai/gpt-4o-mini", log_dir=tmp_path, cache_dir=tmp_path)
    assert not list(tmp_path.iterdir())  # nothing started


# ----- the real embedded model -----

SAME_CACHE_KEY = textwrap.dedent(
    """
    import json, sys
    from typing import Literal
    import dspy
    from evals.lm.spec import build_lm, parse_lm_spec

    api_base, model, cache = sys.argv[1:4]
    dspy.configure_cache(disk_cache_dir=cache)
    spec = parse_lm_spec("smollm2", max_tokens=32)
    served = build_lm(spec, server={"api_base": api_base, "model": model})
    local = build_lm(spec)

    class Pick(dspy.Signature):
        question: str = dspy.InputField()
        answer: Literal["alpha", "beta"] = dspy.OutputField()

    answers = []
    for lm in (served, local):
        with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
            answers.append(dspy.Predict(Pick)(question="Which is the second letter of the Greek alphabet?").answer)
    print(json.dumps({"names": [served.model, local.model], "answers": answers,
                      "local_loaded": local.engine._llama is not None}))
    """
)


def test_the_real_server_constrains_answers_and_shares_the_in_process_cache_key(tmp_path: Path) -> None:
    server = start_session_server("smollm2", log_dir=tmp_path / "logs", cache_dir=tmp_path)
    try:
        base = server.api_base
        for prompt in ("Reply with the single word gamma.", "Say anything at all, but not in JSON."):
            body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": 24, "response_format": ENUM_FORMAT}
            status, reply = post(f"{base}/chat/completions", json.dumps(body).encode())
            assert status == 200
            assert json.loads(reply["choices"][0]["message"]["content"])["answer"] in ("alpha", "beta")
            assert reply["usage"]["prompt_tokens"] > 0 and reply["usage"]["completion_tokens"] > 0
        assert post(f"{base}/chat/completions", b"\x00 not json")[0] == 400

        # The served LM and an in-process one have one dspy.LM name, so one response cache: the
        # in-process LM answers the same question from the cache without loading its model.
        shared = subprocess.run(
            [sys.executable, "-c", SAME_CACHE_KEY, base, server.model, str(tmp_path / "lm")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert shared.returncode == 0, shared.stderr[-2000:]
        result = json.loads(shared.stdout.strip().splitlines()[-1])
        assert result["names"][0] == result["names"][1]
        assert result["names"][0].startswith("llamacpp/SmolLM2-135M-Instruct")
        assert result["answers"][0] == result["answers"][1] and result["answers"][0] in ("alpha", "beta")
        assert result["local_loaded"] is False
    finally:
        server.stop()
    assert server.process.returncode is not None
    assert server.log.read_text().count("model loaded") == 1


PROBE_CONFTEST = """
import json, os
from pathlib import Path

import evals.lm.llama

LOADS = []
_load = evals.lm.llama.load_llama


def counting_load(**kwargs):
    LOADS.append(kwargs["model_path"])
    return _load(**kwargs)


evals.lm.llama.load_llama = counting_load


def pytest_sessionfinish(session):
    role = getattr(session.config, "workerinput", {}).get("workerid", "controller")
    Path(os.environ["PROBE_DIR"], role + ".json").write_text(json.dumps(len(LOADS)))
"""
"""Counts, per process, the llama.cpp models loaded (``llama_cpp.Llama`` constructed) in the project's pytest."""


def predictions(root: Path) -> list[dict[str, str]]:
    (found,) = root.glob(".evals/reports/*/artifacts/predictions.csv")
    with found.open(newline="") as handle:
        return [{k: v for k, v in row.items() if k != "latency_ms"} for row in csv.DictReader(handle)]


def test_n2_with_the_session_server_records_what_in_process_records_with_one_model_copy(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    pytester.makeconftest(PROBE_CONFTEST)
    (pytester.path / "thresholds.yaml").write_text(THRESHOLDS)
    args = ["-n", "2", "--evals-programs", "zero_shot", "--evals-per-diagnosis", "1", "-k", "migraine or allergy"]
    args += ["--evals-no-mlflow", "--evals-no-cache", f"--evals-data-dir={SHARED_DATA}", "-p", "no:randomly"]
    runs = {}
    for mode in ("in_process", "server"):
        probes = pytester.path / f"probe-{mode}"
        probes.mkdir()
        monkeypatch.setenv("PROBE_DIR", str(probes))
        extra = ["--evals-lm-server"] if mode == "server" else []
        reports = pytester.path / mode
        result = pytester.runpytest_subprocess(*args, *extra, "--evals-report-dir", str(reports / ".evals/reports"))
        assert result.ret in (0, 1), result.stdout.str()[-2000:]
        runs[mode] = (predictions(reports), {p.stem: json.loads(p.read_text()) for p in probes.glob("*.json")})

    (in_process, loaded_before), (served, loaded_after) = runs["in_process"], runs["server"]
    assert len(in_process) == 2 and all(row["error"] == "" for row in in_process)
    assert served == in_process  # same answers, tokens and flags: only latency differs
    assert loaded_before == {"controller": 0, "gw0": 1, "gw1": 1}  # a model copy per worker
    assert loaded_after == {"controller": 0, "gw0": 0, "gw1": 0}  # only the server's
    (log,) = (pytester.path / ".evals/cache/logs").glob("lm_server_*.log")
    text = log.read_text()
    assert text.count("model loaded") == 1 and text.count("POST /v1/chat/completions") == 2
    assert "stopped after 2 completions" in text


def _server_pid(log_dir: Path, timeout_s: float = 120) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for log in log_dir.glob("lm_server_*.log"):
            for line in log.read_text().splitlines():
                if "model loaded" in line:
                    return int(line.split("(pid ")[1].split(")")[0])
        time.sleep(0.2)
    raise AssertionError(f"no server came up in {log_dir}")


def _gone(pid: int, timeout_s: float = 20) -> bool:
    """The process exited (a zombie whose parent is gone counts as exited)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z"):
                return True
        except (OSError, IndexError):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["ctrl-c", "sigterm", "sigkill"])
def test_no_server_outlives_its_session(pytester: pytest.Pytester, sig: signal.Signals) -> None:
    """Ctrl-C and SIGTERM (a CI cancel) stop the server; even SIGKILL leaves no orphan (its stdin closes)."""
    pytester.makepyfile(test_suite="import time\n\ndef test_slow(evals_lm):\n    time.sleep(60)\n")
    cache = pytester.path / "cache"
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--evals-lm-server", "--evals-no-mlflow"]
    command += [f"--evals-cache-dir={cache}", f"--evals-data-dir={SHARED_DATA}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVALS_")}
    process = subprocess.Popen(command, cwd=pytester.path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        pid = _server_pid(cache / "logs")
        time.sleep(1.0)
        process.send_signal(sig)
        process.wait(timeout=60)
        assert _gone(pid), f"the LM server {pid} outlived pytest ({sig.name})"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_server_that_does_not_start_stops_the_session_in_one_line_naming_its_log(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_suite=SUITE)
    bad = pytester.path / "broken.gguf"
    bad.write_bytes(b"not a model")

    result = pytester.runpytest_subprocess(
        f"--evals-lm=llamacpp:{bad}", "--evals-lm-server", "--evals-no-mlflow", f"--evals-data-dir={SHARED_DATA}"
    )

    assert result.ret == pytest.ExitCode.INTERRUPTED
    line = f"*the LM server for 'llamacpp:{bad}' did not start: it exited with status 2; ERROR: LM * cannot be loaded*"
    result.stderr.fnmatch_lines([f"Exit: {line}(log: *lm_server_*.log)"])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    assert " passed" not in result.stdout.str()  # no test ran


def test_a_served_lm_has_the_in_process_name_and_waits_behind_every_sharer() -> None:
    """Same dspy.LM name (so one response cache); the server decodes one call at a time, so a call's
    HTTP timeout allows one call of each process sharing it."""
    from evals.lm.spec import build_lm, parse_lm_spec

    spec = parse_lm_spec("smollm2", timeout_s=30)
    local = build_lm(spec, cache=False)  # llama.cpp loads on first use: nothing loads here
    served = build_lm(spec, cache=False, server={"api_base": "http://127.0.0.1:9/v1", "model": "llamacpp/x"}, sharers=4)

    assert local.model.startswith("llamacpp/SmolLM2-135M-Instruct") and local.engine._llama is None
    assert served.model == "llamacpp/x-" + spec.cache_key() and local.model.endswith("-" + spec.cache_key())
    assert isinstance(served.engine, ServerEngine) and served.engine.timeout_s == 120
    api = build_lm(parse_lm_spec("openai/gpt-4o-mini"), server={"api_base": "http://127.0.0.1:9/v1", "model": "m"})
    assert not isinstance(api.engine, ServerEngine)  # only in-process specs are served
