"""A dspy engine that runs a GGUF model in process with llama-cpp-python.

It advertises ``response_format`` support, so dspy's JSONAdapter sends the output
JSON schema (with the 22-label enum) and llama.cpp enforces it as a grammar: the
answer always parses. Consecutive calls share the long JSONAdapter system prompt,
and llama.cpp reuses the cached KV prefix of the previous call.
"""

from __future__ import annotations

import json
import threading
from functools import lru_cache
from typing import Any

from evals.lm.chat import chat_messages, json_schema, openai_response

N_CTX = 4096


class LlamaCppEngine:
    """``complete(Request) -> Response`` over one in-process ``llama_cpp.Llama``."""

    supports_response_schema = True
    supported_params = frozenset({"temperature", "max_tokens", "top_p", "stop", "seed", "response_format"})

    def __init__(self, model_path: str, *, n_threads: int | None = None, n_ctx: int = N_CTX) -> None:
        self.model_path = model_path
        self.n_threads = n_threads or 1
        self.n_ctx = n_ctx
        self._llama: Any = None
        self._lock = threading.Lock()

    @property
    def llama(self) -> Any:
        """The loaded model (loaded on first use, once per process)."""
        if self._llama is None:
            # One generation thread is fastest on small CPUs; prompt evaluation uses the share of cores.
            self._llama = load_llama(
                model_path=self.model_path,
                n_ctx=self.n_ctx,
                n_threads=1,
                n_threads_batch=self.n_threads,
                n_batch=512,
                verbose=False,
            )
        return self._llama

    def complete(self, request: Any) -> Any:
        messages = chat_messages(request)
        options = _options(request.config)
        with self._lock:
            result = self.llama.create_chat_completion(messages=messages, **options)
        return openai_response(result, self.model_path)

    def stream(self, request: Any) -> Any:
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def close(self) -> None:
        self._llama = None


def load_llama(**kwargs: Any) -> Any:
    """Construct ``llama_cpp.Llama`` with llama.cpp's extra weight buffer types switched off.

    A native build on a CPU with AMX puts matmuls on the AMX buffer type, which
    crashes (SIGSEGV in ``ldtilecfg``) where the kernel does not grant AMX tiles, as in
    the VMs this runs on. The same switch turns off weight repacking, which Q4_1 models
    such as SmolLM2 do not use, so it costs nothing here. llama-cpp-python has no
    argument for it, so the default model params are adjusted for this one construction.
    """
    import llama_cpp
    from llama_cpp import llama as llama_module

    original = llama_module.llama_cpp.llama_model_default_params

    def without_extra_buffers() -> Any:
        params = original()
        params.use_extra_bufts = False
        return params

    with _LOAD_LOCK:
        llama_module.llama_cpp.llama_model_default_params = without_extra_buffers
        try:
            return llama_cpp.Llama(**kwargs)
        finally:
            llama_module.llama_cpp.llama_model_default_params = original


_LOAD_LOCK = threading.Lock()


def _options(config: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "temperature": config.temperature if config.temperature is not None else 0.0,
        "max_tokens": config.max_tokens or 256,
    }
    if config.top_p is not None:
        options["top_p"] = config.top_p
    if config.stop:
        options["stop"] = list(config.stop)
    if config.seed is not None:
        options["seed"] = config.seed
    schema = json_schema(config.response_format)
    if schema is not None:
        options["grammar"] = _grammar(json.dumps(schema, sort_keys=True))
    elif config.response_format:
        options["response_format"] = {"type": "json_object"}
    return options


@lru_cache(maxsize=32)
def _grammar(schema_json: str) -> Any:
    """Compile a JSON schema to a llama.cpp grammar once per distinct schema."""
    from llama_cpp import LlamaGrammar

    return LlamaGrammar.from_json_schema(schema_json, verbose=False)
