"""``serve``: run a plan for real, one process per stage under torchrun, and write what it made.

Usage::

    from llmpq.runtime import serve

    result = serve("plan.json", "results/models/default", "prompts.jsonl", "results/serve/x",
                   cluster="config/clusters/cpu_hetero.yaml")
    result.metrics.tokens_per_s, result.outputs[0].text        # also DIR/metrics.json, outputs.jsonl
    serve(plan, model_dir, None, out, synthetic=True, temperature=0.8, top_p=0.95, seed=1)

or ``llmpq serve --plan plan.json --model DIR (--prompts F.jsonl | --synthetic) --out DIR``.

What happens: the plan is checked against the cluster and every stage's memory need against
its budget (the memory model: an over-budget stage fails here, before any process starts); the
prompts are tokenized and left-padded to one length; the job goes to ``DIR/.serve-XXXX/``;
``python -m torch.distributed.run --standalone --nproc-per-node N -m llmpq.runtime.worker``
starts the stages (:mod:`llmpq.runtime.worker`), which pass hidden states and token ids around
the ring (``ring="auto"``: TCP sockets between CPU stages of one host,
:mod:`llmpq.runtime.sockets`; ``torch.distributed`` frames otherwise,
:mod:`llmpq.runtime.transport`); the first stage's tokens become
``DIR/outputs.jsonl`` (``{"id", "text", "token_ids"}``, generated tokens only, up to and
including an end-of-sequence token) and the reports ``DIR/metrics.json``
(:mod:`llmpq.runtime.metrics`), both written atomically and only on success.

Faults: a stage that dies, or hangs (its neighbour's receive waits ``stage_timeout_s``), makes
:class:`ServeFailed` name it; the launcher then kills what is left of the run (the process group
it started) a few seconds later, so a run never hangs. The job folder with ``torchrun.log`` is
kept on failure and removed on success.

Several nodes: ``torchrun_args`` replace ``--standalone`` (e.g. ``["--nnodes", "2",
"--node-rank", "0", "--rdzv-backend", "c10d", "--rdzv-endpoint", "node-a:29500",
"--rdzv-id", "job1"]``); run the same ``serve`` on every node with its node rank and ``out_dir``
on a shared file system; under SLURM one task per node: ``srun --nodes 2 --ntasks-per-node 1
llmpq serve ... --torchrun-args "--nnodes 2 --node-rank $SLURM_NODEID --rdzv-backend c10d
--rdzv-endpoint $MASTER:29500 --rdzv-id $SLURM_JOB_ID"``. The node whose processes hold stage 0
writes the outputs. ``launcher="threads"`` runs the stages as threads of this process over
in-memory queues (the same schedule; for tests and notebooks).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from llmpq import allocation
from llmpq.cluster import Cluster, load_cluster
from llmpq.errors import ServeFailed, UserError
from llmpq.files import write_json_atomic, write_text_atomic
from llmpq.models.checkpoint import Checkpoint
from llmpq.models.spec import ModelSpec
from llmpq.plan import Plan, load_plan
from llmpq.runtime.budget import check_stage_budget
from llmpq.runtime.job import Fault, Job, JobDir, StageJob
from llmpq.runtime.metrics import ServeMetrics
from llmpq.runtime.nodes import (
    NodeLayout,
    Nodes,
    mark_started,
    missing_nodes,
    node_env,
    node_layout,
    stages_env,
)
from llmpq.runtime.nodes import torchrun_args as node_torchrun_args
from llmpq.runtime.prompts import (
    Prompt,
    encode,
    generation_ids,
    load_prompts,
    load_tokenizer,
    synthetic_prompts,
)  # fmt: skip
from llmpq.runtime.sampling import Sampling
from llmpq.runtime.transport import QueueTransport
from llmpq.runtime.worker import run_stage, schedule_of
from llmpq.workload import Workload

KILL_GRACE_s = 3.0  # after a stage reports a failure, torchrun's own teardown gets this long
POLL_s = 0.1
LAUNCHERS = ("torchrun", "threads")
RINGS = ("auto", "sockets", "dist")  # how torchrun's stages pass messages (llmpq.runtime.worker)


@dataclass(frozen=True)
class Output:
    id: str
    text: str
    token_ids: tuple[int, ...]  # generated tokens only

    def to_dict(self) -> dict:
        return {"id": self.id, "text": self.text, "token_ids": list(self.token_ids)}


@dataclass(frozen=True)
class ServeResult:
    metrics: ServeMetrics
    outputs: tuple[Output, ...]
    out_dir: Path


def stage_jobs(plan: Plan, cluster: Cluster | None) -> tuple[StageJob, ...]:
    """Each stage's threads and budget from its cluster device (without a cluster: the host's
    cores shared evenly, no budget)."""
    if cluster is None:
        threads = max(1, allocation.cores() // len(plan.stages))
        return tuple(StageJob(s.device, threads, None) for s in plan.stages)
    plan.check_against(cluster)
    hosts = [cluster.device(s.device).host for s in plan.stages]
    jobs = []
    for s, host in zip(plan.stages, hosts, strict=True):
        device = cluster.device(s.device)
        share = max(1, allocation.cores() // hosts.count(host))
        jobs.append(StageJob(s.device, device.cores or share, device.memory_bytes, host))
    return tuple(jobs)


def _flag(args: Sequence[str], *names: str) -> str | None:
    """The value of the first of ``names`` in ``args`` (``--x v`` or ``--x=v``), else None."""
    args = list(args)
    for i, a in enumerate(args):
        for name in names:
            if a == name and i + 1 < len(args):
                return args[i + 1]
            if a.startswith(name + "="):
                return a.split("=", 1)[1]
    return None


def torchrun_command(world: int, job_dir: Path, torchrun_args: Sequence[str] = ()) -> list[str]:
    """The command that starts the stages: standalone on this host unless rendezvous options
    are passed through; processes per node: given, else the stages over ``--nnodes``."""
    args = list(torchrun_args) or ["--standalone"]
    if _flag(args, "--nproc-per-node", "--nproc_per_node") is None:
        nnodes = int((_flag(args, "--nnodes") or "1").split(":")[-1])
        args += ["--nproc-per-node", str(world // nnodes)]
    return [sys.executable, "-m", "torch.distributed.run", *args,
            "-m", "llmpq.runtime.worker", str(job_dir)]  # fmt: skip


def _stage_name(plan: Plan, rank: int, layout: NodeLayout | None = None) -> str:
    s = plan.stages[rank]
    where = f" on {layout.host_of(rank)}" if layout is not None and len(layout.hosts) > 1 else ""
    return f"stage {rank} ({s.device}{where}, layers [{s.layers[0]}, {s.layers[1]}))"


def diagnose(plan: Plan, statuses: dict[int, dict | None], returncode: int | None,
             layout: NodeLayout | None = None) -> str:  # fmt: skip
    """One line naming the failed stage: its own error first, then a stage that vanished
    without a word (killed, crashed, or hung and killed), then the peer a stage lost."""
    own = [(r, s) for r, s in statuses.items()
           if s and s["state"] == "failed" and "lost_peer" not in s]  # fmt: skip
    if own:
        return "; ".join(f"{_stage_name(plan, r, layout)} failed: {s['error']}" for r, s in own)
    lost = {r: s for r, s in statuses.items() if s and "lost_peer" in s}
    silent = [r for r, s in statuses.items() if not s or s["state"] in ("started", "loaded")]
    if silent:
        seen = "; ".join(f"stage {r} {s['error']}" for r, s in lost.items())
        return "; ".join(
            f"{_stage_name(plan, r, layout)} died or hung (it never reported)" for r in silent
        ) + (f" [{seen}]" if seen else "")
    if lost:
        r, s = next(iter(lost.items()))
        return f"{_stage_name(plan, s['lost_peer'], layout)} died or hung: stage {r} {s['error']}"
    return f"the run failed (torchrun exit code {returncode}) with no stage reporting an error"


def run_torchrun(jd: JobDir, plan: Plan, torchrun_args: Sequence[str],
                  on_poll=lambda: None, nodes: Nodes | None = None,
                  layout: NodeLayout | None = None) -> None:  # fmt: skip
    """Run the job under torchrun; raise naming the stage that failed. ``on_poll`` runs every
    poll (the dataset run's progress bar). ``nodes``: this launcher is one node of a
    multi-node run (:mod:`llmpq.runtime.nodes`; ``layout`` its stages per node)."""
    world = len(plan.stages)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    log_path, since = jd.log, time.time()
    if nodes is not None:
        torchrun_args = [*node_torchrun_args(nodes, layout), *torchrun_args]
        env.update(stages_env(layout, nodes.rank), **node_env(nodes))
        mark_started(nodes, jd.path.parent)
        log_path = nodes.markers(jd.path.parent) / f"node-{nodes.rank}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            torchrun_command(world, jd.path, torchrun_args), stdout=log, stderr=subprocess.STDOUT,
            env=env, start_new_session=True,
        )  # fmt: skip
        failed_at = None
        try:
            while proc.poll() is None:
                time.sleep(POLL_s)
                on_poll()
                if failed_at is None and any(
                    s and s["state"] == "failed" for s in jd.statuses(world).values()
                ):
                    failed_at = time.monotonic()
                if failed_at is not None and time.monotonic() - failed_at > KILL_GRACE_s:
                    break
        finally:
            if proc.poll() != 0:
                _kill_run(proc, jd, world)
    if nodes is not None and nodes.rank != 0 and proc.returncode == 0:
        return  # this node's stages are done; node 0 collects the reports
    statuses = jd.statuses(world)
    if proc.returncode != 0 or any(not s or s["state"] != "done" for s in statuses.values()):
        message = diagnose(plan, statuses, proc.returncode, layout)
        if nodes is not None and not any(statuses.values()):
            missing = missing_nodes(nodes, jd.path.parent, since)
            message = (
                "; ".join(
                    f"node {r} ({layout.hosts[r]}: stages {', '.join(map(str, layout.stages[r]))}) "
                    f"never joined the rendezvous at {nodes.endpoint} within {nodes.join_timeout_s:g} s"
                    for r in missing
                )
                or f"the nodes met at {nodes.endpoint} but no stage started: {message}"
            )
        user = any(s and s.get("user_error") for s in statuses.values())
        if user:
            raise UserError("plan", plan.model_id, "fix the input named", f"cannot run: {message}")
        raise ServeFailed(f"{message}; log: {log_path}")
    if nodes is not None:  # node 0, every stage done: the nodes' marks and logs are not needed
        shutil.rmtree(nodes.markers(jd.path.parent), ignore_errors=True)


def _runs(pid: int, jd: JobDir) -> bool:
    """Whether process ``pid`` is still a worker of this job (its command names the job folder)."""
    try:
        return str(jd.path) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def _kill_run(proc: subprocess.Popen, jd: JobDir, world: int) -> None:
    """SIGKILL torchrun's process group and every worker of this run on this host (by the pid it
    reported): torchrun starts each worker in its own session, and a stopped (hung) one
    outlives torchrun's SIGTERM."""
    pids = [s["pid"] for s in jd.statuses(world).values()
            if s and s.get("host") == os.uname().nodename and _runs(s["pid"], jd)]  # fmt: skip
    for kill, target in [(os.killpg, proc.pid)] + [(os.kill, pid) for pid in pids]:
        try:
            kill(target, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    proc.wait()


def run_threads(job: Job, stage_fn: Callable[..., object]) -> list:
    """Every stage of ``job`` as a thread of this process over in-memory queues:
    ``stage_fn(rank, transport, barrier_wait)`` per stage; their results in rank order. The
    first real error of a stage is re-raised (a broken barrier only where nothing else failed)."""
    world = len(job.stages)
    transports = QueueTransport.ring(world, job.stage_timeout_s)
    barrier = threading.Barrier(world)
    results: dict[int, object] = {}

    def one(rank: int) -> None:
        try:
            results[rank] = stage_fn(rank, transports[rank], barrier.wait)
        except BaseException as err:  # noqa: BLE001  (re-raised below, in the caller)
            results[rank] = err
            barrier.abort()

    threads = [threading.Thread(target=one, args=(r,), daemon=True) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    errors = [(r, e) for r, e in sorted(results.items()) if isinstance(e, BaseException)]
    if errors:
        real = [(r, e) for r, e in errors if not isinstance(e, threading.BrokenBarrierError)]
        raise (real or errors)[0][1]
    return [results[r] for r in range(world)]


def _run_threads(job: Job, ids: torch.Tensor, mask: torch.Tensor) -> tuple[list, dict]:
    results = run_threads(job, lambda rank, transport, wait: run_stage(
        job, rank, ids, mask, transport, wait, set_threads=False))  # fmt: skip
    return [r[0] for r in results], results[0][1]


def checked_inputs(plan: Plan, model_dir: Path, launcher: str, ring: str) -> tuple[dict, ModelSpec]:
    """The checkpoint's config and shape, after checking the launcher, the ring and that the
    plan is for this model (UserError naming the one that is wrong)."""
    if launcher not in LAUNCHERS:
        raise UserError("launcher", launcher, f"use one of {list(LAUNCHERS)}")
    if ring not in RINGS:
        raise UserError("ring", ring, f"use one of {list(RINGS)}")
    config = Checkpoint(model_dir).config_dict()
    spec = ModelSpec.from_hf_config(config, name=model_dir.name)
    if spec.num_layers != plan.model_shape.num_layers:
        raise UserError(
            "--plan", plan.model_id, f"use a plan made for {model_dir} ({spec.num_layers} layers)",
            f"has {plan.model_shape.num_layers} layers",
        )  # fmt: skip
    return config, spec


def job_dir_for(out_dir: Path, nodes: Nodes | None) -> JobDir:
    """Node 0's (or a single node's) new job folder: a fresh ``.serve-XXXX``, or the multi-node
    run's shared ``.serve-<run id>``."""
    return JobDir.create(out_dir, None if nodes is None else nodes.job_path(out_dir))


def run_other_node(plan: Plan, out_dir: Path, nodes: Nodes, layout: NodeLayout,
                   torchrun_args: Sequence[str] = ()) -> None:  # fmt: skip
    """Node ``nodes.rank`` ≥ 1 of a multi-node run: start its stages on the job node 0 writes
    to the shared ``out_dir``; return when they are done, raise naming the stage that failed."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    run_torchrun(JobDir(nodes.job_path(out_dir)), plan, torchrun_args, nodes=nodes, layout=layout)


def serve(
    plan: Plan | str | Path,
    model_dir: str | Path,
    prompts: Sequence[Prompt] | str | Path | None,
    out_dir: str | Path,
    *,
    cluster: Cluster | str | Path | None = None,
    synthetic: bool = False,
    seed: int = 0,
    temperature: float = 0.0,
    top_p: float = 1.0,
    gen_len: int | None = None,
    quantized: str | Path | None = None,
    group_size: int = 128,
    ignore_eos: bool | None = None,
    launcher: str = "torchrun",
    torchrun_args: Sequence[str] = (),
    stage_timeout_s: float = 30.0,
    load_timeout_s: float = 600.0,
    fault: Fault | None = None,
    ring: str = "auto",
    nodes: Nodes | None = None,
) -> ServeResult:
    """Run ``plan`` on ``prompts`` (or ``synthetic=True``: the plan's workload of random ids,
    ignoring end-of-sequence) and write ``out_dir/outputs.jsonl`` and ``metrics.json``.

    ``gen_len`` defaults to the plan's workload; ``quantized`` is a pre-quantized file
    (``llmpq.quant.quantize_model(...).save``) for the plan's bits, else 3/4/8-bit layers are
    RTN-quantized as they load (``group_size``). ``ring``: ``auto`` (TCP sockets between CPU
    stages of one host, else ``torch.distributed``), ``sockets`` or ``dist``. ``fault`` is a
    test hook.
    """
    start = time.perf_counter()
    plan = plan if isinstance(plan, Plan) else load_plan(plan)
    cluster = load_cluster(cluster) if isinstance(cluster, (str, Path)) else cluster
    model_dir = Path(model_dir)
    _, spec = checked_inputs(plan, model_dir, launcher, ring)
    layout = None if nodes is None else node_layout(plan, cluster, nodes.count)
    if nodes is not None and nodes.rank != 0:
        run_other_node(plan, Path(out_dir), nodes, layout, torchrun_args)
        return ServeResult(None, (), Path(out_dir))  # type: ignore[arg-type]
    w = plan.workload
    if synthetic:
        prompts = synthetic_prompts(w.batch_size, w.prompt_len, spec.vocab_size, seed)
    elif prompts is None:
        raise UserError("prompts", None, "give a prompts JSONL file or synthetic=True")
    elif isinstance(prompts, (str, Path)):
        prompts = load_prompts(prompts)
    tokenizer = load_tokenizer(model_dir)
    eos_ids, pad_id = generation_ids(model_dir)
    if ignore_eos if ignore_eos is not None else synthetic:
        eos_ids = ()
    ids, mask = encode(prompts, tokenizer, pad_id)
    gen_len = gen_len or w.gen_len
    job = Job(
        plan=plan.to_dict(), model_dir=str(model_dir.resolve()), stages=stage_jobs(plan, cluster),
        gen_len=gen_len, sampling=Sampling(temperature, top_p, seed), eos_ids=eos_ids,
        pad_id=pad_id, quantized=None if quantized is None else str(Path(quantized).resolve()),
        group_size=group_size, stage_timeout_s=stage_timeout_s, load_timeout_s=load_timeout_s,
        fault=fault, ring=ring,
    )  # fmt: skip
    schedule_of(job, ids.shape[0])  # the micro-batches must hold the batch
    served = Workload(ids.shape[0], ids.shape[1], gen_len)
    for rank, stage_job in enumerate(job.stages):  # fail fast, before any process starts
        check_stage_budget(plan, rank, spec, served, stage_job.budget_bytes)
    out_dir = Path(out_dir)
    if launcher == "threads":
        reports, tokens = _run_threads(job, ids, mask)
    else:
        jd = job_dir_for(out_dir, nodes)
        jd.write(job, ids, mask)
        run_torchrun(jd, plan, torchrun_args, nodes=nodes, layout=layout)
        reports, tokens = jd.reports(len(plan.stages)), jd.tokens()
        shutil.rmtree(jd.path, ignore_errors=True)
    outputs = tuple(
        Output(p.id, tokenizer.decode(row[:n]) if tokenizer else "", tuple(row[:n]))
        for p, row, n in zip(prompts, tokens["tokens"].tolist(), tokens["lengths"], strict=True)
    )
    generated = sum(len(o.token_ids) for o in outputs)
    write_text_atomic(out_dir / "outputs.jsonl",
                      "".join(json_line(o.to_dict()) for o in outputs))  # fmt: skip
    metrics = ServeMetrics.from_reports(
        plan, reports, batch_size=ids.shape[0], prompt_len=ids.shape[1], gen_len=gen_len,
        generated_tokens=generated, wall_s=time.perf_counter() - start, launcher=launcher,
    )  # fmt: skip
    write_json_atomic(out_dir / "metrics.json", metrics.to_dict())
    return ServeResult(metrics, outputs, out_dir)


def json_line(data: dict) -> str:
    import json

    return json.dumps(data, ensure_ascii=False) + "\n"
