"""``llmpq import``: a GGUF checkpoint (a file, or a built-in real model) as a local HF checkpoint."""

from __future__ import annotations

import argparse

from llmpq.cli.common import add_subcommand

EPILOG = """examples:
  llmpq import --builtin smollm2-135m --out results/models/smollm2-135m   # the shipped real model
  llmpq import --gguf qwen2-0.5b.Q8_0.gguf --out models/qwen2-0.5b      # any llama/mistral/qwen2/bloom GGUF
  llmpq import --list                                                  # the built-in names

The output directory holds bf16 safetensors, config, tokenizer and generation config (what every
other subcommand reads as --model), data/heldout.txt and data/calibration.txt (English text that
ships with Python, disjoint), and llmpq_import.json: the source file, its hash and the quantization
its tensors were stored in (a Q4_1 GGUF imports as bf16 holding Q4_1's values).
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_subcommand(
        sub,
        "import",
        help="import a GGUF checkpoint as a local HF checkpoint",
        description="Read a GGUF checkpoint with transformers and save it as a local HF-format "
        "checkpoint (bf16 safetensors, config, tokenizer, generation config).",
        epilog=EPILOG,
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--gguf", metavar="FILE", help="a .gguf file")
    source.add_argument("--builtin", metavar="NAME", help="a built-in real model (see --list)")
    source.add_argument("--list", action="store_true", help="list the built-in models")
    p.add_argument("--out", help="output directory (must be new or empty)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output dir")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from llmpq.errors import UserError
    from llmpq.models.builtin import BUILTIN_MODELS, builtin_gguf, builtin_model
    from llmpq.models.gguf import import_gguf

    if args.list:
        for model in BUILTIN_MODELS.values():
            print(f"{model.name}: {model.description} (from PyPI {model.requirement})")
        return 0
    if not args.out:
        raise UserError("--out", None, "give the output directory: --out DIR", "is missing")
    if args.builtin:
        builtin_model(args.builtin)  # the name first, before any download
    from pathlib import Path

    from llmpq.files import check_out_dir

    check_out_dir(Path(args.out), args.overwrite, field="--out", flag="--overwrite")
    gguf = builtin_gguf(args.builtin) if args.builtin else args.gguf
    record = import_gguf(gguf, args.out, overwrite=args.overwrite, builtin=args.builtin)
    print(
        f"imported {record.name} ({record.architecture}, {record.parameters / 1e6:.1f} M "
        f"parameters, stored as {record.source_quantization}) -> {args.out}"
    )
    return 0
