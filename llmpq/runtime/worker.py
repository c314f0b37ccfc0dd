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
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from llmpq.errors import UserError
from llmpq.models.checkpoint import Checkpoint
from llmpq.models.spec import ModelSpec
from llmpq.models.stage import PipelineStage, StageRange, load_stage
from llmpq.runtime.budget import check_stage_budget
from llmpq.runtime.job import Fault, Job, JobDir
from llmpq.runtime.pipeline import Batch, StagePipeline
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
    plan, stage_job, device = job.plan_obj, job.stages[rank], torch.device(device)
    if set_threads and stage_job.threads and device.type == "cpu":
        torch.set_num_threads(stage_job.threads)
    spec = ModelSpec.from_hf_config(Checkpoint(Path(job.model_dir)).config_dict())
    workload = Workload(input_ids.shape[0], input_ids.shape[1], job.gen_len)
    need = check_stage_budget(plan, rank, spec, workload, stage_job.budget_bytes)
    load_start = time.perf_counter()
    stage = load_plan_stage(job, rank, device)
    weights_bytes = sum(t.numel() * t.element_size() for t in stage.state_dict().values())
    load_s = time.perf_counter() - load_start
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
    s = plan.stages[rank]
    report = {
        "stage": rank, "device": s.device, "layers": list(s.layers), "bits": list(s.bits),
        "threads": torch.get_num_threads(), "load_s": load_s, "busy_s": result.busy_s,
        "prefill_busy_s": result.prefill_busy_s,
        "decode_busy_s": result.busy_s - result.prefill_busy_s,
        "prefill_s": result.prefill_s, "decode_s": result.decode_s,
        "forward_passes": result.micro_batches, "weights_bytes": weights_bytes,
        "kv_cache_bytes": result.kv_cache_bytes, "peak_memory_bytes": _peak_memory_bytes(device),
        "predicted_memory_bytes": need.total_bytes, "budget_bytes": stage_job.budget_bytes,
    }  # fmt: skip
    tokens = None
    if result.tokens is not None:
        tokens = {"tokens": result.tokens, "lengths": list(result.lengths)}
    return report, tokens


def ring_transport(job: Job, rank: int, world: int, device: torch.device, one_host: bool,
                   batch_shape: tuple[int, int]):  # fmt: skip
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

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
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
        dist.init_process_group(
            "nccl" if cuda else "gloo", timeout=timedelta(seconds=job.load_timeout_s)
        )
        one_host = int(os.environ.get("LOCAL_WORLD_SIZE", world)) == world  # set by torchrun
        transport = ring_transport(job, rank, world, device, one_host, ids.shape)
        report, tokens = run_stage(
            job, rank, ids, mask, transport, dist.barrier, device,
            lambda state, **info: jd.write_status(rank, state, **info),
        )  # fmt: skip
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
