"""``text2sql preset``: switch the train settings to a real model in one command."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

DESCRIPTION = """\
Write a preset's train settings (presets/NAME.yaml) into the train: section of
params.yaml, with the batch settings for a GPU with 24 or 80 GB of memory. The
values are checked first; comments and layout of params.yaml stay. Then run the
pipeline with `dvc exp run` (or `dvc repro`). Going back to the built-in toy model:
`git checkout params.yaml`.
"""

EPILOG = """\
examples:
  text2sql preset --list
  text2sql preset qwen2.5-coder-1.5b                  # 24 GB card (RTX 3090/4090, A10, L4)
  text2sql preset qwen2.5-coder-7b --gpu-memory 80    # A100/H100 80 GB

exit status: 0 written; 2 unknown preset or the result would not validate.
"""


def register(subparsers: Any) -> None:
    from text2sql.presets import GPU_MEMORY_GB

    p = subparsers.add_parser(
        "preset", help="write a real model's train settings into params.yaml",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", nargs="?", help="preset name (file name in presets/ without .yaml)")
    p.add_argument("--gpu-memory", type=int, choices=GPU_MEMORY_GB, default=24, metavar="GB",
                   help="GPU memory in GB: 24 or 80 (default: %(default)s)")
    p.add_argument("--params", type=Path, default=Path("params.yaml"), metavar="FILE",
                   help="params file to write (default: %(default)s)")
    p.add_argument("--presets-dir", type=Path, default=Path("presets"), metavar="DIR",
                   help="folder of preset files (default: %(default)s)")
    p.add_argument("--list", action="store_true", help="list the presets and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from text2sql.presets import apply_preset, preset_names

    if args.list or not args.name:
        print("\n".join(preset_names(args.presets_dir)))
        return 0 if args.list else 2
    params = apply_preset(args.name, args.gpu_memory, args.params, args.presets_dir)
    print(f"preset: {args.name} ({args.gpu_memory} GB) written to {args.params}: "
          f"{params.model_name}, batch {params.batch_size} x {params.gradient_accumulation_steps}"
          f", lr {params.learning_rate}; run `dvc exp run`")
    return 0
