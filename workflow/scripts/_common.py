"""Shared by the workflow scripts: run one llmpq call with its output logged, user errors as one line."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from pathlib import Path


def run_logged(log_path: str, fn: Callable[[], object], threads: int | None = None) -> None:
    """Run ``fn`` with stdout/stderr going to ``log_path``; a UserError becomes one line and exit 2.
    ``threads``: the job's threads (snakemake.threads: ``--cores`` locally, what the profile's
    set-threads asked SLURM for on a cluster), given to torch."""
    from llmpq.errors import UserError

    if threads is not None:
        import torch

        torch.set_num_threads(max(1, int(threads)))

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


def serve_by_srun(sm, flags: list[str]) -> None:
    """Rules serve_nodes / serve_dataset_nodes: the per-node ``llmpq serve`` with ``flags``, one
    launcher per host of the plan through one heterogeneous srun (llmpq.runtime.slurm). Each
    node asks for the rule's resources: cpus_per_task (CPU workers: their cores from the
    cluster file), mem_mb, slurm_partition, slurm_account, runtime (minutes)."""
    import os

    from llmpq.runtime.slurm import llmpq_command, rendezvous_port, run_id_of, serve_over_srun

    out = Path(sm.output.metrics).parent.resolve()
    run_id = run_id_of(Path(sm.output.metrics).parent)
    argv = [*llmpq_command(), "serve", "--plan", os.path.abspath(sm.input.plan),
            "--model", os.path.abspath(sm.input.model), "--cluster",
            os.path.abspath(sm.input.cluster), "--out", str(out), "--no-progress",
            "--rdzv-id", run_id, *flags]  # fmt: skip
    res = sm.resources
    common = [f"--{flag}={res[key]}" for flag, key in
              (("partition", "slurm_partition"), ("account", "slurm_account"), ("time", "runtime"))
              if res.get(key)]  # fmt: skip
    serve_over_srun(
        sm.input.plan, sm.input.cluster, argv, gpu_models=sm.params.gpu_models,
        cpus=int(res.get("cpus_per_task") or 1), memory_MB=int(res.get("mem_mb") or 4000),
        port=rendezvous_port(run_id), job_name=run_id, common=common,
    )  # fmt: skip
