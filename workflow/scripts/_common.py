"""Shared by the workflow scripts: run one llmpq call with its output logged, user errors as one line."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from pathlib import Path


def run_logged(log_path: str, fn: Callable[[], object]) -> None:
    """Run ``fn`` with stdout/stderr going to ``log_path``; a UserError becomes one line and exit 2."""
    from llmpq.errors import UserError

    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with (
        open(log_path, "w") as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
    ):
        try:
            fn()
        except UserError as err:
            print(f"error: {err}", file=log)
            print(f"llmpq: error: {err}", file=sys.__stderr__)
            raise SystemExit(2) from None


def no_plan_passed_on(plan_path: str, *outputs: str) -> bool:
    """Where ``plan_path`` records that no plan fits, write that record to ``outputs`` (JSON; a
    JSONL output stays empty) and return True: the stages after ``plan`` carry it to the report."""
    import json

    from llmpq.files import write_json_atomic, write_text_atomic
    from llmpq.report import no_plan_reason

    data = json.loads(Path(plan_path).read_text())
    reason = no_plan_reason(data)
    if reason is None:
        return False
    for out in outputs:
        if out.endswith(".jsonl"):
            write_text_atomic(out, "")
        else:
            write_json_atomic(out, data)
    print(f"no plan: {reason}")
    return True


def served_or_exit(call: Callable[[], object]):
    """Run a serving call; a ServeFailed becomes its one line (log and stderr) and exit 1."""
    from llmpq.runtime import ServeFailed

    try:
        return call()
    except ServeFailed as err:  # the line names the failing stage; its log is in the run folder
        print(f"failed: {err}")
        print(f"llmpq serve: failed: {err}", file=sys.__stderr__)
        raise SystemExit(1) from None
