"""``serve_dataset``: every request of a file through a plan, slots refilled, outputs streamed.

Usage::

    from llmpq.runtime import serve_dataset

    result = serve_dataset("plan.json", "results/models/smollm2-135m", "prompts.jsonl",
                           "results/serve/x", cluster="config/clusters/cpu_hetero.yaml")
    result.metrics.tokens_per_s, result.metrics.prompts      # also DIR/metrics.json
    serve_dataset(..., resume=True)        # serve only the ids DIR/outputs.jsonl lacks

or ``llmpq serve --plan P --model DIR --prompts FILE --out DIR [--resume]``.

Before anything starts, every request is read, checked and tokenized
(:mod:`llmpq.runtime.requests`: a bad line stops the run naming its line number) and every
stage's memory is checked at the plan's concurrency with every slot at the longest context;
``DIR/outputs.jsonl`` that exists without ``resume`` is refused (never mixed with a new run).
The stages then run the continuous schedule (:mod:`llmpq.runtime.continuous`) and the first
stage appends each request's output as it finishes (:mod:`llmpq.runtime.outputs`), so a run
that fails keeps every finished line, and ``resume=True`` serves the rest. A progress bar
(prompts, generated tokens/s, time left) follows the first stage's ``progress.json``, in a
terminal or a notebook (``tqdm.auto``). ``DIR/metrics.json`` is written once, at the end of a
run that succeeded (:class:`~llmpq.runtime.metrics.DatasetMetrics`).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from llmpq.cluster import Cluster, load_cluster
from llmpq.errors import UserError
from llmpq.files import write_json_atomic
from llmpq.plan import Plan, load_plan
from llmpq.runtime.budget import check_stage_budget
from llmpq.runtime.job import DatasetJob, Fault, Job, JobDir
from llmpq.runtime.launch import (
    checked_inputs,
    job_dir_for,
    run_other_node,
    run_threads,
    run_torchrun,
    stage_jobs,
)
from llmpq.runtime.metrics import DatasetMetrics
from llmpq.runtime.nodes import Nodes, node_layout
from llmpq.runtime.outputs import answered_ids
from llmpq.runtime.prompts import generation_ids, load_tokenizer
from llmpq.runtime.requests import RequestLimits, RequestSummary, prepare_requests
from llmpq.runtime.sampling import Sampling
from llmpq.runtime.worker import dataset_workload, run_dataset_stage

OUTPUTS = "outputs.jsonl"


@dataclass(frozen=True)
class DatasetResult:
    metrics: DatasetMetrics | None  # None: nothing left to serve, or not the first node
    out_dir: Path
    skipped: int  # requests already answered (resume)


def max_positions(config: dict) -> int | None:
    """The positions a model can attend over (None: not bounded by its config, e.g. ALiBi)."""
    for key in ("max_position_embeddings", "n_positions", "seq_length"):
        if isinstance(config.get(key), int):
            return config[key]
    return None


class _ProgressBar:
    """tqdm over ``progress.json``: prompts done, generated tokens/s and the time left."""

    def __init__(self, path: Path, total: int, enabled: bool) -> None:
        self.path, self.bar = path, None
        if enabled and total:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="prompt", desc="serving", dynamic_ncols=True)

    def poll(self) -> None:
        if self.bar is None or not self.path.is_file():
            return
        try:
            p = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            return
        self.bar.n = p["done"]
        rate = p["generated_tokens"] / p["elapsed_s"] if p["elapsed_s"] else 0.0
        self.bar.set_postfix_str(f"{rate:.1f} tok/s", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.poll()
            self.bar.close()


def previous_answers(out_dir: Path, resume: bool) -> set[str]:
    """The ids already answered (resume), or refuse an ``outputs.jsonl`` of an earlier run."""
    outputs = out_dir / OUTPUTS
    if resume:
        return answered_ids(outputs)
    if outputs.is_file() and outputs.stat().st_size:
        raise UserError("--out", str(out_dir), "pass --resume to serve only the ids it lacks, "
                        "or choose a new --out", f"already holds {OUTPUTS}")  # fmt: skip
    outputs.unlink(missing_ok=True)
    return set()


def serve_dataset(
    plan: Plan | str | Path,
    model_dir: str | Path,
    prompts: str | Path,
    out_dir: str | Path,
    *,
    cluster: Cluster | str | Path | None = None,
    resume: bool = False,
    refill: bool = True,
    max_new_tokens: int | None = None,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    quantized: str | Path | None = None,
    group_size: int = 128,
    launcher: str = "torchrun",
    torchrun_args: Sequence[str] = (),
    stage_timeout_s: float = 30.0,
    load_timeout_s: float = 600.0,
    fault: Fault | None = None,
    ring: str = "auto",
    progress: bool = True,
    nodes: Nodes | None = None,
) -> DatasetResult:
    """Serve every request of ``prompts`` under ``plan``; ``out_dir/outputs.jsonl`` grows as
    requests finish, ``metrics.json`` is written at the end. ``max_new_tokens`` is the limit of
    a request that names none (default: the plan's ``gen_len``); ``refill=False`` serves one
    batch of ``concurrency`` requests at a time. Other arguments as :func:`serve`."""
    start = time.perf_counter()
    plan = plan if isinstance(plan, Plan) else load_plan(plan)
    cluster = load_cluster(cluster) if isinstance(cluster, (str, Path)) else cluster
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    config, spec = checked_inputs(plan, model_dir, launcher, ring)
    layout = None if nodes is None else node_layout(plan, cluster, nodes.count)
    if nodes is not None and nodes.rank != 0:  # node 0 reads the requests and writes outputs
        run_other_node(plan, out_dir, nodes, layout, torchrun_args)
        return DatasetResult(None, out_dir, 0)
    if not Path(prompts).is_file():
        raise UserError("prompts file", str(prompts), "check the path", problem="does not exist")
    jobs = stage_jobs(plan, cluster)
    answered = previous_answers(out_dir, resume)
    tokenizer = load_tokenizer(model_dir)
    eos_ids, pad_id = generation_ids(model_dir)
    limits = RequestLimits(
        max_positions(config), max_new_tokens or plan.workload.gen_len,
        frozenset({model_dir.name, plan.model_id, str(config.get("_name_or_path", ""))} - {""}),
        Sampling(temperature, top_p, seed),
    )  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    jd = job_dir_for(out_dir, nodes)
    try:
        summary = prepare_requests(prompts, tokenizer, limits, jd.path / "requests.jsonl",
                                   answered)  # fmt: skip
        if summary.count == 0:
            shutil.rmtree(jd.path, ignore_errors=True)
            return DatasetResult(None, out_dir, summary.skipped)
        job = _dataset_job(plan, model_dir, jobs, summary, out_dir, jd, eos_ids, pad_id,
                           refill, quantized, group_size, stage_timeout_s, load_timeout_s,
                           fault, ring)  # fmt: skip
        for rank, stage_job in enumerate(job.stages):  # fail fast, before any process starts
            check_stage_budget(plan, rank, spec, dataset_workload(job), stage_job.budget_bytes)
        bar = _ProgressBar(Path(job.dataset.progress), summary.count, progress)
        try:
            if launcher == "threads":
                reports = run_threads(job, lambda rank, transport, wait: run_dataset_stage(
                    job, rank, transport, wait, set_threads=False,
                    on_finish=(lambda r, t, why: bar.poll()) if rank == 0 else None))  # fmt: skip
            else:
                jd.write_job(job)
                run_torchrun(jd, plan, torchrun_args, on_poll=bar.poll, nodes=nodes,
                             layout=layout)  # fmt: skip
                reports = jd.reports(len(plan.stages))
        finally:
            bar.close()
    except BaseException:
        if (jd.path / "torchrun.log").is_file():
            raise  # kept for the failure's log (named in the error)
        shutil.rmtree(jd.path, ignore_errors=True)
        raise
    shutil.rmtree(jd.path, ignore_errors=True)
    metrics = DatasetMetrics.from_reports(
        plan, reports, refill=refill, prompt_lens=summary.prompt_lens,
        wall_s=time.perf_counter() - start, launcher=launcher,
    )  # fmt: skip
    write_json_atomic(out_dir / "metrics.json", metrics.to_dict())
    return DatasetResult(metrics, out_dir, summary.skipped)


def _dataset_job(plan: Plan, model_dir: Path, jobs, summary: RequestSummary, out_dir: Path,
                 jd: JobDir, eos_ids, pad_id, refill, quantized, group_size, stage_timeout_s,
                 load_timeout_s, fault, ring) -> Job:  # fmt: skip
    contexts = summary.prompt_lens + summary.max_new_tokens
    dataset = DatasetJob(
        requests=str((jd.path / "requests.jsonl").resolve()),
        outputs=str((out_dir / OUTPUTS).resolve()), output_format=summary.format,
        model_name=model_dir.name, max_prompt_len=int(summary.prompt_lens.max()),
        max_context_len=int(contexts.max()), refill=refill,
        progress=str((jd.path / "progress.json").resolve()),
    )  # fmt: skip
    return Job(
        plan=plan.to_dict(), model_dir=str(model_dir.resolve()), stages=jobs, gen_len=1,
        eos_ids=tuple(eos_ids), pad_id=pad_id,
        quantized=None if quantized is None else str(Path(quantized).resolve()),
        group_size=group_size, stage_timeout_s=stage_timeout_s, load_timeout_s=load_timeout_s,
        fault=fault, ring=ring, dataset=dataset,
    )  # fmt: skip
