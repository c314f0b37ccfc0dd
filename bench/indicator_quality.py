"""Do the indicators predict measured perplexity? Spearman ρ over random mixed plans, cost, ε-calibration.

Run::

    python bench/indicator_quality.py [--json results/bench/indicator_quality.json]
        [--model results/models/default] [--plans 40] [--seed 0] [--threads 1]
    python bench/indicator_quality.py --model results/models/smollm2-135m --plans 30   # real weights
        [--write-indicators results/indicator]

1. Draws ``--plans`` seeded random mixed bit plans over {3, 4, 8, 16} for the model's layers
   (:func:`llmpq.indicator.quality.random_plans`) and measures each plan's perplexity increase
   over the 16-bit model on its held-out text with :func:`llmpq.quality.plan_perplexity`
   (``llmpq ppl``'s path: RTN, group 128, the modules the runtime serves).
2. Computes every indicator (:data:`llmpq.indicator.METHODS`, default sample sizes) and
   reports, per method, the Spearman ρ between the plans' Σω and their measured increase, and
   the compute time (seconds, ``attrs["seconds"]``).
3. ε-calibration: fits ``increase_pct = slope · Σω`` (:func:`fit_quality_calibration`) on the
   first half of the plans and reports its MAPE on the other half (held out), over the held-out
   plans whose increase is above the noise floor (``NOISE_FLOOR_PCT``). For comparison it also
   fits a line with an intercept (same relative-error weighting).
4. With ``--write-indicators DIR``, writes ``DIR/<model>.nc`` (variance) and
   ``DIR/<model>-<method>.nc`` for the other measured methods, each with the calibration fitted
   on *all* the plans attached.

JSON: ``spearman`` {method: ρ}, ``seconds`` {method: s}, ``calibration_mape_pct`` {method:
held-out MAPE %}, ``calibration_mape_pct_intercept`` (the line with an intercept), ``slope``,
``best`` (highest ρ) and ``best_per_compute`` (the cheapest weight-based method within 0.02 of
the best ρ), and the plans with their measured increases and every method's Σω.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from llmpq.files import write_json_atomic
from llmpq.indicator import (
    METHODS,
    calibrate_indicator,
    compute_indicator,
    fit_quality_calibration,
    save_indicator,
)
from llmpq.indicator.calibration import NOISE_FLOOR_PCT, mape_pct
from llmpq.indicator.quality import QualityPoints, measure_random_plans
from llmpq.models.spec import model_spec

RHO_TIE = 0.02  # ρ this close to the best counts as as good (for best per unit of compute)


def _fit_with_intercept(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(slope, intercept) minimising the relative squared error, as the through-origin fit does."""
    scale = np.maximum(y, NOISE_FLOOR_PCT)
    design = np.stack([x / scale, 1 / scale], axis=1)  # [n, 2]
    (slope, intercept), *_ = np.linalg.lstsq(design, y / scale, rcond=None)
    return float(slope), float(intercept)


def _measured(args) -> QualityPoints:
    """The random plans' perplexities: measured here, or read from ``--points`` when that file
    holds the same model, plan count and seed (then written there after measuring)."""
    key = {"model": str(Path(args.model).resolve()), "plans": args.plans, "seed": args.seed}
    path = Path(args.points) if args.points else None
    if path is not None and path.is_file():
        data = json.loads(path.read_text())
        if data["key"] == key:
            print(f"plans' perplexities read from {path}")
            return QualityPoints(data["reference_perplexity"], tuple(map(tuple, data["plans"])),
                                 tuple(data["perplexity"]), data["seconds"])  # fmt: skip
    points = measure_random_plans(args.model, args.plans, args.seed)
    if path is not None:
        write_json_atomic(path, {"key": key, "reference_perplexity": points.reference_perplexity,
                                 "plans": [list(p) for p in points.plans],
                                 "perplexity": list(points.perplexity), "seconds": points.seconds})  # fmt: skip
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="results/models/default")
    parser.add_argument("--plans", type=int, default=40, help="random mixed plans (>= 30)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--write-indicators", help="folder for the calibrated indicator files")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--points", help="cache of the measured plans (JSON): reused if it matches")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    arrays = {method: compute_indicator(args.model, method, seed=args.seed) for method in METHODS}
    print(
        "indicators: " + ", ".join(f"{m} {da.attrs['seconds']:.1f} s" for m, da in arrays.items())
    )
    points = _measured(args)
    increase = np.asarray(points.increase_pct)
    half = len(increase) // 2
    fit, held = slice(0, half), slice(half, None)
    print(
        f"{len(increase)} plans measured in {points.seconds:.0f} s: 16-bit perplexity "
        f"{points.reference_perplexity:.3f}, increases {increase.min():.3f}..{increase.max():.3f} %"
    )

    result = {"spearman": {}, "seconds": {}, "calibration_mape_pct": {}}
    result |= {"calibration_mape_pct_intercept": {}, "slope": {}, "sum_omega": {}}
    print(f"{'method':<15}{'rho':>7}{'seconds':>9}{'held-out MAPE %':>17}{'(+intercept)':>14}")
    for method in METHODS:
        da = arrays[method]
        x = np.asarray(points.sum_omega(da))
        rho = float(spearmanr(x, increase).statistic)
        cal = fit_quality_calibration(x[fit], increase[fit])
        slope_c, intercept_c = _fit_with_intercept(x[fit], increase[fit])
        mape = mape_pct([cal.ppl_increase_pct(v) for v in x[held]], increase[held])
        mape_c = mape_pct(slope_c * x[held] + intercept_c, increase[held])
        result["spearman"][method] = round(rho, 4)
        result["seconds"][method] = da.attrs["seconds"]
        result["calibration_mape_pct"][method] = round(mape, 2)
        result["calibration_mape_pct_intercept"][method] = round(mape_c, 2)
        result["slope"][method] = cal.slope_pct_per_omega
        result["sum_omega"][method] = x.tolist()
        print(f"{method:<15}{rho:>7.3f}{da.attrs['seconds']:>9.2f}{mape:>17.1f}{mape_c:>14.1f}")

    best = max(result["spearman"], key=result["spearman"].get)
    weight_based = [m for m in METHODS if m not in ("analytic", "random")]
    good = [m for m in weight_based if result["spearman"][m] >= result["spearman"][best] - RHO_TIE]
    best_per_compute = min(good, key=result["seconds"].get)
    scored = int((increase[held] >= NOISE_FLOOR_PCT).sum())
    print(
        f"best rho: {best}; best per unit of compute (within {RHO_TIE} of it, cheapest): "
        f"{best_per_compute}; MAPE over {scored} of {len(increase) - half} held-out plans "
        f"(increase >= {NOISE_FLOOR_PCT} %)"
    )

    if args.write_indicators:
        for method in weight_based:
            stem = model_spec(args.model).name
            name = f"{stem}.nc" if method == "variance" else f"{stem}-{method}.nc"
            calibrated = calibrate_indicator(arrays[method], args.model, points=points)
            print(f"  -> {save_indicator(calibrated, Path(args.write_indicators) / name)}")

    result |= {
        "best": best,
        "best_per_compute": best_per_compute,
        "held_out_plans_scored": scored,
        "noise_floor_pct": NOISE_FLOOR_PCT,
        "model": args.model,
        "model_shape": model_spec(args.model).to_dict(),
        "reference_perplexity": points.reference_perplexity,
        "plans": [list(p) for p in points.plans],
        "increase_pct": increase.tolist(),
        "fit_plans": half,
        "seed": args.seed,
        "measure_seconds": round(points.seconds, 2),
        "threads": args.threads,
        "load_average": list(os.getloadavg()),
        "torch_version": str(torch.__version__),
        "platform": platform.platform(),
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    if args.json:
        write_json_atomic(args.json, result)


if __name__ == "__main__":
    main()
