"""Tests of the mlx-lm backend: GGUF conversion, the engine, and agreement with llama.cpp.

Pure pieces (tensor names, the Q/K un-permutation, the enum constraint and its token
trie) run fast on small arrays. Tests that convert or load SmolLM2 are marked ``slow``;
on a Linux CPU one JSONAdapter call takes tens of seconds (mlx's CPU wheel uses the
reference BLAS), on Apple Silicon well under one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# ImportError, not only ModuleNotFoundError: a Linux ``pip install mlx`` without ``mlx[cpu]``
# installs the package but not a backend, and importing it fails.
mx = pytest.importorskip("mlx.core", exc_type=ImportError)
pytest.importorskip("mlx_lm", exc_type=ImportError)

from evals.errors import ConfigError  # noqa: E402
from evals.lm.gguf_to_mlx import (  # noqa: E402
    _quantization,
    convert_cached,
    hf_name,
    is_complete,
    translate_weights,
    unpermute_rows,
)
from evals.lm.mlx import MLXEngine, TokenTrie, _constrain, enum_constraint  # noqa: E402

SHORT_PROMPT = "Once upon a time"
AGREEING_TOKENS = 4  # SmolLM2's top-2 logit gaps over these steps are >= 0.3, far above the backends' noise


def llama_cpp_permute(weights: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """``LlamaModel.permute`` from llama.cpp's convert_hf_to_gguf.py, verbatim in numpy."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


# --- pure functions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gguf", "hf"),
    [
        ("token_embd.weight", "model.embed_tokens.weight"),
        ("token_embd.scales", "model.embed_tokens.scales"),
        ("output_norm.weight", "model.norm.weight"),
        ("output.weight", "lm_head.weight"),
        ("blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight"),
        ("blk.7.attn_k.biases", "model.layers.7.self_attn.k_proj.biases"),
        ("blk.12.attn_v.scales", "model.layers.12.self_attn.v_proj.scales"),
        ("blk.29.attn_output.weight", "model.layers.29.self_attn.o_proj.weight"),
        ("blk.3.ffn_gate.weight", "model.layers.3.mlp.gate_proj.weight"),
        ("blk.3.ffn_up.weight", "model.layers.3.mlp.up_proj.weight"),
        ("blk.3.ffn_down.weight", "model.layers.3.mlp.down_proj.weight"),
        ("blk.3.attn_norm.weight", "model.layers.3.input_layernorm.weight"),
        ("blk.3.ffn_norm.weight", "model.layers.3.post_attention_layernorm.weight"),
    ],
)
def test_hf_name_maps_llama_cpp_names(gguf: str, hf: str) -> None:
    assert hf_name(gguf) == hf


@pytest.mark.parametrize("name", ["rope_freqs.weight", "blk.0.attn_qkv.weight", "blk.x.attn_q.weight"])
def test_hf_name_rejects_tensors_a_llama_lacks(name: str) -> None:
    with pytest.raises(ValueError, match="unexpected tensor"):
        hf_name(name)


@pytest.mark.parametrize(("n_head", "n_head_kv", "head_dim", "columns"), [(9, 3, 64, 5), (4, 4, 8, 1), (2, 1, 4, 3)])
def test_unpermute_undoes_llama_cpp_permute(n_head: int, n_head_kv: int, head_dim: int, columns: int) -> None:
    rng = np.random.default_rng(0)
    q = rng.standard_normal((n_head * head_dim, columns))
    k = rng.standard_normal((n_head_kv * head_dim, columns))
    assert np.array_equal(unpermute_rows(llama_cpp_permute(q, n_head, n_head), n_head), q)
    assert np.array_equal(unpermute_rows(llama_cpp_permute(k, n_head, n_head_kv), n_head_kv), k)


def test_unpermute_restores_rotate_half_order_of_one_head() -> None:
    # Hugging Face keeps a head's rotary halves apart (a0 a1 | b0 b1); llama.cpp interleaves them.
    hf_rows = np.array([[10], [11], [20], [21]])
    assert llama_cpp_permute(hf_rows, 1).ravel().tolist() == [10, 20, 11, 21]
    assert unpermute_rows(llama_cpp_permute(hf_rows, 1), 1).ravel().tolist() == [10, 11, 20, 21]


def test_unpermute_works_on_packed_mlx_arrays() -> None:
    packed = np.arange(2 * 8 * 3, dtype=np.uint32).reshape(16, 3)
    permuted = llama_cpp_permute(packed, 2)
    assert np.array_equal(np.array(unpermute_rows(mx.array(permuted), 2)), packed)


def test_unpermute_rejects_rows_that_do_not_split_into_heads() -> None:
    with pytest.raises(ValueError, match="rotary pairs"):
        unpermute_rows(np.zeros((6, 2)), 2)


def test_translate_weights_unpermutes_q_with_n_head_and_k_with_n_head_kv() -> None:
    q, k, v = np.arange(8).reshape(8, 1), np.arange(4).reshape(4, 1), np.arange(4).reshape(4, 1)
    weights = {
        "blk.0.attn_q.weight": llama_cpp_permute(q, 2),
        "blk.0.attn_k.weight": llama_cpp_permute(k, 2, 1),
        "blk.0.attn_v.weight": v,
    }
    out = translate_weights(weights, n_head=2, n_head_kv=1)
    assert np.array_equal(out["model.layers.0.self_attn.q_proj.weight"], q)
    assert np.array_equal(out["model.layers.0.self_attn.k_proj.weight"], k)
    assert np.array_equal(out["model.layers.0.self_attn.v_proj.weight"], v)


def test_quantization_names_layers_whose_bits_differ() -> None:
    def layer(rows: int, columns: int, bits: int) -> dict[str, np.ndarray]:
        return {"weight": np.zeros((rows, columns * bits // 32)), "scales": np.zeros((rows, columns // 32))}

    weights = {
        f"{name}.{kind}": array
        for name, arrays in [("model.embed_tokens", layer(10, 64, 8)), ("a", layer(4, 64, 4)), ("b", layer(4, 64, 4))]
        for kind, array in arrays.items()
    }
    assert _quantization(weights) == {
        "group_size": 32,
        "bits": 4,
        "mode": "affine",
        "model.embed_tokens": {"group_size": 32, "bits": 8},
    }
    assert _quantization({"model.norm.weight": np.zeros(4)}) is None


def _schema(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "json_schema",
        "json_schema": {"name": "out", "schema": {"type": "object", "properties": properties}},
    }


def test_enum_constraint_reads_a_single_string_enum() -> None:
    constraint = enum_constraint(_schema({"diagnosis": {"type": "string", "enum": ["allergy", "common cold"]}}))
    assert constraint is not None
    assert constraint.completions() == ['{"diagnosis": "allergy"}', '{"diagnosis": "common cold"}']


@pytest.mark.parametrize(
    "response_format",
    [
        None,
        {"type": "json_object"},
        _schema({"diagnosis": {"type": "string"}}),
        _schema({"a": {"enum": ["x"]}, "b": {"enum": ["y"]}}),
        _schema({"n": {"type": "integer", "enum": [1, 2]}}),
        _schema({"n": "not a schema"}),
    ],
)
def test_enum_constraint_is_none_for_other_formats(response_format: Any) -> None:
    assert enum_constraint(response_format) is None


def test_token_trie_allows_only_continuations_of_allowed_sequences() -> None:
    trie = TokenTrie([[1, 2, 3], [1, 2, 4], [1, 5]])
    assert trie.next_tokens([]) == ([1], False)
    assert sorted(trie.next_tokens([1])[0]) == [2, 5]
    assert trie.next_tokens([1, 2, 4]) == ([], True)
    assert trie.next_tokens([9]) == ([], True)


def test_constrain_masks_every_token_outside_the_trie() -> None:
    process = _constrain(TokenTrie([[3, 1], [3, 2]]), prompt_len=2, eos_ids=[0])
    logits = mx.zeros((1, 6))
    first = np.array(process(mx.array([7, 8]), logits))[0]
    assert np.isfinite(first).nonzero()[0].tolist() == [3]
    second = np.array(process(mx.array([7, 8, 3]), logits))[0]
    assert np.isfinite(second).nonzero()[0].tolist() == [1, 2]
    done = np.array(process(mx.array([7, 8, 3, 2]), logits))[0]
    assert np.isfinite(done).nonzero()[0].tolist() == [0]


def test_from_target_names_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not an MLX model directory"):
        MLXEngine.from_target(str(tmp_path / "missing"))


def test_from_target_turns_a_load_failure_into_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import mlx_lm

    def offline(path: str) -> Any:
        raise OSError("cannot reach huggingface.co")

    monkeypatch.setattr(mlx_lm, "load", offline)
    with pytest.raises(ConfigError, match="mlx:mlx-community/SmolLM2.*cannot reach huggingface.co"):
        MLXEngine.from_target("mlx-community/SmolLM2-135M-Instruct")


# --- the real model ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    from evals.lm.spec import smollm2_path

    try:
        return smollm2_path()
    except ConfigError as error:
        pytest.skip(str(error))


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("evals-cache")


@pytest.fixture(scope="session")
def mlx_dir(smollm2_gguf: Path, cache_root: Path) -> Path:
    return convert_cached(smollm2_gguf, cache_root / "mlx")


@pytest.fixture(scope="session")
def engine(mlx_dir: Path, cache_root: Path) -> MLXEngine:
    return MLXEngine.from_target("smollm2", cache_dir=cache_root)


@pytest.fixture(scope="session")
def llama(smollm2_gguf: Path) -> Any:
    from evals.lm.llama import load_llama

    return load_llama(model_path=str(smollm2_gguf), n_ctx=256, n_threads=1, logits_all=True, verbose=False)


@pytest.mark.slow
def test_convert_writes_a_llama_config_from_the_metadata(mlx_dir: Path) -> None:
    assert is_complete(mlx_dir)
    config = json.loads((mlx_dir / "config.json").read_text())
    expected = {
        "model_type": "llama",
        "hidden_size": 576,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "rope_theta": 100000.0,
        "vocab_size": 49152,
        "tie_word_embeddings": True,
        "rope_traditional": False,
        "eos_token_id": 2,
    }
    assert {key: config[key] for key in expected} == expected
    assert config["rms_norm_eps"] == pytest.approx(1e-5)
    assert config["quantization"]["bits"] == 4 and config["quantization"]["group_size"] == 32
    tokenizer_config = json.loads((mlx_dir / "tokenizer_config.json").read_text())
    assert tokenizer_config["eos_token"] == "<|im_end|>" and "<|im_start|>" in tokenizer_config["chat_template"]


@pytest.mark.slow
def test_convert_cached_reuses_an_entry_and_replaces_a_damaged_one(smollm2_gguf: Path, mlx_dir: Path) -> None:
    assert convert_cached(smollm2_gguf, mlx_dir.parent) == mlx_dir
    (mlx_dir / "config.json").write_text("{not json")
    assert convert_cached(smollm2_gguf, mlx_dir.parent) == mlx_dir
    assert is_complete(mlx_dir)
    assert not [p for p in mlx_dir.parent.iterdir() if p.name.startswith(".")]  # no staging left behind


@pytest.mark.slow
def test_tokenizer_matches_llama_cpp(engine: MLXEngine, llama: Any) -> None:
    from evals.lm.mlx import prompt_tokens

    _, tokenizer = engine.load()
    texts = ["Hello world 12345, it's   don't\n\n  naïve 🤖", '{"diagnosis": "urinary tract infection"}']
    for text in texts:
        assert tokenizer.encode(text, add_special_tokens=False) == llama.tokenize(
            text.encode(), add_bos=False, special=True
        )
    chat = prompt_tokens(tokenizer, [{"role": "user", "content": "I sneeze a lot."}])
    rendered = tokenizer.decode(chat)
    assert rendered.endswith("<|im_start|>assistant\n")
    assert chat == llama.tokenize(rendered.encode(), add_bos=False, special=True)


@pytest.mark.slow
def test_logits_and_greedy_tokens_agree_with_llama_cpp(engine: MLXEngine, llama: Any) -> None:
    # A wrong Q/K permutation leaves position 0 (no rotation) intact but drops later
    # correlations to about 0.8-0.97 and changes the third greedy token.
    from mlx_lm.generate import generate_step

    model, tokenizer = engine.load()
    prompt = tokenizer.encode(SHORT_PROMPT, add_special_tokens=False)
    ours = [int(token) for token, _ in generate_step(mx.array(prompt), model, max_tokens=AGREEING_TOKENS)]
    theirs = []
    for token in llama.generate(prompt, temp=0.0, reset=True):
        theirs.append(int(token))
        if len(theirs) == AGREEING_TOKENS:
            break
    assert ours == theirs, (tokenizer.decode(ours), tokenizer.decode(theirs))

    sequence = prompt + ours
    mlx_logits = np.array(model(mx.array(sequence)[None])[0].astype(mx.float32))
    llama.reset()
    llama.eval(sequence)
    llama_logits = np.array(llama.scores[: len(sequence)])
    correlations = [np.corrcoef(a, b)[0, 1] for a, b in zip(mlx_logits, llama_logits)]
    assert min(correlations) > 0.99, correlations


@pytest.mark.slow
def test_dspy_predict_returns_one_of_the_22_labels(engine: MLXEngine) -> None:
    import dspy

    from evals.labels import DIAGNOSES, Diagnosis

    fields = {"symptoms": (str, dspy.InputField()), "diagnosis": (Diagnosis, dspy.OutputField())}
    diagnose = dspy.Signature(fields, "Diagnose the patient's symptoms.")
    lm = dspy.LM("mlx/smollm2", engine=engine, num_retries=0, temperature=0.0, max_tokens=64, cache=False)
    with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
        prediction = dspy.Predict(diagnose)(symptoms="I keep sneezing, my nose runs and my eyes itch.")
    assert prediction.diagnosis in DIAGNOSES
    (call,) = lm.history
    assert call["outputs"] == [json.dumps({"diagnosis": prediction.diagnosis})]
    assert call["usage"]["prompt_tokens"] > 100 and call["usage"]["completion_tokens"] > 0
