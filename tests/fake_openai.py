"""A fake OpenAI-compatible LM server on 127.0.0.1, for the harness's own tests and benchmarks.

It plays a "keyword" model: the answer is the first of the 22 diagnoses named in the symptoms
of the last user message (else ``default_label``), written the way the request asks for it: a
JSON object when ``response_format`` or dspy's JSONAdapter prompt asks for one, ``[[ ## field ## ]]``
sections for dspy's ChatAdapter, the bare label otherwise. Latency and faults are settings that
a test may change at any time (plain attributes, or ``POST /config`` from another process):

* ``latency`` seconds before answering, plus ``random.uniform(0, jitter)``;
* ``rate_limit_every=N`` (every Nth call) or ``rate_limit_rate=p``: HTTP 429 with ``Retry-After``;
* ``max_concurrency=K``: a call arriving while K are being answered gets a 429 (a provider's cap);
* ``error_rate=p``: HTTP 500; ``hang``: no answer for ``hang_seconds`` (released when the server stops);
* ``garbage="content"`` (or True): a well-formed completion whose text no adapter parses;
  ``garbage="body"``: HTTP 200 whose body is no JSON at all.

429s are answered at once and never count as in flight. Endpoints: ``POST /v1/chat/completions``
(``stream: true`` answers SSE), ``GET /v1/models``, ``GET /health``, ``GET /stats``,
``POST /stats/reset``, ``POST /config``. Only chat completions enter the statistics, so polling
``/stats`` does not disturb them.

Usage::

    with FakeOpenAI(latency=0.3) as server:           # in process, on a free port
        lm = dspy.LM("openai/fake", api_base=server.base_url, api_key="x")
        ...
        server.stats.peak_in_flight

    python -m tests.fake_openai --port 0 --latency 0.5   # prints the base URL, serves until SIGTERM
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import pytest

from evals.labels import DIAGNOSES

HOST = "127.0.0.1"
SETTINGS = (
    "model",
    "latency",
    "jitter",
    "rate_limit_every",
    "rate_limit_rate",
    "retry_after",
    "error_rate",
    "hang",
    "hang_seconds",
    "garbage",
    "max_concurrency",
    "default_label",
    "answer_field",
)
"""The knobs a test may set, as attributes, keyword arguments, ``POST /config`` keys or CLI flags."""
GARBAGE_TEXT = "Sorry, I cannot help with medical questions."
GARBAGE_BODY = "<html><body><h1>upstream hiccup</h1></body></html>"
NO_ANSWER = 0
"""The status recorded for a call that got no answer (a hang released at stop, a client gone)."""
_OUTPUT_FIELD = re.compile(r"^\d+\. `(\w+)`", re.MULTILINE)
_MARKER = re.compile(r"\[\[ ## (\w+) ## \]\]")
_BACKTICKED = re.compile(r"`(\w+)`")


def keyword_label(symptoms: str, default: str = "allergy") -> str:
    """The first diagnosis (in label order) named in ``symptoms``, case-insensitively, else ``default``."""
    text = symptoms.lower()
    return next((label for label in DIAGNOSES if label in text), default)


def message_text(message: dict[str, Any]) -> str:
    """The text of a chat message whose content is a string or a list of parts."""
    content = message.get("content")
    if isinstance(content, list):
        return "\n".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""


def symptoms_part(prompt: str) -> str:
    """The symptoms of a dspy prompt: after the field header, before the "Respond with" instructions."""
    return prompt.lower().split("## symptoms ## ]]")[-1].split("respond with")[0]


def requested_fields(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The output fields a request asks for, each with its JSON schema (empty when only the prompt names it).

    From ``response_format``'s schema properties when given; else from the system message's
    "Your output fields are" list; else from the last user message's "Respond with" sentence.
    """
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema") or {}
        properties = schema.get("properties")
        if isinstance(properties, dict) and properties:
            defs = schema.get("$defs") or {}
            return {name: _resolve_ref(prop, defs) for name, prop in properties.items()}
    messages = body.get("messages") or []
    system = "\n".join(message_text(m) for m in messages if m.get("role") == "system")
    if "Your output fields are:" in system:
        section = system.split("Your output fields are:", 1)[1].split("All interactions will be", 1)[0]
        names = _OUTPUT_FIELD.findall(section)
        if names:
            return {name: {} for name in names}
    user = _last_user_text(messages)
    instructions = user.split("Respond with", 1)[1] if "Respond with" in user else ""
    names = _MARKER.findall(instructions) or _BACKTICKED.findall(instructions)
    return {name: {} for name in names if name != "completed"} or {"diagnosis": {}}


def answer_style(body: dict[str, Any]) -> str:
    """``"json"``, ``"chat"`` (ChatAdapter sections) or ``"text"``, from what the request asks for."""
    if (body.get("response_format") or {}).get("type") in ("json_schema", "json_object"):
        return "json"
    messages = body.get("messages") or []
    user = _last_user_text(messages)
    if "Respond with a JSON object" in user:
        return "json"
    if "[[ ## completed ## ]]" in user or any("[[ ## completed ## ]]" in message_text(m) for m in messages):
        return "chat"
    return "text"


def answer_content(body: dict[str, Any], label: str, answer_field: str = "diagnosis") -> str:
    """The assistant text that answers ``label`` in every field and the form the request asks for."""
    style = answer_style(body)
    if style == "text":
        return label
    values = {name: _field_value(name, schema, label, answer_field) for name, schema in requested_fields(body).items()}
    if style == "json":
        return json.dumps(values)
    sections = [
        f"[[ ## {name} ## ]]\n{value if isinstance(value, str) else json.dumps(value)}"
        for name, value in values.items()
    ]
    return "\n\n".join([*sections, "[[ ## completed ## ]]"])


def _field_value(name: str, schema: dict[str, Any], label: str, answer_field: str) -> Any:
    enum = schema.get("enum")
    if name == answer_field or (enum and label in enum):
        return label
    if enum:
        return enum[0]
    empty = {"integer": 0, "number": 0.0, "boolean": False, "array": [], "object": {}, "null": None}
    return empty.get(str(schema.get("type")), f"The symptoms name {label}.")


def _resolve_ref(prop: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    ref = prop.get("$ref", "") if isinstance(prop, dict) else ""
    return defs.get(ref.rsplit("/", 1)[-1], {}) if ref else prop


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    return next((message_text(m) for m in reversed(messages) if m.get("role") == "user"), "")


def _error_body(message: str, kind: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


class FakeStats:
    """Thread-safe counters of the chat-completion calls: totals, in flight, statuses, timestamps.

    ``records`` holds one ``(start, end, status)`` per finished call, in ``time.time()`` seconds
    so that another process can line them up with its own clock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.total = self.in_flight = self.peak_in_flight = 0
        self.statuses: dict[int, int] = {}
        self.records: list[tuple[float, float, int]] = []

    def arrive(self) -> int:
        """Count a new call; return its 1-based number since the last reset."""
        with self._lock:
            self.total += 1
            return self.total

    def admit(self, limit: int) -> bool:
        """Enter the in-flight set unless ``limit`` (> 0) calls are in it already."""
        with self._lock:
            if limit > 0 and self.in_flight >= limit:
                return False
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            return True

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def record(self, start: float, status: int) -> None:
        with self._lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1
            self.records.append((start, time.time(), status))

    def reset(self) -> None:
        """Forget the history; the calls in flight stay counted (and set the new peak)."""
        with self._lock:
            self.total, self.peak_in_flight = 0, self.in_flight
            self.statuses, self.records = {}, []

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy (status codes become string keys, as JSON wants)."""
        with self._lock:
            return {
                "total": self.total,
                "in_flight": self.in_flight,
                "peak_in_flight": self.peak_in_flight,
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "records": [list(r) for r in self.records],
            }


class FakeOpenAI:
    """The server, run by a background thread; a context manager that starts it on a free port.

    Every name in :data:`SETTINGS` is a keyword argument and a plain attribute read afresh by each call.

    Args:
        port: TCP port on 127.0.0.1; 0 picks a free one.
        label_for: ``label_for(symptoms, default)`` -> label; :func:`keyword_label` by default.
        seed: Seeds the random draws (jitter, rates) for reproducible runs.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        model: str = "fake",
        latency: float = 0.0,
        jitter: float = 0.0,
        rate_limit_every: int = 0,
        rate_limit_rate: float = 0.0,
        retry_after: float = 1.0,
        error_rate: float = 0.0,
        hang: bool = False,
        hang_seconds: float = 3600.0,
        garbage: bool | str | None = None,
        max_concurrency: int = 0,
        default_label: str = "allergy",
        answer_field: str = "diagnosis",
        label_for: Callable[[str, str], str] = keyword_label,
        seed: int | None = None,
    ) -> None:
        self.requested_port, self.model, self.label_for = port, model, label_for
        self.latency, self.jitter, self.error_rate, self.garbage = latency, jitter, error_rate, garbage
        self.rate_limit_every, self.rate_limit_rate, self.retry_after = rate_limit_every, rate_limit_rate, retry_after
        self.max_concurrency, self.hang, self.hang_seconds = max_concurrency, hang, hang_seconds
        self.default_label, self.answer_field = default_label, answer_field
        self.stats = FakeStats()
        self.last_request: dict[str, Any] | None = None
        self._random = random.Random(seed)
        self._random_lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def configure(self, **settings: Any) -> dict[str, Any]:
        """Set some of :data:`SETTINGS`; return all of them. Unknown names raise ``ValueError``."""
        unknown = sorted(set(settings) - set(SETTINGS))
        if unknown:
            raise ValueError(f"unknown fake_openai settings {unknown}; known: {', '.join(SETTINGS)}")
        for name, value in settings.items():
            setattr(self, name, value)
        return {name: getattr(self, name) for name in SETTINGS}

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeOpenAI is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def base_url(self) -> str:
        """What ``dspy.LM(..., api_base=...)`` and the openai client want: the URL ending in ``/v1``."""
        return f"{self.url}/v1"

    def reset_stats(self) -> None:
        self.stats.reset()

    def start(self) -> Self:
        server = _Server((HOST, self.requested_port), self)
        self._server, self._stopping = server, threading.Event()
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"fake-openai:{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, release hanging and waiting calls, drop idle keep-alive connections, join all threads."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # wakes the calls sleeping out their latency or hang
        server.shutdown()
        server.close_all()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _draw(self, probability: float) -> bool:
        if probability <= 0:
            return False
        with self._random_lock:
            return self._random.random() < probability

    def _delay(self) -> float:
        with self._random_lock:
            return max(0.0, self.latency + (self._random.uniform(0, self.jitter) if self.jitter > 0 else 0.0))

    def _complete(self, body: dict[str, Any]) -> Reply | None:
        """Decide the reply to one chat completion (None: no answer) and count it before it is sent.

        Counting before sending means a client that has its answer also finds it in the statistics.
        """
        start = time.time()
        self.last_request = body
        reply = self._decide(body, self.stats.arrive())
        self.stats.record(start, reply.status if reply else NO_ANSWER)
        return reply

    def _decide(self, body: dict[str, Any], number: int) -> Reply | None:
        every = int(self.rate_limit_every or 0)
        if (every > 0 and number % every == 0) or self._draw(self.rate_limit_rate):
            return _rate_limited(self.retry_after, "Rate limit reached for requests")
        if not self.stats.admit(int(self.max_concurrency or 0)):
            return _rate_limited(self.retry_after, f"Too many concurrent requests (limit {self.max_concurrency})")
        try:
            wait = self.hang_seconds if self.hang else self._delay()
            if (wait > 0 and self._stopping.wait(wait)) or self._stopping.is_set():
                return None
            if self._draw(self.error_rate):
                message = "The server had an error while processing your request."
                return _json_reply(500, _error_body(message, "server_error", "internal_error"))
            if self.garbage == "body":
                return Reply(200, GARBAGE_BODY, "text/html")
            return self._answer(body)
        finally:
            self.stats.leave()

    def _answer(self, body: dict[str, Any]) -> Reply:
        prompt = _last_user_text(body.get("messages") or [])
        label = self.label_for(symptoms_part(prompt), self.default_label)
        content = GARBAGE_TEXT if self.garbage else answer_content(body, label, self.answer_field)
        prompt_tokens = max(1, sum(len(message_text(m).split()) for m in body.get("messages") or []))
        completion_tokens = max(1, len(content.split()))
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        head = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "created": int(time.time()),
            "model": str(body.get("model") or self.model),
            "system_fingerprint": "fake_openai",
        }
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            chunks = _stream_chunks(head, content, usage if include_usage else None)
            events = "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in chunks) + "data: [DONE]\n\n"
            return Reply(200, events, "text/event-stream", {"Cache-Control": "no-cache", "Connection": "close"})
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "logprobs": None,
            "finish_reason": "stop",
        }
        return _json_reply(200, {**head, "object": "chat.completion", "choices": [choice], "usage": usage})


@dataclass(frozen=True)
class Reply:
    """One HTTP answer, decided before it is written."""

    status: int
    text: str
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def _json_reply(status: int, payload: Any, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, json.dumps(payload), "application/json", headers or {})


def _rate_limited(retry_after: float, message: str) -> Reply:
    seconds = str(int(retry_after)) if retry_after == int(retry_after) else f"{retry_after:g}"
    headers = {"Retry-After": seconds, "retry-after-ms": str(math.ceil(retry_after * 1000))}
    return _json_reply(429, _error_body(message, "requests", "rate_limit_exceeded"), headers)


def _stream_chunks(head: dict[str, Any], content: str, usage: dict[str, int] | None) -> list[dict[str, Any]]:
    def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {
            **head,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    chunks = [chunk({"role": "assistant", "content": ""}, None)]
    chunks += [chunk({"content": piece}, None) for piece in re.findall(r"\S*\s*", content) if piece]
    chunks.append(chunk({}, "stop"))
    if usage is not None:
        chunks.append({**head, "object": "chat.completion.chunk", "choices": [], "usage": usage})
    return chunks


def _drop(connection: socket.socket) -> None:
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _Server(ThreadingHTTPServer):
    """Keeps its handler threads and their connections, so that :meth:`close_all` can end them all.

    ThreadingHTTPServer's threads are daemons, which ``server_close()`` does not join; and a
    handler blocks reading the next request of a keep-alive connection for as long as the client
    keeps it open.
    """

    request_queue_size = 256  # the default 5 would drop bursts of concurrent connects

    def __init__(self, address: tuple[str, int], fake: FakeOpenAI) -> None:
        super().__init__(address, _Handler)
        self.fake = fake
        self._lock = threading.Lock()
        self._live: dict[threading.Thread, socket.socket] = {}

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(target=self._serve, args=(request, client_address), daemon=True)
        with self._lock:
            self._live[thread] = request
        thread.start()

    def _serve(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._lock:
                self._live.pop(threading.current_thread(), None)

    def close_all(self, timeout: float = 10.0) -> None:
        """After ``shutdown()`` (no new connection comes): drop every connection, join every handler."""
        with self._lock:
            live = dict(self._live)
        for connection in live.values():
            _drop(connection)
        for thread in live:
            thread.join(timeout)
        self.server_close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away is no error worth a traceback on stderr."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as providers do; stop() drops idle connections
    # TCP_NODELAY, as production servers set it: a reply goes out as headers then body, and Nagle's
    # algorithm would hold the body until the client's delayed ACK of the headers (up to 40 ms a call).
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        path, fake = self.path.split("?", 1)[0].rstrip("/"), self.server.fake
        if path == "/health":
            self.send(_json_reply(200, {"status": "ok"}))
        elif path in ("/v1/models", "/models"):
            model = {"id": fake.model, "object": "model", "created": 0, "owned_by": "fake_openai"}
            self.send(_json_reply(200, {"object": "list", "data": [model]}))
        elif path in ("/stats", "/v1/stats"):
            self.send(_json_reply(200, fake.stats.snapshot()))
        else:
            self.send_not_found(path)

    def do_POST(self) -> None:
        path, fake = self.path.split("?", 1)[0].rstrip("/"), self.server.fake
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            if not isinstance(body, dict):
                raise TypeError("the body is no JSON object")
        except (ValueError, TypeError) as exc:
            self.send(_json_reply(400, _error_body(f"Invalid JSON body: {exc}", "invalid_request_error", "bad_json")))
            return
        if path in ("/v1/chat/completions", "/chat/completions"):
            reply = fake._complete(body)
            if reply is None:
                self.close_connection = True
            else:
                self.send(reply)
        elif path in ("/stats/reset", "/v1/stats/reset"):
            fake.reset_stats()
            self.send(_json_reply(200, fake.stats.snapshot()))
        elif path in ("/config", "/v1/config"):
            try:
                self.send(_json_reply(200, fake.configure(**body)))
            except ValueError as exc:
                self.send(_json_reply(400, _error_body(str(exc), "invalid_request_error", "unknown_setting")))
        else:
            self.send_not_found(path)

    def send_not_found(self, path: str) -> None:
        self.send(_json_reply(404, _error_body(f"Unknown path {path!r}", "invalid_request_error", "not_found")))

    def send(self, reply: Reply) -> None:
        data = reply.text.encode()
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in reply.headers.items():
                self.send_header(name, value)  # "Connection: close" also sets close_connection
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client gave up (its own timeout) or stop() dropped the connection
            self.close_connection = True


@pytest.fixture(name="fake_openai")
def fake_openai_fixture() -> Iterator[FakeOpenAI]:
    """A started :class:`FakeOpenAI` with default settings (instant keyword answers), stopped after the test."""
    with FakeOpenAI() as server:
        yield server


def get_json(url: str, *, data: dict[str, Any] | None = None, timeout: float = 5.0) -> Any:
    """GET (or POST ``data`` to) a URL of the server and decode its JSON answer."""
    body = None if data is None else json.dumps(data).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def keep_alive_round_trip_ms(base_url: str, body: dict[str, Any], calls: int = 20) -> float:
    """The median milliseconds of ``calls`` chat completions one after another on one kept-alive connection."""
    import http.client
    import statistics
    from urllib.parse import urlsplit

    url = urlsplit(base_url)
    connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=30)
    data, times = json.dumps(body).encode(), []
    try:
        for _ in range(calls):
            started = time.perf_counter()
            connection.request("POST", f"{url.path}/chat/completions", data, {"Content-Type": "application/json"})
            connection.getresponse().read()
            times.append(time.perf_counter() - started)
    finally:
        connection.close()
    return statistics.median(times) * 1000


@contextmanager
def fake_openai_process(*flags: str, timeout: float = 20.0) -> Iterator[str]:
    """Run the CLI in a subprocess (``flags`` as on its command line); yield its base URL; SIGTERM it at exit.

    Raises:
        RuntimeError: It printed no URL, or did not exit with status 0 on SIGTERM.
    """
    command = [sys.executable, "-m", "tests.fake_openai", "--port", "0", *flags]
    # The harness tests are not installed: the subprocess finds them from the repository root.
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = process.stdout.readline().strip() if process.stdout else ""
        if not line.startswith("http://"):
            raise RuntimeError(f"fake_openai did not start (exit code {process.poll()}): {line!r}")
        yield line
    finally:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.returncode != 0:  # reached only when the block raised nothing
        raise RuntimeError(f"fake_openai did not stop cleanly on SIGTERM (exit code {process.returncode})")


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM or Ctrl-C; print the base URL (``http://127.0.0.1:PORT/v1``) first."""
    parser = argparse.ArgumentParser(prog="python -m tests.fake_openai", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="Port on 127.0.0.1 (0: a free one)")
    parser.add_argument("--model", default="fake", help="Model id listed by /v1/models")
    for flag, kind, text in (
        ("latency", float, "Seconds before each answer"),
        ("jitter", float, "Extra random seconds, up to this many"),
        ("rate-limit-every", int, "Answer 429 to every Nth call"),
        ("rate-limit-rate", float, "Answer 429 with this probability"),
        ("retry-after", float, "Seconds in the Retry-After header of a 429"),
        ("error-rate", float, "Answer 500 with this probability"),
        ("max-concurrency", int, "Answer 429 beyond this many calls in flight (0: no cap)"),
        ("seed", int, "Seed of the random draws"),
    ):
        parser.add_argument(f"--{flag}", type=kind, help=text)
    parser.add_argument("--hang", action="store_true", help="Never answer (until the server stops)")
    parser.add_argument("--garbage", choices=("content", "body"), help="Answer unparseable text or a non-JSON body")
    parser.add_argument("--default-label", default="allergy", help="The answer when no diagnosis is named")
    args = vars(parser.parse_args(argv))
    settings = {key: value for key, value in args.items() if value is not None}
    server = FakeOpenAI(**settings).start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    print(server.base_url, flush=True)
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
