"""``llmpq profile``: time a model's layers on a local device and write its cost table."""

from __future__ import annotations

import argparse

from llmpq.cli.common import add_subcommand
from llmpq.errors import UserError

EPILOG = """examples:
  llmpq profile --model results/models/default --device cpu --out results/costs/cpu/default.nc
  llmpq profile --model results/models/default --device cpu --bits 4,16 --batch 1,8 --seq 64 \\
      --rounds 1 --out quick.nc                                        # a quick look
  llmpq profile --model opt-1.3b --device cuda --out results/costs/A100-40G/opt-1.3b.nc
  llmpq profile --model DIR --device cpu --out F.nc --comm-out comm.json   # + 2-rank transfers
"""


def int_list(text: str, flag: str) -> tuple[int, ...]:
    """``"1,2,4"`` -> (1, 2, 4); UserError naming ``flag`` otherwise."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(flag, text, "give comma-separated integers, e.g. 1,2,4") from None
    if not values or min(values) <= 0:
        raise UserError(flag, text, "give positive integers, e.g. 1,2,4")
    return values


def register(sub: argparse._SubParsersAction) -> None:
    p = add_subcommand(
        sub,
        "profile",
        help="measure per-layer latency on a local device -> cost table (netCDF)",
        description="Time one decoder layer of the model at each bitwidth (real quantized "
        "modules) for prefill and decode over a grid of batch sizes and lengths, and the "
        "embeddings, LM head and per-stage work; write the medians as an xarray cost table.",
        epilog=EPILOG,
    )
    p.add_argument("--model", required=True, help="local HF checkpoint dir, or a shape name")
    p.add_argument("--device", default="cpu", help="cpu, or cuda[:i]")
    p.add_argument("--out", required=True, help="cost table (.nc), written atomically")
    p.add_argument("--device-type", help="catalog name to file it under (default: detected)")
    p.add_argument("--bits", help="bitwidths, e.g. 3,4,8,16 (default: all)")
    p.add_argument("--batch", help="micro-batch sizes, e.g. 1,2,4,8,16 (default per device)")
    p.add_argument("--seq", help="prompt / context lengths, e.g. 16,64,256 (default per device)")
    p.add_argument("--rounds", type=int, help="sweeps over the grid (default 3)")
    p.add_argument("--repeats", type=int, help="timed calls per point and round (default 3)")
    p.add_argument("--warmup", type=int, help="untimed calls per point and round (default 1)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads while timing (default 1)")
    p.add_argument("--clock", default="wall", help="wall, or cpu (thread CPU time, 1 thread)")
    p.add_argument("--stack-layers", type=int, help="layers timed together (default: up to 8)")
    p.add_argument("--group-size", type=int, default=128, help="3/4-bit quantization group")
    p.add_argument("--comm-out", help="also measure 2-rank transfers; write the fit (JSON)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def grid_from_args(args: argparse.Namespace):
    from dataclasses import replace

    from llmpq.profiler import default_grid

    grid = default_grid(args.device)
    changes = {
        name: int_list(getattr(args, name), f"--{name}")
        for name in ("bits", "batch", "seq")
        if getattr(args, name)
    }
    changes |= {
        name: getattr(args, name)
        for name in ("rounds", "repeats", "warmup")
        if getattr(args, name) is not None
    }
    if "repeats" in changes:
        changes["max_repeats"] = max(grid.max_repeats, changes["repeats"])
    return replace(grid, **changes)


def run(args: argparse.Namespace) -> int:
    from llmpq.costmodel.tables import save_cost_table
    from llmpq.profiler import profile_model

    table = profile_model(
        args.model, args.device, grid_from_args(args), device_type=args.device_type,
        threads=args.threads, stack_layers=args.stack_layers, group_size=args.group_size,
        clock=args.clock, progress=not args.no_progress,
    )  # fmt: skip
    save_cost_table(table, args.out)
    sizes = " × ".join(f"{len(table[d])} {d}" for d in ("bits", "batch", "seq"))
    cell = table.layer_ms.sel(phase="decode").isel(bits=0, batch=-1, seq=0)
    comm = ""
    if args.comm_out:
        from llmpq.costmodel.comm import measure_comm, save_comm
        from llmpq.models.spec import model_spec

        fit = measure_comm(model_spec(args.model))
        save_comm(fit, args.comm_out)
        comm = (
            f"; {fit.backend} transfers {fit.latency_ms:.3f} ms + {fit.bandwidth_GBps:.2f} GB/s "
            f"-> {args.comm_out}"
        )
    print(
        f"profiled {table.attrs['model']} on {table.attrs['device_type']} "
        f"({table.attrs['threads']} thread(s)): {sizes}, 2 phases in "
        f"{table.attrs['profile_seconds']:.0f} s; decode {int(cell.bits)}-bit batch "
        f"{int(cell.batch)} context {int(cell.seq)}: {float(cell):.3f} ms/layer -> {args.out}"
        f"{comm}"
    )
    return 0
