"""One pipeline stage as a process (started by torchrun), or as a thread of the launcher.

Usage (the launcher runs this; by hand, with a job folder written by :mod:`llmpq.runtime.launch`)::

    python -m torch.distributed.run --standalone --nproc-per-node 2 \
        -m llmpq.runtime.worker results/serve/x/.serve-abcd

    report = run_stage(job, rank, ids, mask, transport, barrier)   # the same work, any transport

Rank r runs stage r of the plan: it sets its CPU threads, checks its memory budget with the
memory model *before* loading, loads only its layers (quantized to the plan's bits on the fly,
or from a pre-quantized file), waits for every stage to be loaded, runs its part of the schedule
(:mod:`llmpq.runtime.pipeline`) and reports. Backend: gloo on CPU, NCCL on CUDA (device
``cuda:LOCAL_RANK``). Each process writes ``status-<rank>.json`` (started, loaded, done, or
failed with the error, or terminated by a signal) so the launcher can name a stage that failed;
a barrier precedes ``destroy_process_group`` (gloo teardown otherwise aborts now and then).
"""

from __future__ import annotations

import os
import resource
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from llmpq.errors import UserError
from llmpq.files import write_json_atomic
from llmpq.models.checkpoint import Checkpoint
from llmpq.models.spec import ModelSpec
from llmpq.models.stage import PipelineStage, StageRange, load_stage
from llmpq.runtime.budget import check_stage_budget
from llmpq.runtime.job import Fault, Job, JobDir
from llmpq.runtime.nodes import check_device, stage_process_group, worker_stage
from llmpq.runtime.pipeline import Batch, StagePipeline
from llmpq.runtime.prompts import load_tokenizer
from llmpq.runtime.schedule import Schedule
from llmpq.runtime.sockets import SocketTransport
from llmpq.runtime.transport import DistTransport, Frames, PeerLost, QueueTransport
from llmpq.workload import Workload

USER_ERROR_EXIT = 2


def schedule_of(job: Job, batch_size: int) -> Schedule:
    mb = job.plan_obj.micro_batch
    return Schedule.of(batch_size, mb.prefill_size, mb.decode_size, mb.decode_count, job.gen_len)


def load_plan_stage(job: Job, rank: int, device: torch.device) -> PipelineStage:
    """Stage ``rank``'s layers at the plan's bits: from the pre-quantized file, or RTN now."""
    from llmpq.quant.apply import load_quantized_stage, quantize_stage, sixteen_bit_dtype
    from llmpq.quant.dense import pack_dense_linears
    from llmpq.quant.state import QuantizedModel

    plan = job.plan_obj
    ckpt = Checkpoint(Path(job.model_dir))
    num_layers = ckpt.config().num_hidden_layers
    start, end = plan.stages[rank].layers
    stage_range = StageRange.of(start, end, num_layers)
    if job.quantized is not None:
        qmodel = QuantizedModel.load(job.quantized, layers=stage_range.layer_ids)
        return pack_dense_linears(load_quantized_stage(ckpt, stage_range, qmodel, device=device))
    stage = load_stage(ckpt, stage_range, dtype=sixteen_bit_dtype(device), device=device)
    bits = plan.bits_per_layer()
    if any(b != 16 for b in plan.stages[rank].bits):
        quantize_stage(stage, bits, job.group_size)
    return pack_dense_linears(stage)  # the 16-bit layers and the head: as the profiler timed them


@torch.no_grad()
def warm_up(stage: PipelineStage, device: torch.device) -> None:
    """One short prefill and decode step on a throwaway cache: kernels' first-call setup
    (oneDNN primitives, CUDA handles) stays out of the measured run."""
    from llmpq.models.stage import StepInputs

    first = stage.stage_range.is_first
    mask = torch.ones(1, 4, dtype=torch.long, device=device)
    hidden = stage.config.hidden_size
    dtype = next((p.dtype for p in stage.parameters() if p.is_floating_point()), torch.float32)
    make = (lambda q: torch.full((1, q), 3, device=device)) if first else (
        lambda q: torch.zeros(1, q, hidden, dtype=dtype, device=device))  # fmt: skip
    cache, step = stage.new_cache(), StepInputs.from_mask(mask, 4)
    stage(make(4), step, cache, logits_to_keep=1)
    stage(make(1), step.next(), cache, logits_to_keep=1)


def _peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


class _FaultyTransport:
    """Test hook (``Job.fault``): the stage kills or stops itself before its n-th send."""

    def __init__(self, inner, fault: Fault) -> None:
        self.inner, self.fault, self.sends = inner, fault, 0
        self.world, self.rank = inner.world, inner.rank

    def send(self, msg) -> None:
        self.sends += 1
        if self.sends >= self.fault.after_sends:
            sig = signal.SIGKILL if self.fault.action == "kill" else signal.SIGSTOP
            os.kill(os.getpid(), sig)
        self.inner.send(msg)

    def recv(self):
        return self.inner.recv()

    def close(self) -> None:
        self.inner.close()


def _load_checked(job: Job, rank: int, device: torch.device, workload: Workload,
                  set_threads: bool):  # fmt: skip
    """Set the stage's threads, check its budget at ``workload`` before loading, load and warm
    it up: (stage, memory need, weight bytes, load seconds)."""
    stage_job = job.stages[rank]
    if set_threads and stage_job.threads and device.type == "cpu":
        torch.set_num_threads(stage_job.threads)
    spec = ModelSpec.from_hf_config(Checkpoint(Path(job.model_dir)).config_dict())
    need = check_stage_budget(job.plan_obj, rank, spec, workload, stage_job.budget_bytes)
    load_start = time.perf_counter()
    stage = load_plan_stage(job, rank, device)
    weights_bytes = sum(t.numel() * t.element_size() for t in stage.state_dict().values())
    load_s = time.perf_counter() - load_start
    return stage, need, weights_bytes, load_s


def _report(job: Job, rank: int, device: torch.device, need, weights_bytes: int, load_s: float,
            measured: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """What a stage reports: where it ran, what it measured, its memory beside the model's."""
    s = job.plan_obj.stages[rank]
    return {
        "stage": rank, "device": s.device, "layers": list(s.layers), "bits": list(s.bits),
        "threads": torch.get_num_threads(), "load_s": load_s, **measured,
        "weights_bytes": weights_bytes, "peak_memory_bytes": _peak_memory_bytes(device),
        "predicted_memory_bytes": need.total_bytes, "budget_bytes": job.stages[rank].budget_bytes,
    }  # fmt: skip


def run_stage(
    job: Job,
    rank: int,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    transport,
    barrier: Callable[[], None],
    device: torch.device | str = "cpu",
    status: Callable[..., None] = lambda state, **info: None,
    set_threads: bool = True,
) -> tuple[dict[str, Any], torch.Tensor | None]:
    """Check the budget, load, wait for all stages, run the schedule: (report, tokens or None)."""
    device = torch.device(device)
    workload = Workload(input_ids.shape[0], input_ids.shape[1], job.gen_len)
    stage, need, weights_bytes, load_s = _load_checked(job, rank, device, workload, set_threads)
    warm_up(stage, device)
    status("loaded")
    barrier()
    if job.fault is not None and job.fault.stage == rank:
        transport = _FaultyTransport(transport, job.fault)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    batch = Batch(input_ids, attention_mask, job.eos_ids, job.pad_id)
    result = StagePipeline(
        stage, schedule_of(job, input_ids.shape[0]), batch, transport, job.sampling, sync
    ).run()
    report = _report(job, rank, device, need, weights_bytes, load_s, {
        "busy_s": result.busy_s, "prefill_busy_s": result.prefill_busy_s,
        "decode_busy_s": result.busy_s - result.prefill_busy_s,
        "prefill_s": result.prefill_s, "decode_s": result.decode_s,
        "forward_passes": result.micro_batches, "kv_cache_bytes": result.kv_cache_bytes,
    })  # fmt: skip
    tokens = None
    if result.tokens is not None:
        tokens = {"tokens": result.tokens, "lengths": list(result.lengths)}
    return report, tokens


def dataset_workload(job: Job) -> Workload:
    """The shape a dataset run's memory is checked at: every slot at the longest context."""
    d, mb = job.dataset, job.plan_obj.micro_batch
    return Workload(mb.decode_size * mb.decode_count, d.max_prompt_len,
                    max(1, d.max_context_len - d.max_prompt_len))  # fmt: skip


class _Progress:
    """Stage 0's ``progress.json`` (prompts done, tokens, seconds), rewritten at most every
    half second and once at the end."""

    def __init__(self, path: str | None, total: int) -> None:
        self.path, self.total = path, total
        self.start = self.last = time.perf_counter()
        self.done = self.tokens = 0

    def update(self, tokens: int, final: bool = False) -> None:
        self.done += 0 if final else 1
        self.tokens += tokens
        now = time.perf_counter()
        if self.path and (final or now - self.last >= 0.5):
            self.last = now
            write_json_atomic(Path(self.path), {"done": self.done, "total": self.total,
                              "generated_tokens": self.tokens, "elapsed_s": now - self.start})  # fmt: skip


def run_dataset_stage(
    job: Job,
    rank: int,
    transport,
    barrier: Callable[[], None],
    device: torch.device | str = "cpu",
    status: Callable[..., None] = lambda state, **info: None,
    set_threads: bool = True,
    on_finish: Callable | None = None,
) -> dict[str, Any]:
    """A dataset run's stage: check the budget, load, wait for all, run the continuous schedule
    (:mod:`llmpq.runtime.continuous`); stage 0 appends each finished request to the outputs."""
    from llmpq.runtime.continuous import ContinuousPipeline, Slots
    from llmpq.runtime.outputs import OutputLog
    from llmpq.runtime.requests import iter_requests

    plan, device, d = job.plan_obj, torch.device(device), job.dataset
    stage, need, weights_bytes, load_s = _load_checked(job, rank, device, dataset_workload(job),
                                                       set_threads)  # fmt: skip
    if any(getattr(layer, "is_sliding", False) for layer in stage.new_cache().layers):
        raise UserError("model", job.model_dir, "serve it with --synthetic (one batch)",
                        "has sliding-window attention, which dataset serving does not refill")  # fmt: skip
    warm_up(stage, device)
    first = rank == 0
    log = requests = None
    if first:
        tokenizer = load_tokenizer(job.model_dir)
        with open(d.requests, encoding="utf-8") as f:
            total = sum(1 for _ in f)
        progress = _Progress(d.progress, total)
        log = OutputLog(d.outputs, d.output_format, d.model_name)
        requests = iter_requests(d.requests)

        def finished(request, tokens, why) -> None:
            text = tokenizer.decode(tokens, skip_special_tokens=True) if tokenizer else ""
            log.write(request, tokens, text, why)
            progress.update(len(tokens))
            if on_finish is not None:
                on_finish(request, tokens, why)

    status("loaded")
    barrier()
    if job.fault is not None and job.fault.stage == rank:
        transport = _FaultyTransport(transport, job.fault)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    mb = plan.micro_batch
    run = ContinuousPipeline(
        stage, Slots(mb.prefill_size, mb.decode_size, mb.decode_count), transport,
        eos_ids=job.eos_ids, pad_id=job.pad_id, requests=requests,
        on_finish=finished if first else (lambda r, t, why: None), refill=d.refill, sync=sync,
    )  # fmt: skip
    try:
        result = run.run()
    finally:
        if log is not None:
            log.close()
    if first:
        progress.update(0, final=True)
    return _report(job, rank, device, need, weights_bytes, load_s, result)


def ring_transport(job: Job, rank: int, world: int, device: torch.device, one_host: bool,
                   batch_shape: tuple[int, int] | None):  # fmt: skip
    """The ring for stage ``rank``: none to speak of for one stage; with ``job.ring`` "auto",
    TCP sockets between CPU stages of one host (:mod:`llmpq.runtime.sockets`), else
    ``torch.distributed`` frames (gloo between hosts, NCCL on GPUs); "sockets" or "dist"
    force one."""
    from llmpq.quant.apply import sixteen_bit_dtype

    if world == 1:
        return QueueTransport.ring(1, job.stage_timeout_s)[0]
    dtype = sixteen_bit_dtype(device)
    if job.ring == "sockets" or (job.ring == "auto" and device.type == "cpu" and one_host):
        return SocketTransport.connect(rank, world, dtype, job.stage_timeout_s)
    hidden = Checkpoint(Path(job.model_dir)).config().hidden_size
    if job.dataset is not None:  # any kind may follow any: every frame the largest's size
        from llmpq.runtime.continuous import meta_words

        mb = job.plan_obj.micro_batch
        frames = Frames(0, mb.prefill_size, mb.decode_size, job.dataset.max_prompt_len, hidden,
                        dtype, meta_words(mb.prefill_size, mb.decode_size), uniform=True)  # fmt: skip
    else:
        frames = Frames.of(schedule_of(job, batch_shape[0]), batch_shape[1], hidden, dtype)
    return DistTransport(rank, world, device, frames, job.stage_timeout_s)


def _on_sigterm(jd: JobDir, rank: int) -> None:
    def handler(signum, frame) -> None:
        jd.write_status(rank, "terminated", signal=signum)
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def main(job_dir: str) -> int:
    """The torchrun entry: stage ``RANK`` of the job in ``job_dir``; the process's exit code."""
    import torch.distributed as dist

    world = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", os.environ["RANK"]))
    rank = worker_stage(local_rank, int(os.environ["RANK"]))  # not RANK: see runtime.nodes
    jd = JobDir(Path(job_dir))
    _on_sigterm(jd, rank)
    jd.write_status(rank, "started")
    try:
        job, ids, mask = jd.read()
        if world != len(job.stages):
            raise UserError("world size", world, f"start one process per stage ({len(job.stages)})")
        cuda = torch.cuda.is_available()
        device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
        if cuda:
            torch.cuda.set_device(device)
        stage_job = job.stages[rank]
        check_device(job.plan_obj, rank, device, stage_job.threads, stage_job.budget_bytes,
                     stage_job.host or os.uname().nodename)  # fmt: skip
        stage_process_group("nccl" if cuda else "gloo", rank, world, job.load_timeout_s)
        one_host = int(os.environ.get("LOCAL_WORLD_SIZE", world)) == world  # set by torchrun
        transport = ring_transport(job, rank, world, device, one_host,
                                   None if ids is None else ids.shape)  # fmt: skip
        status = lambda state, **info: jd.write_status(rank, state, **info)  # noqa: E731
        if job.dataset is not None:
            report, tokens = run_dataset_stage(job, rank, transport, dist.barrier, device,
                                               status), None  # fmt: skip
        else:
            report, tokens = run_stage(job, rank, ids, mask, transport, dist.barrier, device,
                                       status)  # fmt: skip
        jd.write_report(rank, report, tokens)
        jd.write_status(rank, "done")
        dist.barrier()  # before destroy: gloo teardown otherwise aborts now and then
        dist.destroy_process_group()
        return 0
    except PeerLost as err:
        jd.write_status(rank, "failed", error=str(err), lost_peer=err.peer)
        print(f"stage {rank}: {err}", file=sys.stderr)
        return 1
    except UserError as err:
        jd.write_status(rank, "failed", error=str(err), user_error=True)
        print(f"stage {rank}: error: {err}", file=sys.stderr)
        return USER_ERROR_EXIT
    except BaseException as err:  # noqa: BLE001  (report any failure, then exit non-zero)
        jd.write_status(rank, "failed", error=f"{type(err).__name__}: {err}")
        traceback.print_exc()
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
