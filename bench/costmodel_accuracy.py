"""Accuracy of the cost models on this CPU: latency on held-out shapes, memory against a real run.

Run::

    python bench/costmodel_accuracy.py [--json results/bench/costmodel_accuracy.json]
        [--model results/models/default] [--save-table F.nc] [--threads 1] [--clock wall]
        [--skip-memory] [--rounds 3] [--skip-extrapolation]

1. Profiles the model on this CPU (:func:`llmpq.profiler.profile_model`, one thread, default
   rounds) and fits the latency model (:class:`llmpq.costmodel.latency.LatencyModel`) to the
   default grid (:func:`llmpq.profiler.default_grid`: bits 3/4/8/16 × batch 1-16 × seq 16-256,
   both phases) only.
2. Tests it on held-out shapes: batch {3, 6, 12} × seq {24, 48, 96, 192} (inside the grid, on
   none of its values), and reports apart an extrapolation set (batch 24 × seq {24, 384}, beyond
   the grid): the mean absolute percentage error of the predictions per phase and bitwidth (and
   of the pre/post parts). The grid and the test shapes are measured in one sweep over the union
   of their batches and lengths (side by side, rounds interleaved), so that fitted and tested
   points share the machine's conditions: on a shared VM its speed drifts by 5-20% between runs
   minutes apart, which is not the model's error. ``--skip-extrapolation`` leaves the
   extrapolation set out of the sweep: on the real 30-layer model its batch 24 × seq 384
   points are most of the sweep's time.
3. Runs stages of the model in-process for the cpu_small workload (batch 8, prompt 64, 32
   generated) and a few other shapes, with mixed bits and micro-batch sizes, measuring peak
   memory (:mod:`llmpq.costmodel.memcheck`), and prints the memory model's error.

JSON: ``latency_mape_pct`` {"prefill"|"decode": {"overall": x, "3": x, ...}},
``extrapolation_mape_pct`` (same keys), ``part_mape_pct``, ``memory_error_pct`` {"max_abs",
"mean_abs", "cases": [...]}, plus threads, load averages, timings and versions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from llmpq.costmodel.latency import PARTS, LatencyModel
from llmpq.costmodel.memcheck import measure_stage_memory
from llmpq.costmodel.memory import stage_memory
from llmpq.costmodel.tables import PHASES, save_cost_table
from llmpq.files import write_json_atomic
from llmpq.models.spec import model_spec
from llmpq.models.stage import StageRange
from llmpq.plan import MicroBatch
from llmpq.profiler import default_grid, profile_model
from llmpq.workload import Workload

HELD_OUT = {"batch": (3, 6, 12), "seq": (24, 48, 96, 192)}
EXTRAPOLATION = {"batch": (24,), "seq": (24, 384)}
MIXED = (4, 4, 8, 16, 3, 3)  # a mixed plan for the 6-layer default model


def _mape(predicted: np.ndarray, measured: np.ndarray) -> float:
    ok = np.isfinite(measured)
    return float(np.mean(np.abs(predicted[ok] - measured[ok]) / measured[ok]) * 100)


def latency_errors(model: LatencyModel, table) -> dict[str, dict[str, float]]:
    """MAPE of ``model`` on every point of ``table``, per phase: overall and per bits."""
    b, s = np.meshgrid(table.batch.values, table.seq.values, indexing="ij")
    out = {}
    for phase in PHASES:
        per_bits, pooled_pred, pooled_meas = {}, [], []
        for bits in table.bits.values.tolist():
            measured = table.layer_ms.sel(bits=bits, phase=phase).transpose("batch", "seq").values
            predicted = np.asarray(model.layer_ms(bits, phase, b, s))
            per_bits[str(bits)] = _mape(predicted, measured)
            pooled_pred.append(predicted.ravel())
            pooled_meas.append(measured.ravel())
        overall = _mape(np.concatenate(pooled_pred), np.concatenate(pooled_meas))
        out[phase] = {"overall": overall, **per_bits}
    return out


def part_errors(model: LatencyModel, table) -> dict[str, dict[str, float]]:
    b, s = np.meshgrid(table.batch.values, table.seq.values, indexing="ij")
    out = {}
    for part in PARTS:
        out[part] = {}
        for phase in PHASES:
            measured = table[f"{part}_ms"].sel(phase=phase).transpose("batch", "seq").values
            out[part][phase] = _mape(np.asarray(model.part_ms(part, phase, b, s)), measured)
    return out


def memory_cases(num_layers: int) -> list[tuple]:
    """(layers, bits of the whole model, workload, micro-batch) to run."""
    small = Workload(8, 64, 32, name="cpu-small")
    mixed = list(MIXED[:num_layers]) + [4] * max(0, num_layers - len(MIXED))
    half = num_layers // 2
    return [
        ((0, num_layers), [16] * num_layers, small, MicroBatch(8, 8, 1)),
        ((0, num_layers), [4] * num_layers, small, MicroBatch(8, 8, 1)),
        ((0, half), mixed, small, MicroBatch(4, 8, 1)),
        ((half, num_layers), mixed, small, MicroBatch(4, 8, 1)),
        ((0, half), [8] * num_layers, small, MicroBatch(2, 4, 2)),
        ((half, num_layers), [3] * num_layers, small, MicroBatch(2, 4, 2)),
        ((0, num_layers), mixed, Workload(16, 128, 64), MicroBatch(4, 8, 2)),
        ((0, num_layers), [3] * num_layers, Workload(4, 16, 200), MicroBatch(4, 2, 2)),
    ]


def memory_errors(model_dir: Path) -> dict:
    spec = model_spec(model_dir)
    cases = []
    for (start, end), bits, workload, mb in memory_cases(spec.num_layers):
        rng = StageRange.of(start, end, spec.num_layers)
        got = measure_stage_memory(model_dir, rng, bits, workload, mb)
        pred = stage_memory(
            spec, bits[start:end], workload, mb, is_first=rng.is_first, is_last=rng.is_last
        )
        cases.append(
            {
                "layers": [start, end], "bits": bits[start:end],
                "workload": [workload.batch_size, workload.prompt_len, workload.gen_len],
                "micro_batch": [mb.prefill_size, mb.decode_size],
                "measured_bytes": got.peak_bytes, "predicted_bytes": pred.state_bytes,
                "measured_phase": got.peak_phase, "predicted_phase": pred.peak_phase,
                "error_pct": (pred.state_bytes - got.peak_bytes) / got.peak_bytes * 100,
            }
        )  # fmt: skip
    errors = [abs(c["error_pct"]) for c in cases]
    return {"max_abs": max(errors), "mean_abs": float(np.mean(errors)), "cases": cases}


def union_profile(
    model_dir: Path, threads: int, clock: str, rounds: int, extrapolation: bool = True
) -> xr.Dataset:
    """One sweep over the union of the grid's and the test sets' batches and lengths, so that
    fitted and tested points are measured side by side (the profiler's rounds interleave them
    further): drift in the machine's speed between separate runs is not counted as model error."""
    base = default_grid("cpu")
    extra = EXTRAPOLATION if extrapolation else {"batch": (), "seq": ()}
    batch = sorted({*base.batch, *HELD_OUT["batch"], *extra["batch"]})
    seq = sorted({*base.seq, *HELD_OUT["seq"], *extra["seq"]})
    grid = replace(base, batch=tuple(batch), seq=tuple(seq), rounds=rounds)
    return profile_model(model_dir, grid=grid, threads=threads, clock=clock)


def subset(table: xr.Dataset, batch, seq) -> xr.Dataset:
    grid = json.dumps({"bits": table.bits.values.tolist(), "batch": list(batch), "seq": list(seq)})
    return table.sel(batch=list(batch), seq=list(seq)).assign_attrs(grid=grid)


def _print_latency(title: str, errors: dict) -> None:
    bits = [k for k in errors["prefill"] if k != "overall"]
    print(f"{title}: mean absolute percentage error of the latency model")
    print(f"  {'phase':<8} {'overall':>8} " + " ".join(f"{b + '-bit':>7}" for b in bits))
    for phase in PHASES:
        row = errors[phase]
        print(f"  {phase:<8} {row['overall']:>7.2f}% " + " ".join(f"{row[b]:>6.2f}%" for b in bits))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="results/models/default")
    parser.add_argument("--save-table", help="also write the profiled table here")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", default="wall", help="wall or cpu (thread CPU time)")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved sweeps pooled by the median (1: a third of the time)")  # fmt: skip
    parser.add_argument("--skip-extrapolation", action="store_true",
                        help="leave batch 24 x seq {24, 384} out of the sweep")  # fmt: skip
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    model_dir = Path(args.model)
    result: dict = {
        "model": str(model_dir), "threads": args.threads, "clock": args.clock,
        "rounds": args.rounds, "extrapolation": not args.skip_extrapolation,
        "torch": torch.__version__, "python": platform.python_version(),
        "load_average_before": os.getloadavg(),
    }  # fmt: skip
    started = time.perf_counter()
    base = default_grid("cpu")
    union = union_profile(
        model_dir, args.threads, args.clock, args.rounds, not args.skip_extrapolation
    )
    table = subset(union, base.batch, base.seq)
    if args.save_table:
        save_cost_table(table, args.save_table)
    held = subset(union, HELD_OUT["batch"], HELD_OUT["seq"])
    result["sweep_seconds"] = float(union.attrs["profile_seconds"])
    result["grid"] = {k: table[k].values.tolist() for k in ("bits", "batch", "seq")}
    model = LatencyModel.from_table(table)
    result["fit_mape_pct"] = {f"{b}/{p}": f.fit_mape_pct for (b, p), f in model.layer_fits.items()}
    result["held_out"] = {k: list(v) for k, v in HELD_OUT.items()}
    result["latency_mape_pct"] = latency_errors(model, held)
    if not args.skip_extrapolation:
        extra = subset(union, EXTRAPOLATION["batch"], EXTRAPOLATION["seq"])
        result["extrapolation"] = {k: list(v) for k, v in EXTRAPOLATION.items()}
        result["extrapolation_mape_pct"] = latency_errors(model, extra)
    result["part_mape_pct"] = part_errors(model, held)
    print(
        f"model {model_dir}, {args.threads} thread(s), clock {args.clock}; grid + test shapes "
        f"swept in {result['sweep_seconds']:.0f} s"
    )
    _print_latency(f"held-out shapes (batch {HELD_OUT['batch']} x seq {HELD_OUT['seq']})",
                   result["latency_mape_pct"])  # fmt: skip
    if not args.skip_extrapolation:
        _print_latency(
            f"extrapolation (batch {EXTRAPOLATION['batch']} x seq {EXTRAPOLATION['seq']})",
            result["extrapolation_mape_pct"],
        )
    parts = result["part_mape_pct"]
    print("pre/post parts, held-out MAPE: " + ", ".join(
        f"{part} {parts[part]['prefill']:.1f}% / {parts[part]['decode']:.1f}%" for part in PARTS
    ) + " (prefill / decode)")  # fmt: skip
    if not args.skip_memory:
        mem = memory_errors(model_dir)
        result["memory_error_pct"] = mem
        print("memory model vs peak measured in-process (model state: weights, KV, activations)")
        for c in mem["cases"]:
            print(
                f"  layers {c['layers']} bits {c['bits']} workload {c['workload']} "
                f"micro-batch {c['micro_batch']}: measured {c['measured_bytes'] / 2**20:.3f} MiB "
                f"({c['measured_phase']}), model {c['predicted_bytes'] / 2**20:.3f} MiB "
                f"({c['predicted_phase']}): {c['error_pct']:+.2f}%"
            )
        print(f"  max |error| {mem['max_abs']:.2f}%, mean {mem['mean_abs']:.2f}%")
    result["seconds"] = time.perf_counter() - started
    result["load_average_after"] = os.getloadavg()
    if args.json:
        write_json_atomic(args.json, result)


if __name__ == "__main__":
    main()
