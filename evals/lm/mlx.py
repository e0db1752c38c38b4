"""A dspy engine that runs an MLX model in process with mlx-lm.

It mirrors ``evals.lm.llama.LlamaCppEngine``: it advertises ``response_format``
support, and when dspy's JSONAdapter sends a schema whose one property is a string enum
(the 22 diagnoses), decoding is constrained to the JSON objects ``{field: value}`` the
schema allows, so the answer always parses. Constraint works on tokens: the allowed
completions are tokenized once into a prefix trie, and a logits processor keeps every
step inside it. Consecutive calls share the long JSONAdapter system prompt, so the KV
cache of the previous call is trimmed to the common prefix and reused.

``mlx`` and ``mlx_lm`` are imported on first use.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evals.errors import ConfigError
from evals.lm.chat import chat_messages, json_schema

INSTALL_HINT = "pip install 'symptom-diagnosis-evals[mlx]' (on Linux also 'mlx[cpu]')"
_END = -1  # trie key marking a complete allowed sequence


@dataclass(frozen=True)
class EnumConstraint:
    """A response schema with a single string-enum property, as JSONAdapter sends for a Literal."""

    field: str
    values: tuple[str, ...]

    def completions(self) -> list[str]:
        """Every text the model may answer: ``json.dumps({field: value})`` for each value."""
        return [json.dumps({self.field: value}) for value in self.values]


def enum_constraint(response_format: Any) -> EnumConstraint | None:
    """The enum constraint in an OpenAI-style ``response_format``, or None if it has none."""
    schema = json_schema(response_format)
    properties = schema.get("properties") if schema else None
    if not isinstance(properties, dict) or len(properties) != 1:
        return None
    ((name, prop),) = properties.items()
    if not isinstance(prop, dict) or prop.get("type", "string") != "string":
        return None
    enum = prop.get("enum")
    if not isinstance(enum, list) or not enum or not all(isinstance(value, str) for value in enum):
        return None
    return EnumConstraint(name, tuple(enum))


class TokenTrie:
    """A prefix tree of token sequences: which tokens may follow a prefix."""

    def __init__(self, sequences: Iterable[Sequence[int]]) -> None:
        self.root: dict[int, Any] = {}
        for sequence in sequences:
            node = self.root
            for token in sequence:
                node = node.setdefault(int(token), {})
            node[_END] = {}

    def next_tokens(self, prefix: Sequence[int]) -> tuple[list[int], bool]:
        """Tokens that may follow ``prefix``, and whether ``prefix`` is itself complete.

        A prefix outside the trie has no continuations and counts as complete, so the
        caller ends generation rather than wander off.
        """
        node = self.root
        for token in prefix:
            if int(token) not in node:
                return [], True
            node = node[int(token)]
        return [token for token in node if token != _END], _END in node


@dataclass
class _Options:
    temperature: float
    max_tokens: int
    top_p: float
    stop: tuple[str, ...]
    seed: int | None
    constraint: EnumConstraint | None


def _options(config: Any) -> _Options:
    return _Options(
        temperature=config.temperature if config.temperature is not None else 0.0,
        max_tokens=config.max_tokens or 256,
        top_p=config.top_p if config.top_p is not None else 0.0,
        stop=tuple(config.stop or ()),
        seed=config.seed,
        constraint=enum_constraint(config.response_format),
    )


@dataclass
class _Generation:
    text: str
    completion_tokens: int
    finish_reason: str


@dataclass
class _PrefixCache:
    """The KV cache of the last call and the tokens it holds."""

    tokens: list[int] = field(default_factory=list)
    cache: list[Any] | None = None

    def take(self, prompt: list[int], model: Any) -> tuple[list[Any], int]:
        """A cache to generate ``prompt`` with, and how many of its tokens are already in it."""
        from mlx_lm.models.cache import can_trim_prompt_cache, make_prompt_cache, trim_prompt_cache

        cache, self.cache = self.cache, None
        if cache is None or not can_trim_prompt_cache(cache):
            return make_prompt_cache(model), 0
        # At least one prompt token must be fed to get the next-token logits.
        common = min(_common_prefix(self.tokens, prompt), len(prompt) - 1)
        if common <= 0:
            return make_prompt_cache(model), 0
        trim_prompt_cache(cache, cache[0].offset - common)
        return cache, common

    def keep(self, tokens: list[int], cache: list[Any]) -> None:
        offset = cache[0].offset
        if offset <= len(tokens):
            self.tokens, self.cache = tokens[:offset], cache


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def resolve_target(target: str, *, cache_dir: Path | None = None) -> tuple[str, str]:
    """``(model path or hub id, short name)`` of an ``mlx:`` target; ``smollm2`` is converted once."""
    _require_mlx()
    if target == "smollm2":
        from evals.lm.files import smollm2_path
        from evals.lm.gguf_to_mlx import convert_cached

        root = cache_dir or Path(os.environ.get("EVALS_CACHE_DIR") or Path.cwd() / ".evals" / "cache")
        return str(convert_cached(smollm2_path(), root / "mlx")), "smollm2"
    path = Path(target).expanduser()
    if path.is_dir():
        return str(path.resolve()), path.resolve().name
    if target.startswith((".", "/", "~")) or target.count("/") != 1:
        # A hub id is exactly "owner/name"; anything else was meant as a directory.
        raise ConfigError(f"LM 'mlx:{target}': {path} is not an MLX model directory")
    return target, target.replace("/", "--")


class MLXEngine:
    """``complete(Request) -> Response`` over one in-process mlx-lm model."""

    supports_response_schema = True
    supported_params = frozenset({"temperature", "max_tokens", "top_p", "stop", "seed", "response_format"})

    def __init__(self, model_path: str, *, name: str | None = None) -> None:
        """Create an engine; the model loads on first use (``from_target`` loads it at once).

        Args:
            model_path: An MLX model directory or a Hugging Face hub id.
            name: Short name for the dspy model string (default: from ``model_path``).
        """
        self.model_path = model_path
        self.name = name or Path(model_path).name.replace("/", "--")
        self._loaded: tuple[Any, Any] | None = None
        self._lock = threading.Lock()
        self._prefix = _PrefixCache()
        self._tries: dict[EnumConstraint, TokenTrie] = {}

    @classmethod
    def from_target(cls, target: str, *, cache_dir: Path | None = None) -> MLXEngine:
        """Build and load the engine for ``smollm2``, a local MLX directory or a hub id.

        Args:
            target: What follows ``mlx:`` in an LM spec.
            cache_dir: The harness cache directory; ``smollm2`` is converted into its
                ``mlx`` subdirectory. Default: ``EVALS_CACHE_DIR`` or ``.evals/cache``.

        Raises:
            ConfigError: mlx-lm is missing or the model cannot be loaded.
        """
        model_path, name = resolve_target(target, cache_dir=cache_dir)
        engine = cls(model_path, name=name)
        engine.load(spec=f"mlx:{target}")
        return engine

    def load(self, spec: str | None = None) -> tuple[Any, Any]:
        """Load the model and tokenizer once; a failure raises ConfigError naming the spec."""
        if self._loaded is None:
            import mlx_lm

            try:
                self._loaded = mlx_lm.load(self.model_path)[:2]
            # Loading can fail in many libraries' ways (hub, files, config); all mean "cannot use this model".
            except Exception as error:  # noqa: BLE001
                where = spec or f"mlx:{self.model_path}"
                raise ConfigError(
                    f"LM {where!r}: cannot load MLX model {self.model_path!r}: {type(error).__name__}: {error}"
                ) from None
        return self._loaded

    def complete(self, request: Any) -> Any:
        from dspy.lm15 import Message, Response, TextPart, Usage

        options = _options(request.config)
        with self._lock:
            model, tokenizer = self.load()
            prompt = prompt_tokens(tokenizer, chat_messages(request))
            result = self._generate(model, tokenizer, prompt, options)
        return Response(
            id=f"mlx-{uuid.uuid4().hex}",
            model=self.name,
            message=Message.assistant([TextPart(result.text)]),
            finish_reason=result.finish_reason,
            usage=Usage(
                input_tokens=len(prompt),
                output_tokens=result.completion_tokens,
                total_tokens=len(prompt) + result.completion_tokens,
            ),
        )

    def stream(self, request: Any) -> Any:
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def close(self) -> None:
        with self._lock:
            self._loaded = None
            self._prefix = _PrefixCache()
            self._tries.clear()

    def _generate(self, model: Any, tokenizer: Any, prompt: list[int], options: _Options) -> _Generation:
        import mlx.core as mx
        from mlx_lm import stream_generate
        from mlx_lm.sample_utils import make_sampler

        if options.seed is not None:
            mx.random.seed(options.seed)
        cache, start = self._prefix.take(prompt, model)
        processors = []
        if options.constraint is not None:
            processors.append(
                _constrain(
                    self._trie(tokenizer, options.constraint), len(prompt) - start, sorted(tokenizer.eos_token_ids)
                )
            )
        text, tokens, finish = "", [], "length"
        for response in stream_generate(
            model,
            tokenizer,
            mx.array(prompt[start:]),
            max_tokens=options.max_tokens,
            sampler=make_sampler(temp=options.temperature, top_p=options.top_p),
            logits_processors=processors,
            prompt_cache=cache,
        ):
            tokens.append(int(response.token))
            text += response.text
            if (cut := _stop_index(text, options.stop)) is not None:
                text, finish = text[:cut], "stop"
                break
            finish = "stop" if response.finish_reason == "stop" else "length"
        self._prefix.keep(prompt + tokens, cache)
        produced = sum(1 for token in tokens if token not in tokenizer.eos_token_ids)
        return _Generation(text=text, completion_tokens=produced, finish_reason=finish)

    def _trie(self, tokenizer: Any, constraint: EnumConstraint) -> TokenTrie:
        if constraint not in self._tries:
            encoded = (tokenizer.encode(text, add_special_tokens=False) for text in constraint.completions())
            self._tries[constraint] = TokenTrie(encoded)
        return self._tries[constraint]


def prompt_tokens(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """The chat-templated prompt as token ids (the template carries any special tokens)."""
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return list(tokenizer.encode(text, add_special_tokens=False))


def _constrain(trie: TokenTrie, prompt_len: int, eos_ids: list[int]) -> Any:
    """A logits processor that allows only tokens keeping the output inside ``trie``.

    mlx-lm passes every token it has fed (the uncached part of the prompt, then the
    output so far), so the output is what follows the first ``prompt_len`` tokens.
    """
    import mlx.core as mx

    def process(tokens: Any, logits: Any) -> Any:
        allowed, complete = trie.next_tokens(tokens[prompt_len:].tolist())
        if complete or not allowed:
            allowed = allowed + eos_ids
        mask = mx.full(logits.shape, -mx.inf, dtype=logits.dtype)
        mask[..., mx.array(allowed)] = 0
        return logits + mask

    return process


def _stop_index(text: str, stops: tuple[str, ...]) -> int | None:
    """Where the first stop string starts in ``text``, or None when none occurs."""
    found = [text.find(stop) for stop in stops if stop and stop in text]
    return min(found) if found else None


def _require_mlx() -> None:
    try:
        import mlx.core  # noqa: F401
        import mlx_lm  # noqa: F401
    except ImportError as error:
        raise ConfigError(f"the mlx backend cannot import mlx and mlx-lm ({error}): {INSTALL_HINT}") from None
