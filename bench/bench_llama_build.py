"""The llama.cpp build and loading settings, side by side: what the portable build costs.

    python bench/bench_llama_build.py                       # the installed (portable) build only
    python bench/bench_llama_build.py --native-lib /tmp/native/llama_cpp/lib

pyproject.toml builds llama.cpp for one fixed x86-64 ISA (x86-64-v3: AVX2, FMA, F16C; no
AVX-512, no AMX) and the project loads GGUF files with no extra buffer types (no repacked or
AMX weights): issue 22. This measures both choices against the alternatives on the same
files, in one run: a Qwen2.5-0.5B-shaped model (hidden 896, intermediate 4864, 14 heads,
2 key-value heads; ``--layers`` of them, random weights, the built-in tokenizer) exported
with the export core to f16, q8_0 and q4_k_m, then one chat prompt (a schema and a question,
``--prompt-tokens`` long) answered greedily with ``--new-tokens`` tokens, by:

- portable: the installed build, no extra buffer types (what the project runs);
- portable + repack: the installed build with extra buffer types (weight repacking);
- native (``--native-lib``): a build for this machine's own CPU (``-march=native``), with
  extra buffer types, as llama-cpp-python builds by default. Build one from the sdist:
  ``uv build --wheel -o /tmp/w -C cmake.define.GGML_NATIVE=ON -C cmake.define.LLAVA_BUILD=OFF``
  in the unpacked ``llama_cpp_python-<version>`` folder, then unzip the wheel and pass its
  ``llama_cpp/lib``.

Every setting runs in its own llama.cpp child process (text2sql.inference.llama_cpp.GGUFModel); the
rounds alternate the settings (A B C A B C ...), so a drift in the machine's speed hits them
all. Prints the median seconds per answer, the ratio to "portable" measured round by round
(median of the per-round ratios), and whether the answer's tokens equal portable's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from tabulate import tabulate

REPO = Path(__file__).resolve().parents[1]


def make_model(out: Path, layers: int) -> Path:
    """A Qwen2.5-0.5B-shaped random model, exported to f16, q8_0 and q4_k_m GGUF files."""
    from text2sql.export.gguf import convert_to_gguf, quantize_gguf
    from text2sql.modeling.tiny import build_tiny_model

    texts = ["SELECT name FROM singer WHERE age > 30 ORDER BY name",
             "How many singers are older than 30?", "CREATE TABLE singer (id INTEGER, name TEXT)"
             ] * 50
    model_dir = build_tiny_model(texts, out / "hf", hidden_size=896, intermediate_size=4864,
                                 num_hidden_layers=layers, num_attention_heads=14,
                                 num_key_value_heads=2, vocab_size=2048, seed=0)
    f16 = convert_to_gguf(model_dir, out / "model-f16.gguf", name="bench")
    quantize_gguf(f16, out / "model-q8_0.gguf", "q8_0")
    quantize_gguf(f16, out / "model-q4_k_m.gguf", "q4_k_m")
    return out


def prompt(tokens: int) -> list[dict[str, str]]:
    schema = "\n".join(f"CREATE TABLE t{i} (id INTEGER PRIMARY KEY, name TEXT, value REAL, "
                       f"t{i + 1}_id INTEGER REFERENCES t{i + 1}(id));" for i in range(200))
    words = schema.split()[: max(8, tokens // 2)]  # about two tokens per word here
    return [{"role": "system", "content": "Write one SQLite query."},
            {"role": "user", "content": " ".join(words) + "\nHow many rows has t1?"}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--native-lib", type=Path,
                        help="llama_cpp/lib of a llama-cpp-python built with GGML_NATIVE=ON")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--formats", default="f16,q8_0,q4_k_m")
    args = parser.parse_args()

    from text2sql.inference.llama_cpp import GGUFModel, build_features

    settings = [("portable", {}, False), ("portable + repack", {}, True)]
    if args.native_lib:
        if not (args.native_lib / "libllama.so").is_file():
            sys.exit(f"{args.native_lib}: no libllama.so there (pass the wheel's llama_cpp/lib)")
        settings.append(("native + repack", {"LLAMA_CPP_LIB_PATH": str(args.native_lib)}, True))
    print(f"installed build: {' '.join(sorted(build_features()))}")
    messages = [prompt(args.prompt_tokens)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = make_model(Path(tmp), args.layers)
        for fmt in args.formats.split(","):
            models = {name: GGUFModel(out / f"model-{fmt}.gguf", env=env, extra_buffers=extra)
                      for name, env, extra in settings}
            try:
                seconds: dict[str, list[float]] = {name: [] for name in models}
                texts: dict[str, list[str]] = {}
                for round_ in range(args.rounds + 1):  # round 0: warm-up, not counted
                    for name, model in models.items():
                        gen = model.generate(messages, max_new_tokens=args.new_tokens,
                                             progress=False)[0]
                        texts[name] = gen.texts
                        if round_:
                            seconds[name].append(gen.seconds)
            finally:
                for model in models.values():
                    model.close()
            base = seconds["portable"]
            for name in models:
                ratios = [s / b for s, b in zip(seconds[name], base, strict=True)]
                rows.append([fmt, name, f"{statistics.median(seconds[name]):.3f}",
                             f"{statistics.median(ratios):.2f}",
                             "yes" if texts[name] == texts["portable"] else "no"])
    print(f"\n{args.layers} layers of Qwen2.5-0.5B's shape, a {args.prompt_tokens}-token prompt "
          f"(about) and {args.new_tokens} new tokens, {args.rounds} rounds:\n")
    print(tabulate(rows, headers=["format", "setting", "s / answer (median)",
                                  "time vs portable", "same tokens"], tablefmt="github"))


if __name__ == "__main__":
    main()
