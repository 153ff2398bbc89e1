"""GGUF files for llama.cpp and Ollama: conversion, quantization, and reading metadata back.

Conversion writes the merged model's tensors and tokenizer with the ``gguf`` package
(llama.cpp's own GGUF library: its writer, tensor-name map and special-vocab reader).
llama.cpp's ``convert_hf_to_gguf.py`` script is not installed by any PyPI package (it
ships only inside the llama-cpp-python sdist), and it recognises a BPE pre-tokenizer by
hashing the token ids of a test text, so a tokenizer trained here (the built-in model's)
is refused. Here the pre-tokenizer is recognised by its split rule in ``tokenizer.json``,
which is what llama.cpp's pre-tokenizer names stand for. Quantization is llama.cpp's own
(``llama_model_quantize`` through llama-cpp-python).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from text2sql.io import DataError

# format name in params -> GGUF file type (llama.cpp's names, lower case)
GGUF_FORMATS = {"gguf-f16": "f16", "gguf-q8_0": "q8_0", "gguf-q4_k_m": "q4_k_m"}
# Hugging Face architecture -> llama.cpp architecture this module writes
ARCHITECTURES = {"Qwen2ForCausalLM": "qwen2"}
# the split regex of a byte-level BPE pre-tokenizer -> llama.cpp's name for that rule
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"
               r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+"
                r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_TOKENIZERS = {QWEN2_SPLIT: "qwen2", LLAMA3_SPLIT: "llama-bpe"}


class UnsupportedModel(DataError):
    """The model cannot be written as GGUF here (architecture or tokenizer)."""


@dataclass(frozen=True)
class GgufInfo:
    """What a GGUF file says about how to chat with it."""

    architecture: str
    file_type: int
    chat_template: str
    eos_token_id: int
    eot_token_id: int | None
    tokens: list[str]


def llama_architecture(model_dir: Path) -> str:
    """llama.cpp's architecture for the model in ``model_dir``; an error names one it lacks."""
    config = json.loads((model_dir / "config.json").read_text())
    names = config.get("architectures") or [config.get("model_type", "?")]
    for name in names:
        if name in ARCHITECTURES:
            return ARCHITECTURES[name]
    raise UnsupportedModel(
        f"{model_dir / 'config.json'}: architecture {', '.join(map(str, names))} cannot be "
        f"exported to GGUF here (supported: {', '.join(ARCHITECTURES)}); export.formats "
        "[merged] still writes the merged model")


def pre_tokenizer_name(tokenizer_file: Path) -> str:
    """llama.cpp's name for the split rule of a byte-level BPE tokenizer (``tokenizer.json``)."""
    spec = json.loads(tokenizer_file.read_text()).get("pre_tokenizer") or {}
    steps = spec.get("pretokenizers", [spec]) if spec.get("type") == "Sequence" else [spec]
    splits = [s["pattern"].get("Regex") for s in steps if s.get("type") == "Split"]
    byte_level = [s for s in steps if s.get("type") == "ByteLevel"]
    if not splits and byte_level and byte_level[0].get("use_regex", True):
        return "gpt-2"  # ByteLevel's own rule is GPT-2's
    if len(splits) == 1 and splits[0] in PRE_TOKENIZERS and byte_level:
        return PRE_TOKENIZERS[splits[0]]
    raise UnsupportedModel(
        f"{tokenizer_file}: pre-tokenizer {json.dumps(spec)[:200]} is not one llama.cpp knows "
        f"by its split rule (known: GPT-2's ByteLevel, {', '.join(PRE_TOKENIZERS.values())})")


def end_of_turn_token(tokenizer: Any) -> str | None:
    """The token that closes an assistant turn in the chat template (``<|im_end|>`` for ChatML)."""
    sentinel = "\x00answer\x00"
    text = tokenizer.apply_chat_template([{"role": "user", "content": "q"},
                                          {"role": "assistant", "content": sentinel}],
                                         tokenize=False)
    after = text.split(sentinel, 1)[1].strip()
    ids = tokenizer(after, add_special_tokens=False)["input_ids"] if after else []
    return tokenizer.convert_ids_to_tokens(ids[0]) if ids else None


def convert_to_gguf(model_dir: str | Path, out_file: str | Path, *, name: str) -> Path:
    """Write the merged model in ``model_dir`` as an f16 GGUF file (norms and biases in f32)."""
    model_dir, out_file = Path(model_dir), Path(out_file)
    arch = llama_architecture(model_dir)
    pre = pre_tokenizer_name(model_dir / "tokenizer.json")

    import gguf
    import numpy as np
    from safetensors import safe_open
    from transformers import AutoTokenizer

    config = json.loads((model_dir / "config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    n_layers = config["num_hidden_layers"]
    writer = gguf.GGUFWriter(out_file, arch)
    writer.add_name(name)
    writer.add_block_count(n_layers)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config.get("num_key_value_heads", config["num_attention_heads"]))
    rope = config.get("rope_parameters") or {}
    writer.add_rope_freq_base(float(rope.get("rope_theta", config.get("rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)

    vocab_size = config["vocab_size"]
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.CONTROL if i in added and added[i].special else
                         gguf.TokenType.USER_DEFINED if i in added else gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=vocab_size)
    special.add_to_gguf(writer, quiet=True)
    if tokenizer.chat_template and special.chat_template is None:
        writer.add_chat_template(tokenizer.chat_template)
    eot = end_of_turn_token(tokenizer) if tokenizer.chat_template else None
    if eot is not None:
        writer.add_eot_token_id(tokenizer.convert_tokens_to_ids(eot))

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], n_layers)
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise DataError(f"{model_dir}: no *.safetensors weights to convert")
    for file in files:
        with safe_open(file, framework="pt") as f:
            for key in sorted(f.keys()):
                new = names.get_name(key, try_suffixes=(".weight", ".bias"))
                if new is None:
                    raise UnsupportedModel(f"{file}: tensor {key!r} has no GGUF name for "
                                           f"architecture {arch}")
                data = f.get_tensor(key).float().numpy()
                writer.add_tensor(new, data.astype(np.float32 if data.ndim == 1 else np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out_file


def quantize_gguf(src: str | Path, dst: str | Path, file_type: str, *, threads: int = 0) -> Path:
    """llama.cpp's quantization of the f16 file ``src`` to ``file_type`` (q8_0, q4_k_m)."""
    import ctypes

    from text2sql.inference.llama_cpp import import_llama_cpp

    llama_cpp = import_llama_cpp()
    ftypes = {"q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
              "q4_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M}
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftypes[file_type]
    params.nthread = threads
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(),
                                        ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama.cpp could not quantize {src} to {file_type} (code {rc})")
    return Path(dst)


def read_gguf_info(path: str | Path) -> GgufInfo:
    """The architecture, file type, chat template, EOS and end-of-turn ids stored in a GGUF file."""
    from gguf import GGUFReader

    reader = GGUFReader(path)

    def value(key: str) -> Any:
        field = reader.get_field(key)
        return None if field is None else field.contents()

    return GgufInfo(architecture=value("general.architecture"),
                    file_type=value("general.file_type"),
                    chat_template=value("tokenizer.chat_template") or "",
                    eos_token_id=value("tokenizer.ggml.eos_token_id"),
                    eot_token_id=value("tokenizer.ggml.eot_token_id"),
                    tokens=value("tokenizer.ggml.tokens") or [])


def tensor_types(path: str | Path) -> dict[str, int]:
    """How many of the file's parameters each tensor type holds, largest first, e.g.
    ``{"Q4_K": 300_000_000, "Q6_K": 90_000_000, "F32": 200_000}``.

    A file's name says what was asked for, not what was written: llama.cpp's k-quants work
    on blocks of 256 values along a row, so a tensor whose rows are not a multiple of 256
    long (Qwen2.5-0.5B: hidden 896) falls back to another type (q5_0, q8_0) for q4_k_m.
    """
    from gguf import GGUFReader

    counts: dict[str, int] = {}
    for tensor in GGUFReader(path).tensors:
        counts[tensor.tensor_type.name] = counts.get(tensor.tensor_type.name, 0) \
            + int(tensor.n_elements)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def describe_tensor_types(counts: dict[str, int]) -> str:
    """``Q4_K 71.2%, Q6_K 20.1%, F32 0.1%`` (shares of the parameters)."""
    total = sum(counts.values()) or 1
    return ", ".join(f"{name} {n / total:.1%}" for name, n in counts.items())
