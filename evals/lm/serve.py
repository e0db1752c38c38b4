"""``python -m evals.lm.serve --lm SPEC``: the harness's own constrained engine over HTTP.

A small OpenAI-compatible server on 127.0.0.1 (``GET /v1/models``, ``POST
/v1/chat/completions``) holding ONE in-process engine: :class:`~evals.lm.llama.LlamaCppEngine`
for ``smollm2`` and ``llamacpp:`` specs, :class:`~evals.lm.mlx.MLXEngine` for ``mlx:`` specs.
A ``response_format`` of type ``json_schema`` is decoded under the same constraint as in
process (a llama.cpp grammar, or the MLX enum trie), so every answer fits the schema;
``json_object`` asks for any JSON object. ``temperature`` (default 0), ``max_tokens``, ``top_p``,
``stop`` and ``seed`` are honoured and the response reports its token usage. Requests are served
on threads and decoded one at a time under the engine's lock: one copy of the model. A bad
request gets a 400 with an OpenAI-style JSON error; the server keeps serving.

The controller starts it for ``--evals-lm-server`` (:mod:`evals.lm.server`). Run by hand, any
OpenAI client can call it; the harness's workers use :class:`evals.lm.server.ServerEngine`, which
always sends the answer's schema (litellm, given an unknown model name, may not).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MAX_BODY_BYTES = 8 * 2**20
ROLES = ("system", "developer", "user", "assistant")


class BadRequest(ValueError):
    """A request the server refuses with HTTP 400 (the message says what is wrong)."""


@dataclass(frozen=True)
class ChatMessage:
    role: str
    text: str


@dataclass(frozen=True)
class ChatConfig:
    """The generation settings an engine reads from a dspy request's ``config``."""

    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    response_format: dict[str, Any] | None = None


@dataclass(frozen=True)
class ChatRequest:
    """What the in-process engines read from a dspy ``Request``: messages (system ones included) and config."""

    messages: tuple[ChatMessage, ...]
    config: ChatConfig = field(default_factory=ChatConfig)
    system: str | None = None


def parse_request(body: Any) -> ChatRequest:
    """Validate an OpenAI chat-completions body; anything the engines cannot honour raises :class:`BadRequest`."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    if body.get("stream"):
        raise BadRequest("stream is not supported")
    if body.get("n", 1) != 1:
        raise BadRequest("n must be 1")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list")
    config = ChatConfig(
        temperature=_number(body, "temperature", 0.0, 2.0),
        max_tokens=_positive_int(body, "max_tokens") or _positive_int(body, "max_completion_tokens"),
        top_p=_number(body, "top_p", 0.0, 1.0),
        stop=_stop(body.get("stop")),
        seed=_int(body, "seed"),
        response_format=_response_format(body.get("response_format")),
    )
    return ChatRequest(tuple(_message(m, i) for i, m in enumerate(messages)), config)


def _message(message: Any, index: int) -> ChatMessage:
    if not isinstance(message, dict) or message.get("role") not in ROLES:
        raise BadRequest(f"messages[{index}] must be an object with a role in {', '.join(ROLES)}")
    content = message.get("content")
    if isinstance(content, list):  # content parts: text only
        if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content):
            raise BadRequest(f"messages[{index}].content: only text parts are supported")
        content = "".join(p["text"] for p in content)
    if not isinstance(content, str):
        raise BadRequest(f"messages[{index}].content must be a string or a list of text parts")
    return ChatMessage(str(message["role"]), content)


def _number(body: dict[str, Any], key: str, low: float, high: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise BadRequest(f"{key} must be a number from {low:g} to {high:g}, found {value!r}")
    return float(value)


def _int(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise BadRequest(f"{key} must be an integer, found {value!r}")
    return value


def _positive_int(body: dict[str, Any], key: str) -> int | None:
    value = _int(body, key)
    if value is not None and value < 1:
        raise BadRequest(f"{key} must be at least 1, found {value}")
    return value


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise BadRequest("stop must be a string or a list of strings")
    return tuple(stops)


def _response_format(value: Any) -> dict[str, Any] | None:
    """``None`` for free text, ``{"type": "json_object"}``, or the schema in the form the engines read."""
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        nested = value.get("json_schema")
        schema = nested.get("schema") if isinstance(nested, dict) else None
        if isinstance(schema, dict):
            return {"type": "json_schema", "schema": schema}
        raise BadRequest("response_format.json_schema.schema must be a JSON schema object")
    raise BadRequest("response_format.type must be text, json_object or json_schema")


def completion_body(response: Any, model: str) -> dict[str, Any]:
    """The OpenAI chat-completion object of an engine's dspy ``Response``."""
    usage = response.usage
    prompt, completion = usage.input_tokens or 0, usage.output_tokens or 0
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": response.message.text or ""},
                "finish_reason": "length" if response.finish_reason == "length" else "stop",
            }
        ],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    }


class EngineServer(ThreadingHTTPServer):
    """The HTTP server and the one engine it serves."""

    daemon_threads = True

    def __init__(self, engine: Any, model: str, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.engine = engine
        self.model = model
        self.calls = 0

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class Handler(BaseHTTPRequestHandler):
    server: EngineServer
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY: a reply goes out as headers then body; on a kept-alive connection Nagle's algorithm
    # would hold the body until the client's delayed ACK of the headers (up to 40 ms a call).
    disable_nagle_algorithm = True

    def do_GET(self) -> None:  # noqa: N802 - the http.server interface
        if self.path.rstrip("/") == "/v1/models":
            model = {"id": self.server.model, "object": "model", "owned_by": "evals"}
            self._reply(200, {"object": "list", "data": [model]})
        else:
            self._error(404, f"no such path: GET {self.path}", "not_found_error")

    def do_POST(self) -> None:  # noqa: N802
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._error(404, f"no such path: POST {self.path}", "not_found_error")
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= MAX_BODY_BYTES:
                raise BadRequest(f"the body must have a Content-Length from 1 to {MAX_BODY_BYTES}")
            try:
                body = json.loads(self.rfile.read(length))
            except ValueError as exc:
                raise BadRequest(f"the body is not JSON ({exc})") from None
            request = parse_request(body)
            response = self.server.engine.complete(request)  # the engine's lock serialises decoding
        except BadRequest as exc:
            self._error(400, str(exc), "invalid_request_error")
            return
        except ValueError as exc:  # llama.cpp: a prompt longer than the context, a schema it cannot compile
            self._error(400, f"{type(exc).__name__}: {exc}", "invalid_request_error")
            return
        except Exception as exc:  # noqa: BLE001 - any engine failure is this request's, never the server's
            self._error(500, f"{type(exc).__name__}: {exc}", "server_error")
            return
        self.server.calls += 1
        self._reply(200, completion_body(response, self.server.model))

    def _error(self, status: int, message: str, kind: str) -> None:
        self.close_connection = True  # the body may be unread: never parse its rest as the next request
        self._reply(status, {"error": {"message": message.splitlines()[0][:500], "type": kind}})

    def _reply(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the http.server signature
        sys.stderr.write(f"evals.lm.serve: {self.address_string()} {format % args}\n")


def load(spec_text: str, *, n_threads: int | None, cache_dir: Path | None) -> tuple[str, Any]:
    """Parse the spec and load its engine now (a bad model fails here, before serving)."""
    from evals.lm.spec import load_engine, parse_lm_spec, worker_threads

    spec = parse_lm_spec(spec_text)
    model_id, engine = load_engine(spec, n_threads=n_threads or worker_threads(1), cache_dir=cache_dir)
    if hasattr(engine, "llama"):
        engine.llama  # noqa: B018 - the model loads now, once
    return model_id, engine


def _write_ready(path: Path, server: EngineServer) -> None:
    """Atomically: whoever polls for the file never reads half of it."""
    temp = path.with_suffix(".tmp")
    temp.write_text(json.dumps({"api_base": server.api_base, "model": server.model, "pid": os.getpid()}))
    os.replace(temp, path)


def _stop_on_stdin_eof(server: EngineServer) -> None:
    """Shut down when the parent's end of the stdin pipe closes (the parent exited, however it ended)."""

    def watch() -> None:
        while sys.stdin.buffer.read(4096):
            pass
        server.shutdown()

    threading.Thread(target=watch, name="evals-serve-stdin", daemon=True).start()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evals.lm.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--lm", default="smollm2", help="In-process LM spec: smollm2, llamacpp:PATH.gguf or mlx:...")
    parser.add_argument("--port", type=int, default=0, help="Port on 127.0.0.1 (0: any free one)")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: all cores)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="Harness cache dir (mlx:smollm2 converts there)")
    parser.add_argument("--ready-file", type=Path, default=None, help="Written with the URL once serving")
    parser.add_argument("--exit-on-stdin-eof", action="store_true", help="Stop when stdin closes")
    args = parser.parse_args(argv)
    from evals.errors import ConfigError

    started = time.perf_counter()
    try:
        model_id, engine = load(args.lm, n_threads=args.threads, cache_dir=args.cache_dir)
    except ConfigError as exc:
        print(f"evals.lm.serve: ERROR: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - llama.cpp and mlx raise many types
        print(f"evals.lm.serve: ERROR: LM {args.lm!r} cannot be loaded: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    server = EngineServer(engine, model_id, args.port)
    print(
        f"evals.lm.serve: model loaded: {model_id} from {args.lm!r} in {time.perf_counter() - started:.1f} s "
        f"(pid {os.getpid()}); serving {server.api_base}",
        flush=True,
    )
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    if args.exit_on_stdin_eof:
        _stop_on_stdin_eof(server)
    if args.ready_file:
        _write_ready(args.ready_file, server)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    print(f"evals.lm.serve: stopped after {server.calls} completions", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
