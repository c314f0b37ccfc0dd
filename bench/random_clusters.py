"""Clusters nobody tuned for: seeded random GPU mixes, llmpq against PipeEdge, Uniform and AdaBits.

    python bench/random_clusters.py [--clusters 20] [--seed 0] [--gap 0.002] [--json PATH]

The paper's 11 clusters are nearly homogeneous per host and roomy; these are not. Cluster ``i``
is drawn from ``seed + i``: two or three GPU types of the catalog, one to four of each (eight at
most), each type on its own host or two types sharing one; then a model among OPT-13B/30B/66B,
LLaMA-2-13B/70B and BLOOM-176B whose 16-bit weights need between 0.6 and 1.7 times the cluster's
memory (so memory binds and the bits matter), and a workload among the paper's and three others.
Each is compared as in ``paper_clusters.py`` (:func:`compare_methods`: baselines by their own
rules, llmpq under the worst baseline's Σω, every plan simulated event by event). Printed: a
line per cluster, then how often llmpq is at least as fast as the best baseline, the speed-ups,
and the planning seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import BenchRun  # noqa: E402
from bench.paper_clusters import BASELINES, compare_methods  # noqa: E402
from llmpq.cluster import Cluster  # noqa: E402
from llmpq.devices import CATALOG  # noqa: E402
from llmpq.errors import UserError  # noqa: E402
from llmpq.models.spec import model_spec  # noqa: E402
from llmpq.workload import Workload  # noqa: E402

TYPES = ("T4", "P100-12G", "V100-16G", "V100-32G", "A10", "L4", "A100-40G", "A100-80G")
MODELS = ("opt-13b", "llama-2-13b", "opt-30b", "opt-66b", "llama-2-70b", "bloom-176b")
WORKLOADS = (Workload(32, 512, 100), Workload(16, 256, 64), Workload(64, 128, 128),
             Workload(8, 1024, 32))  # fmt: skip
MEMORY_NEED = (0.6, 1.7)  # 16-bit weights / cluster memory


def random_cluster(seed: int) -> tuple[Cluster, str, Workload]:
    """One seeded cluster, its model and its workload (module docstring)."""
    rng = np.random.default_rng(seed)
    types = rng.choice(TYPES, size=int(rng.integers(2, 4)), replace=False)
    counts = [int(rng.integers(1, 5)) for _ in types]
    while sum(counts) > 8:
        counts[int(np.argmax(counts))] -= 1
    hosts = [f"node-{i}" for i in range(len(types))]
    if len(types) == 3 and rng.random() < 0.4:
        hosts[2] = hosts[1]  # two types in one machine
    devices = [{"type": str(t), "count": c, "host": h}
               for t, c, h in zip(types, counts, hosts, strict=True)]  # fmt: skip
    memory = sum(CATALOG[str(t)].memory_bytes * c for t, c in zip(types, counts, strict=True))
    fits = [m for m in MODELS
            if MEMORY_NEED[0] <= model_spec(m).weight_bytes(16) / memory <= MEMORY_NEED[1]]  # fmt: skip
    if fits:
        model = str(rng.choice(fits))
    else:  # the nearest need to the range's middle
        model = min(MODELS, key=lambda m: abs(math.log(model_spec(m).weight_bytes(16) / memory)))
    workload = WORKLOADS[int(rng.integers(len(WORKLOADS)))]
    name = f"random-{seed}"
    return Cluster.from_dict({"name": name, "devices": devices}), model, workload


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gap", type=float, default=0.002, help="llmpq's gap target")
    parser.add_argument("--json", help="write the records here")
    args = parser.parse_args()
    run = BenchRun.start()
    print("simulated generated tokens/s; llmpq under a Σω budget = the worst baseline's quality")
    print(f"{'cluster':<11}{'devices':<40}{'model':<12}{'B×in+out':<13}{'llmpq':>8}{'PipeEdge':>9}"
          f"{'Uniform':>9}{'AdaBits':>9}{'speedup':>8}{'plan s':>7}{'gap':>7}{'used':>6}")  # fmt: skip
    records = []
    for seed in range(args.seed, args.seed + args.clusters):
        cluster, model, workload = random_cluster(seed)
        kinds: dict = {}
        for d in cluster.devices:
            kinds[d.type.name] = kinds.get(d.type.name, 0) + 1
        label = " + ".join(f"{c}×{t}" for t, c in kinds.items())
        shape = f"{workload.batch_size}×{workload.prompt_len}+{workload.gen_len}"
        try:
            r = compare_methods(model, cluster, workload, args.gap)
        except UserError as err:  # no method has a plan: memory too short for any
            records.append({"cluster": cluster.name, "model": model, "none": str(err)})
            print(f"{cluster.name:<11}{label:<40}{model:<12}{shape:<13} no plan: {err}")
            continue
        r.update(workload=shape, label=label)
        records.append(r)

        def fmt(x):
            return f"{x:9.2f}" if x else f"{'—':>9}"

        speedup = r["speedup_vs_best_baseline"]
        print(f"{cluster.name:<11}{label:<40}{model:<12}{shape:<13}{r['llmpq_tokens_per_s']:8.2f}"
              f"{fmt(r['pipeedge_tokens_per_s'])}{fmt(r['uniform_tokens_per_s'])}"
              f"{fmt(r['adabits_tokens_per_s'])}"
              f"{(f'{speedup:8.2f}' if speedup else '—'.rjust(8))}"
              f"{r['llmpq_planning_s']:7.2f}{r['llmpq_gap']:7.2%}"
              f"{r['llmpq_devices_used']:>3}/{len(r['devices']):<2}", flush=True)  # fmt: skip
    planned = [r for r in records if "llmpq_tokens_per_s" in r]
    compared = [r for r in planned if r["speedup_vs_best_baseline"]]
    at_least = sum(r["speedup_vs_best_baseline"] >= 1 - 1e-3 for r in compared)
    speedups = [r["speedup_vs_best_baseline"] for r in compared]
    seconds = [r["llmpq_planning_s"] for r in planned]
    summary = {
        "clusters": len(records),
        "planned": len(planned),
        "only_llmpq_plans": len(planned) - len(compared),
        "llmpq_at_least_best_baseline": at_least,
        "compared": len(compared),
        "geomean_speedup": math.exp(statistics.fmean(map(math.log, speedups))) if speedups
        else None,
        "min_speedup": min(speedups, default=None),
        "max_speedup": max(speedups, default=None),
        "planning_s": {"median": statistics.median(seconds) if seconds else None,
                       "max": max(seconds, default=None)},
        "not_optimal": [r["cluster"] for r in planned if r["llmpq_status"] != "OPTIMAL"],
        "devices_left_idle": sum(r["llmpq_devices_used"] < len(r["devices"]) for r in planned),
    }  # fmt: skip
    print(f"\nllmpq ≥ the best baseline (within 0.1 %) on {at_least}/{len(compared)} clusters "
          f"({summary['only_llmpq_plans']} more where only llmpq has a plan); speed-up geomean "
          f"{summary['geomean_speedup'] or float('nan'):.2f}×, range "
          f"{summary['min_speedup'] or float('nan'):.2f}–{summary['max_speedup'] or float('nan'):.2f}×; "
          f"planning median {summary['planning_s']['median']:.2f} s, max "
          f"{summary['planning_s']['max']:.2f} s; not OPTIMAL: {summary['not_optimal'] or 'none'}; "
          f"plans leaving a device idle: {summary['devices_left_idle']}")  # fmt: skip
    unused = [b for b in BASELINES if all(r.get(f"{b}_tokens_per_s") is None for r in planned)]
    if unused:
        print(f"baselines with no plan anywhere: {unused}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"records": records, "summary": summary, "run": run.finish()},
                indent=2,
                default=lambda o: o.item(),
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
