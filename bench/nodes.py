"""The cost of crossing "hosts": one plan served on one node and as two nodes on loopback.

    python bench/nodes.py --model results/models/smollm2-135m [--repeats 3] [--json PATH]

One two-stage 16-bit plan of ``--model`` (layers split evenly, one thread per stage, a synthetic
batch of 4 × 32 prompt tokens, 16 generated, prefill micro-batches of 2, two decode micro-batches
of 2) is served ``--repeats`` times each way, in turn:

* ``one node, sockets``: both stages under one torchrun (the default ring of one host's CPU
  stages, TCP sockets);
* ``one node, dist``: the same over ``torch.distributed`` (gloo), the transport between hosts;
* ``two nodes``: the cluster file puts the stages on hosts ``a`` and ``b``; node 1 is a second
  ``llmpq serve`` process (its own torchrun agent) and node 0 this process, meeting at a c10d
  rendezvous on 127.0.0.1 — the multi-node path end to end (gloo between the stages).

Printed: each way's median makespan tokens/s (generation only: process start, rendezvous and
loading excluded, as ``metrics.json`` reports it), median wall seconds of the whole launch, and
the ratios to ``one node, dist``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmpq.models.checkpoint import Checkpoint  # noqa: E402
from llmpq.models.spec import ModelSpec  # noqa: E402
from llmpq.plan import MicroBatch, Plan, Stage, save_plan  # noqa: E402
from llmpq.runtime import serve  # noqa: E402
from llmpq.runtime.nodes import Nodes  # noqa: E402
from llmpq.workload import Workload  # noqa: E402


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    model = Path(args.model)
    spec = ModelSpec.from_hf_config(Checkpoint(model).config_dict(), name=model.name)
    half = spec.num_layers // 2
    stages = (Stage("cpu-0", "cpu", (0, half), (16,) * half),
              Stage("cpu-1", "cpu", (half, spec.num_layers), (16,) * (spec.num_layers - half)))  # fmt: skip
    plan = Plan(model.name, spec, Workload(4, 32, 16), "manual", stages, MicroBatch(2, 2, 2))
    work = Path(tempfile.mkdtemp(prefix="llmpq-nodes-"))
    save_plan(plan, work / "plan.json")
    clusters = {}
    for name, hosts in (("one", ["h", "h"]), ("two", ["a", "b"])):
        devices = [{"name": f"cpu-{i}", "type": "cpu", "memory_GiB": 4, "cores": 1, "host": h}
                   for i, h in enumerate(hosts)]  # fmt: skip
        clusters[name] = work / f"{name}.yaml"
        clusters[name].write_text(yaml.safe_dump({"name": name, "devices": devices}))
    ways = {"one node, sockets": [], "one node, dist": [], "two nodes": []}
    for r in range(args.repeats):
        for way, runs in ways.items():
            out = work / f"{way.replace(' ', '_').replace(',', '')}-{r}"
            nodes, other = None, None
            if way == "two nodes":
                port = _port()
                nodes = Nodes(2, 0, f"127.0.0.1:{port}", join_timeout_s=60)
                other = subprocess.Popen(
                    [sys.executable, "-m", "llmpq", "serve", "--plan", str(work / "plan.json"),
                     "--model", str(model), "--synthetic", "--cluster", str(clusters["two"]),
                     "--out", str(out), "--nnodes", "2", "--node-rank", "1", "--rdzv-endpoint",
                     f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    env=dict(os.environ, OMP_NUM_THREADS="1"),
                )  # fmt: skip
            result = serve(plan, model, None, out, synthetic=True,
                           cluster=clusters["two" if nodes else "one"],
                           ring="sockets" if way.endswith("sockets") else "dist", nodes=nodes)  # fmt: skip
            if other is not None and other.wait(timeout=120) != 0:
                raise SystemExit("node 1 failed")
            m = result.metrics
            runs.append({"tokens_per_s": m.tokens_per_s, "wall_s": m.wall_s})
            print(f"{way:<18} run {r}: {m.tokens_per_s:7.2f} tokens/s, wall {m.wall_s:5.1f} s",
                  flush=True)  # fmt: skip
    base = statistics.median(x["tokens_per_s"] for x in ways["one node, dist"])
    print(f"\n{'way':<18}{'tokens/s':>10}{'wall s':>9}{'vs one node, dist':>20}")
    summary = {}
    for way, runs in ways.items():
        tps = statistics.median(x["tokens_per_s"] for x in runs)
        wall = statistics.median(x["wall_s"] for x in runs)
        summary[way] = {"tokens_per_s": tps, "wall_s": wall, "ratio": tps / base, "runs": runs}
        print(f"{way:<18}{tps:10.2f}{wall:9.1f}{tps / base:20.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
