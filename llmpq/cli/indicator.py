"""``llmpq indicator``: ω(layer, bits) of a model as netCDF, optionally with a quality calibration."""

from __future__ import annotations

import argparse
from pathlib import Path

from llmpq.cli.common import add_subcommand
from llmpq.errors import UserError

EPILOG = """examples:
  llmpq indicator --model results/models/default --out results/indicator/default.nc   # variance
  llmpq indicator --model results/models/default --method hessian --calibrate 16 --out h.nc
  llmpq indicator --model results/models/default --method output-error --calib my.txt --out o.nc
  llmpq indicator --model opt-30b --method analytic --out results/indicator/opt-30b.nc
  llmpq indicator --model results/models/default --from h.nc --calibrate 32 --out h32.nc
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_subcommand(
        sub,
        "indicator",
        help="quantization sensitivity ω(layer, bits) of a model",
        description="Compute the per-layer, per-bitwidth quantization sensitivity ω of a model "
        "(variance: rounding-noise power from the real quantizer's step; hessian: diagonal "
        "Fisher; output-error: measured KL, one layer quantized at a time; analytic: shape "
        "only; random: seeded control) and write it as netCDF. --calibrate N measures N random "
        "mixed plans' perplexity and stores the fit Σω -> perplexity increase (%), so a plan "
        "can be bounded by 'perplexity increase <= ε %'.",
        epilog=EPILOG,
    )
    p.add_argument("--model", required=True, help="local HF checkpoint dir, or a shape name")
    p.add_argument(
        "--method",
        default="variance",
        help="variance (default), hessian, output-error, analytic, random, variance-paper",
    )
    p.add_argument("--calib", help="calibration text (default: MODEL/data/train.txt)")
    p.add_argument("--seed", type=int, default=0, help="random: the draw; --calibrate: the plans")
    p.add_argument("--num-windows", type=int, help="calibration windows (default per method)")
    p.add_argument("--window-tokens", type=int, help="tokens per window (default per method)")
    p.add_argument(
        "--calibrate", type=int, metavar="N", help="fit the quality calibration on N random plans"
    )
    p.add_argument("--text", help="--calibrate: held-out text (default: MODEL/data/heldout.txt)")
    p.add_argument("--from", dest="from_file", help="start from this ω file instead of computing")
    p.add_argument("--out", required=True, help="ω file (.nc), written atomically")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from llmpq.indicator import (
        calibrate_indicator,
        calibration_of,
        compute_indicator,
        load_indicator,
        save_indicator,
    )
    from llmpq.models.spec import model_spec

    spec = model_spec(args.model)
    if args.calibrate is not None and not Path(args.model).is_dir():
        raise UserError(
            "--model",
            args.model,
            "give a local checkpoint directory to --calibrate on (perplexity needs weights)",
            problem="is a shape name",
        )
    if args.from_file:
        da = load_indicator(args.from_file, spec)
    else:
        da = compute_indicator(
            args.model,
            args.method,
            calib=args.calib,
            seed=args.seed,
            num_windows=args.num_windows,
            window_tokens=args.window_tokens,
        )
    if args.calibrate is not None:
        da = calibrate_indicator(da, args.model, args.calibrate, args.seed, text=args.text)
    save_indicator(da, args.out)
    at3 = da.sel(bits=3).values
    most = f" (layer {int(at3.argmax())} most sensitive)" if at3.max() > at3.min() else ""
    summary = (
        f"{da.attrs['method']} ω for {spec.name} ({spec.num_layers} layers): 3-bit "
        f"{at3.min():.3g}..{at3.max():.3g}{most}, {da.attrs['seconds']:.1f} s"
    )
    cal = calibration_of(da)
    if cal is not None:
        summary += (
            f"; calibrated on {cal.points} plans: +{cal.slope_pct_per_omega:.4g} % ppl per unit "
            f"Σω (fit MAPE {cal.mape_pct:.1f} %)"
        )
    print(f"{summary} -> {args.out}")
    return 0
