"""Convert a llama-architecture GGUF file to an MLX model directory, without torch or the hub.

``mx.load`` reads GGUF directly: Q4_0, Q4_1 and Q8_0 tensors come back as MLX affine
quantized triples (``weight``, ``scales``, ``biases``, groups of 32), everything else
as floats. This module renames llama.cpp's tensors to the names mlx-lm's ``llama``
model expects, undoes the row permutation that ``convert_hf_to_gguf.py`` applies to
the query and key projections, and rebuilds ``config.json`` and a byte-level BPE
``tokenizer.json`` from the GGUF metadata. The weights stay as quantized as they
were; nothing is dequantized.

Converted models are cached under a key of the GGUF file's digest; the directory is
built in a temporary sibling and renamed into place, under a file lock, so concurrent
xdist workers convert once and never see half a model.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from evals.errors import ConfigError

#: Bump when the layout of a converted directory changes, so old cache entries are missed.
FORMAT_VERSION = 1
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")

_TOP_LEVEL_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_BLOCK_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_norm": "input_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "ffn_norm": "post_attention_layernorm",
}
_BLOCK = re.compile(r"^blk\.(\d+)\.(\w+)\.(weight|scales|biases|bias)$")
_TOP = re.compile(r"^(\w+)\.(weight|scales|biases|bias)$")
# GPT-2's pre-tokenizer split, which llama.cpp also uses for the "smollm" pre-tokenizer after
# isolating each digit.
_BYTE_LEVEL_PRE = {"gpt2": False, "default": False, "smollm": True, "starcoder": True}


def hf_name(gguf_name: str) -> str:
    """Map a llama.cpp tensor name to the mlx-lm / Hugging Face llama name.

    Args:
        gguf_name: For example ``blk.3.attn_q.scales`` or ``token_embd.weight``.

    Returns:
        For example ``model.layers.3.self_attn.q_proj.scales``.

    Raises:
        ValueError: The name is not one a llama model has.
    """
    if match := _BLOCK.match(gguf_name):
        layer, part, kind = match.groups()
        if part in _BLOCK_NAMES:
            return f"model.layers.{layer}.{_BLOCK_NAMES[part]}.{kind}"
    elif (match := _TOP.match(gguf_name)) and match.group(1) in _TOP_LEVEL_NAMES:
        return f"{_TOP_LEVEL_NAMES[match.group(1)]}.{match.group(2)}"
    raise ValueError(f"unexpected tensor {gguf_name!r} in a llama GGUF")


def unpermute_rows(weight: Any, n_head: int) -> Any:
    """Undo llama.cpp's interleaving of the rotary halves of each head's rows.

    ``convert_hf_to_gguf.py`` reorders the rows of ``q_proj`` (with ``n_head``) and
    ``k_proj`` (with ``n_head_kv``) so that llama.cpp's interleaved RoPE sees the pairs
    that Hugging Face's rotate-half RoPE uses. mlx-lm uses rotate-half, so the rows go
    back. Quantization runs along rows, so the same reorder applies to a packed weight,
    its scales and its biases alike. Works on numpy and mlx arrays.

    Args:
        weight: A 2-D array whose first axis is ``n_head * head_dim``.
        n_head: The number of heads this projection has.
    """
    rows = weight.shape[0]
    if rows % (2 * n_head):
        raise ValueError(f"{rows} rows do not split into {n_head} heads of rotary pairs")
    split = weight.reshape(n_head, rows // n_head // 2, 2, *weight.shape[1:])
    return split.swapaxes(1, 2).reshape(weight.shape)


def translate_weights(weights: dict[str, Any], n_head: int, n_head_kv: int) -> dict[str, Any]:
    """Rename every tensor and unpermute the query and key projections."""
    out = {}
    for name, value in weights.items():
        target = hf_name(name)
        if ".self_attn.q_proj." in target:
            value = unpermute_rows(value, n_head)
        elif ".self_attn.k_proj." in target:
            value = unpermute_rows(value, n_head_kv)
        out[target] = value
    return out


def model_config(meta: dict[str, Any], weights: dict[str, Any]) -> dict[str, Any]:
    """Write mlx-lm's llama ``config.json`` from GGUF metadata and the translated tensors."""
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise ConfigError(f"GGUF architecture {arch!r} cannot be converted to MLX; only 'llama' is supported")

    def value(key: str) -> Any:
        if f"llama.{key}" not in meta:
            raise ConfigError(f"GGUF metadata lacks llama.{key}")
        return meta[f"llama.{key}"]

    n_head = int(value("attention.head_count"))
    hidden = int(value("embedding_length"))
    config: dict[str, Any] = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden,
        "num_hidden_layers": int(value("block_count")),
        "intermediate_size": int(value("feed_forward_length")),
        "num_attention_heads": n_head,
        "num_key_value_heads": int(meta.get("llama.attention.head_count_kv", n_head)),
        "head_dim": int(meta.get("llama.rope.dimension_count", hidden // n_head)),
        "rms_norm_eps": float(value("attention.layer_norm_rms_epsilon")),
        "rope_theta": float(meta.get("llama.rope.freq_base", 10000.0)),
        "rope_traditional": False,
        "max_position_embeddings": int(meta.get("llama.context_length", 2048)),
        "vocab_size": int(meta.get("llama.vocab_size", len(meta["tokenizer.ggml.tokens"]))),
        "tie_word_embeddings": "lm_head.weight" not in weights,
        "bos_token_id": _int_or_none(meta.get("tokenizer.ggml.bos_token_id")),
        "eos_token_id": _int_or_none(meta.get("tokenizer.ggml.eos_token_id")),
    }
    if quantization := _quantization(weights):
        config["quantization"] = quantization
    return config


def _quantization(weights: dict[str, Any]) -> dict[str, Any] | None:
    """mlx-lm's quantization entry: the commonest (group size, bits), with per-layer exceptions."""
    layers = {}
    for name, scales in weights.items():
        if name.endswith(".scales"):
            layer = name.removesuffix(".scales")
            packed = weights[f"{layer}.weight"]
            columns = scales.shape[-1] * 32  # GGUF blocks are 32 wide
            bits = packed.shape[-1] * 32 // columns
            layers[layer] = {"group_size": 32, "bits": bits}
    if not layers:
        return None
    bit_counts: dict[int, int] = {}
    for params in layers.values():
        bit_counts[params["bits"]] = bit_counts.get(params["bits"], 0) + 1
    common = max(bit_counts, key=lambda bits: bit_counts[bits])
    quantization: dict[str, Any] = {"group_size": 32, "bits": common, "mode": "affine"}
    quantization.update({layer: params for layer, params in layers.items() if params["bits"] != common})
    return quantization


def tokenizer_json(meta: dict[str, Any]) -> str:
    """Build the GPT-2 style byte-level BPE ``tokenizer.json`` from GGUF metadata."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    if meta.get("tokenizer.ggml.model") != "gpt2":
        raise ConfigError(f"GGUF tokenizer {meta.get('tokenizer.ggml.model')!r} is not supported; only 'gpt2' (BPE)")
    pre = str(meta.get("tokenizer.ggml.pre", "default"))
    if pre not in _BYTE_LEVEL_PRE:
        raise ConfigError(f"GGUF pre-tokenizer {pre!r} is not supported; expected one of {sorted(_BYTE_LEVEL_PRE)}")
    tokens = list(meta["tokenizer.ggml.tokens"])
    merges = [tuple(merge.split(" ", 1)) for merge in meta["tokenizer.ggml.merges"]]
    tokenizer = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.pre_tokenizer = (
        pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
        if _BYTE_LEVEL_PRE[pre]
        else byte_level
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False) for i in _control_ids(meta)])
    return str(tokenizer.to_str())


def tokenizer_config(meta: dict[str, Any]) -> dict[str, Any]:
    """The ``tokenizer_config.json`` that makes transformers load ``tokenizer.json`` as is."""
    tokens = meta["tokenizer.ggml.tokens"]

    def token(key: str) -> str | None:
        index = _int_or_none(meta.get(f"tokenizer.ggml.{key}_token_id"))
        return tokens[index] if index is not None else None

    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": token("bos"),
        "eos_token": token("eos"),
        "unk_token": token("unknown"),
        "pad_token": token("padding"),
        "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", False)),
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(meta.get("llama.context_length", 2048)),
    }
    if "tokenizer.chat_template" in meta:
        config["chat_template"] = str(meta["tokenizer.chat_template"])
    return {key: value for key, value in config.items() if value is not None}


def _control_ids(meta: dict[str, Any]) -> list[int]:
    types = meta.get("tokenizer.ggml.token_type")
    if types is None:
        return []
    control, user_defined = 3, 4  # llama.cpp's token types
    return [i for i, kind in enumerate(types.tolist()) if kind in (control, user_defined)]


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value.item() if hasattr(value, "item") else value)


def _plain(meta: dict[str, Any]) -> dict[str, Any]:
    """Scalar mx arrays in the metadata become Python numbers; lists and strings stay."""
    return {key: value.item() if hasattr(value, "ndim") and value.ndim == 0 else value for key, value in meta.items()}


def convert(gguf: Path, out_dir: Path) -> Path:
    """Convert ``gguf`` into the (new or empty) directory ``out_dir`` and return it.

    Raises:
        ConfigError: The file is not a llama GGUF with a GPT-2 style tokenizer.
    """
    import mlx.core as mx

    try:
        raw, meta = mx.load(str(gguf), return_metadata=True)
    except (RuntimeError, ValueError) as error:
        raise ConfigError(f"cannot read GGUF file {gguf}: {error}") from None
    meta = _plain(meta)  # type: ignore[arg-type]  # mx.load(return_metadata=True) returns a dict pair
    weights = translate_weights(
        raw,  # type: ignore[arg-type]
        n_head=int(meta["llama.attention.head_count"]),
        n_head_kv=int(meta.get("llama.attention.head_count_kv", meta["llama.attention.head_count"])),
    )
    config = model_config(meta, weights)
    out_dir.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(out_dir / "model.safetensors"), weights, metadata={"format": "mlx"})
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    (out_dir / "tokenizer.json").write_text(tokenizer_json(meta))
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(meta), indent=2))
    generation = {"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"]}
    (out_dir / "generation_config.json").write_text(json.dumps(generation, indent=2))
    return out_dir


def is_complete(model_dir: Path) -> bool:
    """Whether ``model_dir`` holds every file of a converted model and a readable config."""
    if not all((model_dir / name).is_file() for name in REQUIRED_FILES):
        return False
    try:
        json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return True


def convert_cached(gguf: Path, cache_dir: Path) -> Path:
    """Return the MLX directory of ``gguf`` under ``cache_dir``, converting it once.

    The entry is keyed by the GGUF file's digest. One process converts while the others
    wait on a file lock; a damaged entry is converted again rather than trusted.
    """
    from filelock import FileLock

    from evals.lm.files import file_digest

    cache_dir.mkdir(parents=True, exist_ok=True)
    key = f"{gguf.stem}-{file_digest(gguf)}-v{FORMAT_VERSION}"
    target = cache_dir / key
    if is_complete(target):
        return target
    with FileLock(str(cache_dir / f"{key}.lock")):
        if is_complete(target):
            return target
        shutil.rmtree(target, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=cache_dir))
        try:
            convert(gguf, staging)
            staging.chmod(0o755)  # mkdtemp makes it private; the cache is shared like any other
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target
