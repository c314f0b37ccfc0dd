"""``llmpq train-default``: train the built-in default model here, offline."""

from __future__ import annotations

import argparse

from llmpq.cli.common import add_subcommand

EPILOG = """examples:
  llmpq train-default --out results/models/default            # the real one (minutes on 2 cores)
  llmpq train-default --out /tmp/tiny --preset tiny           # seconds; for tests
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_subcommand(
        sub,
        "train-default",
        help="train the built-in default model",
        description="Train a small LLaMA-architecture model on English text that ships with "
        "Python, with a locally trained byte-level BPE tokenizer, and save it in HF format.",
        epilog=EPILOG,
    )
    p.add_argument("--out", required=True, help="output directory (HF checkpoint)")
    p.add_argument("--preset", default="default", help="training preset: default or tiny")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--max-train-seconds",
        type=float,
        default=None,
        help="stop training after S (model still saved)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output dir")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from llmpq.models.default import train_default_model

    report = train_default_model(
        args.out,
        preset=args.preset,
        seed=args.seed,
        max_train_seconds=args.max_train_seconds,
        overwrite=args.overwrite,
    )
    print(
        f"trained {args.out}: {report.parameter_count / 1e6:.2f} M parameters in "
        f"{report.wall_seconds:.0f} s; held-out perplexity {report.heldout_perplexity:.2f} "
        f"(unigram {report.unigram_heldout_perplexity:.2f})"
    )
    return 0
