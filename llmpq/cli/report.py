"""``llmpq report``: the summary table and figures from a results folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from llmpq.cli.common import add_subcommand

EPILOG = """examples:
  llmpq report --results results --out results/report       # what the workflow's report rule makes
  llmpq report --results /tmp/wf/results --out my-report
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_subcommand(
        sub,
        "report",
        help="summary table and figures of a results folder",
        description="Collect the plans, simulations, serve runs and perplexities under a results "
        "folder (the workflow's layout: plans/, sim/, serve/, quality/) into summary.csv, "
        "summary.md and three figures: throughput per method, the throughput-quality frontier "
        "and the per-stage timeline.",
        epilog=EPILOG,
    )
    p.add_argument("--results", default="results", help="results folder (default: results)")
    p.add_argument("--reference", help="16-bit perplexity JSON (default: the first "
                   "RESULTS/quality/*/bits16.json)")  # fmt: skip
    p.add_argument("--out", required=True, help="folder for the table and figures")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from llmpq.errors import UserError
    from llmpq.report import write_report

    root = Path(args.results)
    plans = sorted((root / "plans").glob("*/*/*.json"))
    if not plans:
        raise UserError("--results", str(root), "run the workflow or llmpq plan first "
                        "(expects RESULTS/plans/<cluster>/<workload>/<variant>.json)",
                        problem="holds no plans")  # fmt: skip
    sims = sorted((root / "sim").glob("*/*/*.json"))
    serves = sorted((root / "serve").glob("*/*/*/metrics.json"))
    quality = sorted((root / "quality").glob("*/*/*.json"))
    reference = args.reference or next(iter(sorted((root / "quality").glob("*/bits16.json"))), None)
    out = Path(args.out)
    names = {"table": "summary.csv", "markdown": "summary.md", "throughput": "throughput.png",
             "frontier": "frontier.png", "timeline": "timeline.png"}  # fmt: skip
    table = write_report(plans, sims, serves, quality, reference=reference,
                         outputs={k: out / v for k, v in names.items()})  # fmt: skip
    print(f"{len(table)} rows from {len(plans)} plans, {len(sims)} simulations, {len(serves)} "
          f"serve runs, {len(quality)} perplexities -> {out}/")  # fmt: skip
    return 0
