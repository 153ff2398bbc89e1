"""Generating SQL with a GGUF file through llama.cpp (llama-cpp-python): the CPU backend.

It mirrors :func:`text2sql.generation.generate`: the same chat messages rendered with the
chat template stored in the file, greedy decoding (``num_samples`` = 1) or sampling at
``temperature`` with no top-k/top-p/min-p cut and no penalty, each sample's
log-probability under the model (for self-consistency voting), and stopping at the
model's end-of-generation tokens. The next token is chosen here from the raw logits
(numpy), so decoding means exactly what it means on the transformers path.
llama-cpp-python's high-level API runs one sequence at a time; llama.cpp uses every
core for it, so prompts run one after the other.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from text2sql.generation import Generation
from text2sql.gguf_export import import_llama_cpp
from text2sql.io import DataError


def load_gguf(path: str | Path, *, n_ctx: int = 4096, threads: int | None = None) -> Any:
    """A llama.cpp model from a GGUF file, quiet, using every core (or ``threads``)."""
    path = Path(path)
    if not path.is_file() or path.suffix != ".gguf":
        raise DataError(f"{path}: not a GGUF file; the llama.cpp backend needs --model FILE.gguf "
                        "(the export stage writes them: dvc exp run -S "
                        "'export.formats=[gguf-q4_k_m]')")
    from gguf import GGUFReader

    llama_cpp = import_llama_cpp()
    threads = threads or len(os.sched_getaffinity(0))
    reader = GGUFReader(path)
    arch = reader.get_field("general.architecture")
    trained = reader.get_field(f"{arch.contents() if arch else ''}.context_length")
    if trained is not None:
        n_ctx = min(n_ctx, int(trained.contents()))  # beyond it the model was never trained
    return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads,
                           n_threads_batch=threads, verbose=False, seed=0)


def render_prompt(llm: Any, messages: Sequence[dict[str, str]]) -> str:
    """The chat messages as text, through the chat template stored in the GGUF file."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        raise DataError(f"{llm.model_path}: the GGUF file holds no chat template "
                        "(tokenizer.chat_template); export it again with text2sql's export stage")
    formatter = Jinja2ChatFormatter(template=template, eos_token="", bos_token="",
                                    add_generation_prompt=True)
    return formatter(messages=list(messages)).prompt


def generate_gguf(llm: Any, prompts: Sequence[Sequence[dict[str, str]]], *,
                  max_new_tokens: int = 128, num_samples: int = 1, temperature: float = 0.7,
                  seed: int = 0, score: bool | None = None,
                  progress: bool = True) -> list[Generation]:
    """Generate for every prompt (a list of chat messages); results in input order."""
    import numpy as np
    from tqdm.auto import tqdm

    if num_samples > 1 and temperature <= 0:
        raise ValueError("infer.temperature must be > 0 when infer.num_samples > 1 "
                         "(sampling at temperature 0 gives N copies of the greedy answer)")
    score = num_samples > 1 if score is None else score
    rng = np.random.default_rng(seed)
    n_vocab = llm.n_vocab()
    llama_cpp = import_llama_cpp()
    eog = {t for t in range(n_vocab) if llama_cpp.llama_vocab_is_eog(llm._model.vocab, t)}
    results = []
    for messages in tqdm(prompts, desc="generate", unit="question", disable=not progress):
        prompt = llm.tokenize(render_prompt(llm, messages).encode(), add_bos=False, special=True)
        if len(prompt) + max_new_tokens > llm.n_ctx():
            raise DataError(f"a prompt of {len(prompt)} tokens plus {max_new_tokens} new ones "
                            f"exceeds the context of {llm.n_ctx()} tokens")
        t0 = time.perf_counter()
        texts, logprobs, new_tokens = [], [], 0
        for _ in range(num_samples):
            llm.reset()
            llm.eval(prompt)
            out: list[int] = []
            total = 0.0
            for _ in range(max_new_tokens):
                logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(n_vocab,))
                logits = logits.astype(np.float64)
                if num_samples > 1:
                    p = np.exp((logits - logits.max()) / temperature)
                    token = int(rng.choice(n_vocab, p=p / p.sum()))
                else:
                    token = int(np.argmax(logits))
                if score:
                    total += float(logits[token] - logits.max()
                                   - np.log(np.exp(logits - logits.max()).sum()))
                new_tokens += 1
                if token in eog:
                    break
                out.append(token)
                llm.eval([token])
            texts.append(llm.detokenize(out, special=False).decode("utf-8", errors="replace"))
            logprobs.append(total)
        results.append(Generation(texts=texts, seconds=time.perf_counter() - t0,
                                  new_tokens=new_tokens, logprobs=logprobs if score else []))
    return results
