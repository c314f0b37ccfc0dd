"""The ``llmpq`` command line: one small module per subcommand, each a thin view over the library.

Every subcommand takes named flags only, prints a one-line summary, and on bad input prints one
line naming the field, the value and the fix, and exits with code 2 (no traceback).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from llmpq import __version__
from llmpq.cli import (
    catalog,
    import_model,
    indicator,
    model_info,
    plan,
    ppl,
    profile,
    report,
    roofline,
    serve,
    simulate,
    train_default,
)
from llmpq.errors import UserError

SUBCOMMANDS = (
    catalog, train_default, import_model, model_info, profile, roofline, ppl, indicator, plan, simulate, serve,
    report,
)  # fmt: skip
USER_ERROR_EXIT = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmpq",
        description="Plan and run offline batch LLM inference on heterogeneous GPU clusters.",
    )
    parser.add_argument("--version", action="version", version=f"llmpq {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in SUBCOMMANDS:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except UserError as err:
        print(f"llmpq {args.command}: error: {err}", file=sys.stderr)
        return USER_ERROR_EXIT
    except KeyboardInterrupt:
        print(f"llmpq {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
