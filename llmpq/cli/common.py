"""Shared by the subcommand modules: how a subcommand's parser is made."""

from __future__ import annotations

import argparse


def add_subcommand(
    sub: argparse._SubParsersAction, name: str, help: str, description: str, epilog: str
) -> argparse.ArgumentParser:
    """A subcommand parser whose ``--help`` ends with the examples in ``epilog``, kept as written."""
    return sub.add_parser(
        name,
        help=help,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
