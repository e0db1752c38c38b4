"""One model server per session (``--evals-lm-server``), shared by every xdist worker.

With an in-process backend each worker loads its own copy of the model (10 workers × a 4 GB
MLX model is 40 GB). With ``--evals-lm-server`` the controller starts ``python -m
evals.lm.serve`` (:mod:`evals.lm.serve`) before the workers: one process, one copy of the
model, the harness's own constrained engine behind an OpenAI-compatible endpoint. The workers
reach it through :class:`ServerEngine`, a dspy engine that always sends the answer's JSON
schema, under the same ``dspy.LM`` name as in process, so the answers, the records and the LM
response cache are those of an in-process run.

The server is stopped at the end of the session; it also stops by itself when the controller's
end of its stdin pipe closes, so not even a killed controller leaves it running.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evals.errors import ConfigError, LMUnavailable
from evals.lm.chat import chat_messages, json_schema, openai_response

STARTUP_TIMEOUT_S = 300.0
"""How long the model may take to load (converting ``mlx:smollm2`` the first time included)."""
STOP_TIMEOUT_S = 10.0


@dataclass
class LMServer:
    """A running session server: its process, base URL, the model id it serves and its log."""

    process: subprocess.Popen[bytes]
    api_base: str
    model: str
    log: Path

    def for_workers(self) -> dict[str, str]:
        """What a worker needs to reach it (sent in ``workerinput``; see :func:`evals.lm.spec.build_lm`)."""
        return {"api_base": self.api_base, "model": self.model}

    def stop(self) -> None:
        """Terminate the server (kill it if it does not exit within :data:`STOP_TIMEOUT_S`)."""
        stop_process(self.process)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.stdin is not None:
        process.stdin.close()
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_session_server(
    spec_text: str, *, log_dir: Path, cache_dir: Path, timeout_s: float = STARTUP_TIMEOUT_S
) -> LMServer:
    """Start ``python -m evals.lm.serve`` for an in-process LM spec and wait until it serves.

    Raises:
        ConfigError: The spec is not an in-process model (an API or server LM needs no session server).
        LMUnavailable: The server did not start (one line, naming its log).
    """
    from evals.lm.spec import IN_PROCESS, parse_lm_spec

    spec = parse_lm_spec(spec_text)
    if spec.backend not in IN_PROCESS:
        raise ConfigError(
            f"--evals-lm-server serves an in-process model (smollm2, llamacpp:PATH.gguf, mlx:...), "
            f"not {spec.spec!r}, which is already reached over the network: drop --evals-lm-server"
        )
    log_dir.mkdir(parents=True, exist_ok=True)
    stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{time.monotonic_ns() % 10**6:06d}"
    log, ready = log_dir / f"lm_server_{stamp}.log", log_dir / f"lm_server_{stamp}.ready.json"
    command = [sys.executable, "-m", "evals.lm.serve", "--lm", spec.spec, "--port", "0"]
    command += ["--ready-file", str(ready), "--cache-dir", str(cache_dir), "--exit-on-stdin-eof"]
    with log.open("wb") as handle:
        # Its own session: a Ctrl-C in the terminal reaches pytest, which stops the server itself.
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        info = _wait_ready(process, ready, timeout_s)
    except BaseException as exc:  # a failed start, or Ctrl-C / SIGTERM while the model loads: no orphan
        stop_process(process)
        if isinstance(exc, LMUnavailable):
            said = f"; {last_line(log).removeprefix('evals.lm.serve: ')}" if last_line(log) else ""
            raise LMUnavailable(f"the LM server for {spec.spec!r} did not start: {exc}{said} (log: {log})") from None
        raise
    finally:
        ready.unlink(missing_ok=True)
    return LMServer(process, info["api_base"], info["model"], log)


def last_line(log: Path) -> str:
    """The log's last non-empty line (where the server says why it stopped), bounded in length."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def _wait_ready(process: subprocess.Popen[bytes], ready: Path, timeout_s: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready.is_file():
            info = json.loads(ready.read_text())
            return {"api_base": str(info["api_base"]), "model": str(info["model"])}
        if process.poll() is not None:
            raise LMUnavailable(f"it exited with status {process.returncode}")
        time.sleep(0.1)
    raise LMUnavailable(f"it was not serving after {timeout_s:.0f} s")


class ServerEngine:
    """``complete(Request) -> Response`` over the session server's ``/v1/chat/completions``.

    Like the in-process engines it advertises ``response_format`` support, so dspy's
    JSONAdapter always sends the output schema (the 22-label enum) and the server decodes under
    the same constraint, whatever litellm knows of the model name.
    """

    supports_response_schema = True
    supported_params = frozenset({"temperature", "max_tokens", "top_p", "stop", "seed", "response_format"})

    def __init__(self, api_base: str, *, timeout_s: float = 120.0) -> None:
        self.api_base = api_base.rstrip("/")
        self.timeout_s = timeout_s

    def complete(self, request: Any) -> Any:
        result = self.post("/chat/completions", openai_body(request))
        return openai_response(result, "")

    def stream(self, request: Any) -> Any:
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def close(self) -> None:
        """Nothing to release: each call is one HTTP request."""

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST JSON; an HTTP error raises ``RuntimeError`` with the server's own message."""
        data = json.dumps(body).encode()
        http = urllib.request.Request(
            self.api_base + path, data=data, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(http, timeout=self.timeout_s) as response:
                return dict(json.loads(response.read()))
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")
            try:
                detail = json.loads(detail)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                pass
            raise RuntimeError(f"LM server {self.api_base}: HTTP {error.code}: {detail}") from None


def openai_body(request: Any) -> dict[str, Any]:
    """The OpenAI chat-completions body of a dspy LM request (its schema as ``response_format``)."""
    config = request.config
    body: dict[str, Any] = {"messages": chat_messages(request)}
    for key in ("temperature", "max_tokens", "top_p", "seed"):
        if getattr(config, key) is not None:
            body[key] = getattr(config, key)
    if config.stop:
        body["stop"] = list(config.stop)
    schema = json_schema(config.response_format)
    if schema is not None:
        name = config.response_format.get("name") or "output"
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}
    elif config.response_format:
        body["response_format"] = {"type": "json_object"}
    return body
