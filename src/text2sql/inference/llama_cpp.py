"""Generating SQL with a GGUF file through llama.cpp (llama-cpp-python): the CPU backend.

It mirrors :func:`text2sql.inference.hf.generate`: the same chat messages rendered with the
chat template stored in the file, greedy decoding (``num_samples`` = 1) or sampling at
``temperature`` with no top-k/top-p/min-p cut and no penalty, each sample's
log-probability under the model (for self-consistency voting), and stopping at the
model's end-of-generation tokens. The next token is chosen here from the raw logits
(numpy), so decoding means exactly what it means on the transformers path.
llama-cpp-python's high-level API runs one sequence at a time; llama.cpp uses every
core for it, so prompts run one after the other.

Generation runs in a child process (:class:`GGUFModel`, through
:mod:`text2sql.runtime.native`): a crash inside llama.cpp (a segmentation fault) becomes a
:class:`~text2sql.runtime.native.NativeCrash` naming the file, its format and the signal, and
the caller (a stage, a test, a server) goes on. :func:`load_gguf` loads in this process, for
the child itself and for what never decodes (the template and the tokenizer).

Models are loaded with no extra buffer types (``use_extra_bufts = False``): no repacked or
AMX weight buffers. On Intel CPUs with AMX those crashed ``decode`` on q8_0 and q4_k_m files
(issue 22), and the repacked kernels round differently from the plain ones, so a file would
answer differently on a machine that has them. What it costs is measured in
``bench/bench_llama_build.py`` (docs/export.md, "llama.cpp build").
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from text2sql.inference.hf import Generation
from text2sql.io import DataError


def import_llama_cpp() -> Any:
    """llama-cpp-python, or an error saying how to install it (it compiles llama.cpp)."""
    try:
        import llama_cpp
    except ImportError as e:
        raise DataError(
            f"llama-cpp-python is not importable ({e}); it builds llama.cpp from source when "
            "installed: install a C++ compiler and CMake (Debian/Ubuntu: apt-get install g++ "
            "cmake; macOS: xcode-select --install && brew install cmake), then `uv sync`") from None
    return llama_cpp


def check_gguf_path(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file() or path.suffix != ".gguf":
        raise DataError(f"{path}: not a GGUF file; the llama.cpp backend needs --model FILE.gguf "
                        "(the export stage writes them: dvc exp run -S "
                        "'export.formats=[gguf-q4_k_m]')")
    return path


def gguf_format(path: str | Path) -> str:
    """The file's weight type as the export formats name it: ``f16``, ``q8_0``, ``q4_k_m``."""
    from gguf import GGUFReader, LlamaFileType

    field = GGUFReader(check_gguf_path(path)).get_field("general.file_type")
    if field is None:
        return "unknown type"
    try:
        return LlamaFileType(int(field.contents())).name.removeprefix("MOSTLY_").lower()
    except ValueError:
        return f"file type {int(field.contents())}"


@contextlib.contextmanager
def _no_extra_buffer_types(llama_cpp: Any) -> Iterator[None]:
    """``use_extra_bufts = False`` for the models loaded inside (llama-cpp-python 0.3.36 has no
    argument for it: ``Llama.__init__`` takes ``llama_model_default_params()`` and sets only
    the fields it knows, llama_cpp/llama.py ~line 227)."""
    import llama_cpp.llama as high_level

    default = llama_cpp.llama_model_default_params

    def params() -> Any:
        p = default()
        p.use_extra_bufts = False
        return p

    high_level.llama_cpp.llama_model_default_params = params
    try:
        yield
    finally:
        high_level.llama_cpp.llama_model_default_params = default


def load_gguf(path: str | Path, *, n_ctx: int = 4096, threads: int | None = None,
              extra_buffers: bool = False) -> Any:
    """A llama.cpp model from a GGUF file, in this process: quiet, every core (or
    ``threads``), no extra buffer types (``extra_buffers=True`` allows them: for
    bench/bench_llama_build.py). Generate through :class:`GGUFModel` instead."""
    path = check_gguf_path(path)
    from gguf import GGUFReader

    llama_cpp = import_llama_cpp()
    threads = threads or len(os.sched_getaffinity(0))
    reader = GGUFReader(path)
    arch = reader.get_field("general.architecture")
    trained = reader.get_field(f"{arch.contents() if arch else ''}.context_length")
    if trained is not None:
        n_ctx = min(n_ctx, int(trained.contents()))  # beyond it the model was never trained
    with contextlib.nullcontext() if extra_buffers else _no_extra_buffer_types(llama_cpp):
        return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads,
                               n_threads_batch=threads, verbose=False, seed=0)


def build_features() -> set[str]:
    """The CPU features the installed llama.cpp was compiled for, from
    ``llama_print_system_info`` (which lists only those built in), e.g. ``{"AVX2", "FMA",
    "F16C", "REPACK", ...}``: the project's portable build has no ``AVX512`` and no ``AMX_INT8``.
    """
    info = import_llama_cpp().llama_print_system_info().decode()
    features = set()
    for part in info.split("|"):
        key, sep, value = part.rpartition("=")
        key = key.split(":")[-1].strip()
        if sep and key and value.strip() == "1":
            features.add(key)
    return features


class LoadedGGUF:
    """What the child process holds (see :class:`GGUFModel`)."""

    def __init__(self, path: str, n_ctx: int, threads: int | None, extra_buffers: bool) -> None:
        self.llm = load_gguf(path, n_ctx=n_ctx, threads=threads, extra_buffers=extra_buffers)

    def generate(self, prompts: Sequence[Sequence[dict[str, str]]], **settings: Any
                 ) -> list[Generation]:
        return generate_gguf(self.llm, prompts, **settings)


class GGUFModel:
    """A GGUF file loaded by llama.cpp in a child process; :meth:`generate` as
    :func:`generate_gguf`. A crash there raises :class:`~text2sql.runtime.native.NativeCrash`
    naming the file, its format and the signal. Close it (or use it as a context manager).
    ``env``: variables for the child (e.g. ``LLAMA_CPP_LIB_PATH``: another llama.cpp build)."""

    def __init__(self, path: str | Path, *, n_ctx: int = 4096, threads: int | None = None,
                 env: dict[str, str] | None = None, extra_buffers: bool = False) -> None:
        from text2sql.runtime.native import ChildWorker

        self.path = check_gguf_path(path)
        self.format = gguf_format(self.path)
        self._child = ChildWorker("text2sql.inference.llama_cpp:LoadedGGUF",
                                  what=f"llama.cpp on {self.path} ({self.format})", env=env,
                                  path=str(self.path), n_ctx=n_ctx, threads=threads,
                                  extra_buffers=extra_buffers)

    @property
    def pid(self) -> int:
        return self._child.pid

    def generate(self, prompts: Sequence[Sequence[dict[str, str]]], **settings: Any
                 ) -> list[Generation]:
        return self._child.call("generate", [list(p) for p in prompts], **settings)

    def close(self) -> None:
        self._child.close()

    def __enter__(self) -> GGUFModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
                                  new_tokens=new_tokens, logprobs=logprobs if score else [],
                                  prompt_tokens=len(prompt)))
    return results
