"""``llmpq roofline``: a cost table for a catalog GPU from its datasheet peaks."""

from __future__ import annotations

import argparse

from llmpq.cli.common import add_subcommand
from llmpq.cli.profile import int_list

EPILOG = """examples:
  llmpq roofline --model opt-30b --device-type T4 --out results/costs/T4/opt-30b.nc
  llmpq roofline --model opt-30b --device-type A100-40G --calibrate results/costs/cpu/default.nc \\
      --out a100.nc                                  # efficiency factors from a measured table
  llmpq roofline --model results/models/default --device-type V100-32G --batch 1,8 --seq 64,128 \\
      --out v100.nc
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_subcommand(
        sub,
        "roofline",
        help="cost table of a catalog GPU from its peaks (source=roofline)",
        description="Predict per-layer latency of a model shape on a device type from its peak "
        "bandwidth and FLOP/s times per-phase, per-bitwidth efficiency factors (defaults "
        "documented in llmpq.costmodel.roofline, or calibrated from a measured table), and "
        "write it as a cost table flagged source=roofline.",
        epilog=EPILOG,
    )
    p.add_argument("--model", required=True, help="a shape name, or a local HF checkpoint dir")
    p.add_argument("--device-type", required=True, help="catalog type, e.g. T4, A100-40G")
    p.add_argument("--out", required=True, help="cost table (.nc), written atomically")
    p.add_argument("--calibrate", help="measured cost table whose efficiency factors to use")
    p.add_argument("--bits", help="bitwidths (default: those the device type allows)")
    p.add_argument("--batch", help="micro-batch sizes (default 1,2,4,...,64)")
    p.add_argument("--seq", help="prompt / context lengths (default 128,...,2048)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from llmpq.costmodel.roofline import (
        DEFAULT_BATCH,
        DEFAULT_EFFICIENCY,
        DEFAULT_SEQ,
        calibrate_efficiency,
        roofline_table,
    )
    from llmpq.costmodel.tables import load_cost_table, save_cost_table
    from llmpq.devices import device_type
    from llmpq.models.spec import model_spec

    spec = model_spec(args.model)
    target = device_type(args.device_type, field="--device-type")
    efficiency = DEFAULT_EFFICIENCY
    if args.calibrate:
        measured = load_cost_table(args.calibrate)
        efficiency = calibrate_efficiency(measured, device_type(measured.attrs["device_type"]))
    table = roofline_table(
        spec, target, efficiency,
        bits=int_list(args.bits, "--bits") if args.bits else None,
        batch=int_list(args.batch, "--batch") if args.batch else DEFAULT_BATCH,
        seq=int_list(args.seq, "--seq") if args.seq else DEFAULT_SEQ,
    )  # fmt: skip
    save_cost_table(table, args.out)
    b, s = int(table.batch[len(table.batch) // 2]), int(table.seq[len(table.seq) // 2])
    decode = table.layer_ms.sel(phase="decode", batch=b, seq=s)
    per_bits = ", ".join(
        f"{int(k)}-bit {float(v):.3f}" for k, v in zip(decode.bits, decode, strict=True)
    )
    print(
        f"roofline {spec.name} on {target.name} ({target.bandwidth_GBps:g} GB/s, "
        f"{target.fp16_TFLOPS:g} TFLOPS; efficiency {'calibrated' if args.calibrate else 'defaults'}"
        f"): decode batch {b} context {s}: {per_bits} ms/layer -> {args.out}"
    )
    return 0
