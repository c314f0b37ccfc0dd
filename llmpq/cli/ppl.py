"""``llmpq ppl``: perplexity of a model quantized per a plan's bits (or uniform bits)."""

from __future__ import annotations

import argparse
from pathlib import Path

from llmpq.cli.common import add_subcommand
from llmpq.errors import UserError

EPILOG = """examples:
  llmpq ppl --model results/models/default --bits 16 --out ppl16.json          # the reference
  llmpq ppl --model results/models/default --bits 4 --method gptq --out ppl4.json
  llmpq ppl --model results/models/default --plan plan.json --text my.txt --out ppl.json
  llmpq ppl --model DIR --bits 3 --group-size 64 --save-quantized q3.safetensors --out p.json
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_subcommand(
        sub,
        "ppl",
        help="perplexity of a bit plan's quantized model",
        description="Quantize a local checkpoint per layer (a plan's bits, or uniform bits), run "
        "it through the quantized modules the runtime serves, and write its perplexity on "
        "held-out text (default: the model's data/heldout.txt) as JSON.",
        epilog=EPILOG,
    )
    p.add_argument("--model", required=True, help="local HF checkpoint directory")
    bits = p.add_mutually_exclusive_group(required=True)
    bits.add_argument("--plan", help="plan JSON: its stages' bits and layer ranges")
    bits.add_argument("--bits", type=int, help="uniform bitwidth for every layer: 3, 4, 8 or 16")
    p.add_argument("--text", help="UTF-8 text to evaluate (default: MODEL/data/heldout.txt)")
    p.add_argument("--method", default="rtn", help="rtn (round to nearest) or gptq")
    p.add_argument("--group-size", type=int, default=128, help="3/4-bit group: 32/64/128/256")
    p.add_argument("--calib-text", help="GPTQ calibration text (default: MODEL/data/train.txt)")
    p.add_argument("--save-quantized", help="also write the quantized weights (safetensors)")
    p.add_argument("--out", required=True, help="result JSON, written atomically")
    p.set_defaults(run=run)


def _plan_bits_and_stages(
    plan_path: str, num_layers: int
) -> tuple[list[int], list[tuple[int, int]]]:
    from llmpq.plan import load_plan

    plan = load_plan(plan_path)
    bits = plan.bits_per_layer()
    if len(bits) != num_layers:
        raise UserError(
            "--plan",
            plan_path,
            f"use a plan made for this model ({num_layers} layers)",
            problem=f"has {len(bits)} layers' bits",
        )
    return bits, [stage.layers for stage in plan.stages]


def run(args: argparse.Namespace) -> int:
    from llmpq.files import write_json_atomic
    from llmpq.models.checkpoint import Checkpoint
    from llmpq.quality import plan_perplexity

    num_layers = Checkpoint(Path(args.model)).config().num_hidden_layers
    if args.plan is not None:
        bits, stage_layers = _plan_bits_and_stages(args.plan, num_layers)
    else:
        bits, stage_layers = [args.bits] * num_layers, None
    result = plan_perplexity(
        args.model,
        bits,
        args.text,
        args.method,
        args.group_size,
        stage_layers=stage_layers,
        calib_text=args.calib_text,
        save_quantized=args.save_quantized,
    )
    write_json_atomic(args.out, result.to_dict())
    print(
        f"perplexity {result.perplexity:.3f} over {result.tokens_evaluated} tokens "
        f"({result.method}, bits {sorted(set(result.bits_per_layer))}, group {result.group_size}) "
        f"in {result.seconds:.1f} s -> {args.out}"
        + (f" (weights stored as {result.source_quantization} at source)"
           if result.source_quantization else "")
    )  # fmt: skip
    return 0
