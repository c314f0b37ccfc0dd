"""``llmpq model-info``: a model's shape and the sizes the planner uses."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from llmpq.cli.common import add_subcommand
from llmpq.models.spec import SUPPORTED_BITS, ModelSpec, model_spec

EPILOG = """examples:
  llmpq model-info --model opt-30b                  # a built-in shape, no weights needed
  llmpq model-info --model results/models/default   # a local HF checkpoint (checked for its files)
  llmpq model-info --model llama-2-70b --format json
"""
GiB = 1024**3


def register(sub: argparse._SubParsersAction) -> None:
    p = add_subcommand(
        sub,
        "model-info",
        help="show a model's shape and sizes",
        description="Show a model's shape, parameter count and the sizes the planner uses: one "
        "decoder layer at each bitwidth, KV cache per token, embeddings and head.",
        epilog=EPILOG,
    )
    p.add_argument("--model", required=True, help="local HF checkpoint directory or shape name")
    p.add_argument("--group-size", type=int, default=128, help="quantization group (3/4-bit)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(run=run)


def model_summary(
    spec: ModelSpec, group_size: int = 128, source_quantization: str | None = None
) -> dict:
    """Shape and sizes of ``spec`` as plain data (what ``model-info`` prints); an imported
    checkpoint's ``source_quantization`` says what its weights were stored in (e.g. Q4_1)."""
    return {
        "shape": spec.to_dict(),
        "param_count": spec.param_count(),
        "layer_weight_bytes": {
            str(b): spec.layer_weight_bytes(b, group_size) for b in SUPPORTED_BITS
        },
        "model_weight_bytes": {str(b): spec.weight_bytes(b, group_size) for b in SUPPORTED_BITS},
        "kv_bytes_per_token": spec.kv_bytes_per_token(),
        "embedding_bytes": spec.embedding_bytes(),
        "head_bytes": spec.head_bytes(),
        "group_size": group_size,
        "source_quantization": source_quantization,
    }


def format_text(spec: ModelSpec, summary: dict) -> str:
    lines = [
        f"{spec.name}: {spec.family} family ({spec.model_type}), "
        f"{summary['param_count'] / 1e6:,.1f} M parameters",
        f"  layers {spec.num_layers}, hidden {spec.hidden_size}, heads {spec.num_heads} "
        f"(kv {spec.num_kv_heads}, head_dim {spec.head_dim}), ffn {spec.ffn_dim}, "
        f"vocab {spec.vocab_size}, max positions {spec.max_positions}",
        f"  KV cache per token: {summary['kv_bytes_per_token'] / 1024:,.1f} KiB; "
        f"embeddings {summary['embedding_bytes'] / GiB:,.3f} GiB; "
        f"head {summary['head_bytes'] / GiB:,.3f} GiB",
    ]
    if summary.get("source_quantization"):
        lines.append(f"  weights stored as {summary['source_quantization']} at source (imported; "
                     "every quality figure is relative to those weights)")  # fmt: skip
    lines.append("  bits  layer_MiB  model_GiB")
    for b in SUPPORTED_BITS:
        layer = summary["layer_weight_bytes"][str(b)] / 1024**2
        model = summary["model_weight_bytes"][str(b)] / GiB
        lines.append(f"  {b:>4}  {layer:>9,.2f}  {model:>9,.3f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if Path(args.model).is_dir():
        from llmpq.models.checkpoint import Checkpoint

        Checkpoint(args.model)  # validates config.json and the weight files
    from llmpq.models.gguf import load_import_record

    spec = model_spec(args.model)
    record = load_import_record(args.model) if Path(args.model).is_dir() else None
    summary = model_summary(spec, args.group_size, record.source_quantization if record else None)
    if args.format == "json":
        print(json.dumps(summary, indent=2))
    else:
        print(format_text(spec, summary))
    return 0
