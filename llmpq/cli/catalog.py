"""``llmpq catalog``: the built-in device types and their figures."""

from __future__ import annotations

import argparse
import json

import yaml

from llmpq.cli.common import add_subcommand
from llmpq.devices import CATALOG, DeviceType, measure_cpu

EPILOG = """examples:
  llmpq catalog                 # table of the GPU catalog
  llmpq catalog --cpu           # also measure this machine's CPU (about 1 s)
  llmpq catalog --format json   # machine-readable
"""
COLUMNS = (
    ("type", "name", "{}"),
    ("memory_GiB", "memory_GiB", "{:g}"),
    ("bandwidth_GBps", "bandwidth_GBps", "{:g}"),
    ("fp16_TFLOPS", "fp16_TFLOPS", "{:g}"),
    ("int8_TOPS", "int8_TOPS", "{:g}"),
    ("cc", "compute_capability", "{}"),
    ("bits", "bits", "{}"),
    ("source", "source", "{}"),
)


def register(sub: argparse._SubParsersAction) -> None:
    p = add_subcommand(
        sub,
        "catalog",
        help="list the built-in device types",
        description="List the device types llmpq knows: datasheet GPUs and the measured local CPU.",
        epilog=EPILOG,
    )
    p.add_argument("--cpu", action="store_true", help="include this machine's CPU, measured now")
    p.add_argument("--format", choices=("table", "json", "yaml"), default="table")
    p.set_defaults(run=run)


def format_table(types: list[DeviceType]) -> str:
    rows = [[h for h, _, _ in COLUMNS]]
    for t in types:
        row = []
        for _, attr, fmt in COLUMNS:
            value = getattr(t, attr)
            if value is None:
                row.append("-")
            elif attr == "bits":
                row.append(",".join(map(str, value)))
            else:
                row.append(fmt.format(value))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def run(args: argparse.Namespace) -> int:
    types = list(CATALOG.values()) + ([measure_cpu()] if args.cpu else [])
    if args.format == "table":
        print(format_table(types))
    elif args.format == "json":
        print(json.dumps([t.to_dict() for t in types], indent=2))
    else:
        print(yaml.safe_dump([t.to_dict() for t in types], sort_keys=False), end="")
    return 0
