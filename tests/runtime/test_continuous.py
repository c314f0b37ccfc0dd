"""The dataset schedule (continuous batching) inside one process: every stage a thread over
in-memory queues. Greedy outputs per request must equal HF ``generate()`` on that prompt alone,
whatever the slots, stages, refill or not; sampling must not depend on the schedule."""

from __future__ import annotations

import threading

import pytest
import torch

from llmpq.admission import Slots, Window
from llmpq.models.checkpoint import Checkpoint
from llmpq.models.stage import StageRange, load_stage
from llmpq.runtime.continuous import ContinuousPipeline
from llmpq.runtime.requests import Request
from llmpq.runtime.sampling import Sampling
from llmpq.runtime.transport import QueueTransport

pytestmark = pytest.mark.usefixtures("one_thread")
EOS = 7


def _requests(count: int, seed: int = 1, sampling: Sampling | None = None) -> list[Request]:
    sampling = sampling or Sampling()
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(count):
        length = int(torch.randint(1, 12, (1,), generator=g))
        ids = torch.randint(3, 500, (length,), generator=g).tolist()
        limit = int(torch.randint(1, 10, (1,), generator=g))
        out.append(Request(f"r{i}", i, tuple(ids), limit, sampling))
    return out


def _run(model_dir, splits, slots, requests, refill=True):
    """Run the schedule; (outputs by id, stage reports)."""
    ckpt = Checkpoint(model_dir)
    layers = ckpt.config().num_hidden_layers
    transports = QueueTransport.ring(len(splits), 30.0)
    outputs, reports, errors = {}, {}, []

    def one(rank: int) -> None:
        try:
            stage = load_stage(ckpt, StageRange.of(*splits[rank], layers), dtype=torch.float32)
            run = ContinuousPipeline(
                stage, slots, transports[rank], eos_ids=(EOS,), pad_id=1,
                requests=iter(requests) if rank == 0 else None, refill=refill,
                on_finish=lambda r, t, why: outputs.__setitem__(r.id, (list(t), why)),
            )  # fmt: skip
            reports[rank] = run.run()
        except BaseException as err:  # noqa: BLE001  (re-raised below)
            errors.append(err)

    threads = [threading.Thread(target=one, args=(r,)) for r in range(len(splits))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return outputs, reports


def _hf(model, request: Request) -> list[int]:
    out = model.generate(torch.tensor([request.token_ids]), max_new_tokens=request.max_new_tokens,
                         do_sample=False, eos_token_id=EOS, pad_token_id=1)  # fmt: skip
    row = out[0, len(request.token_ids) :].tolist()
    return row[: row.index(EOS) + 1] if EOS in row else row


@pytest.mark.parametrize("family", ["llama-gqa", "opt", "bloom"])
@pytest.mark.parametrize(
    ("splits", "slots", "refill"),
    [([(0, 4)], Slots(2, 3, 1), True), ([(0, 2), (2, 4)], Slots(2, 3, 2), True),
     ([(0, 1), (1, 3), (3, 4)], Slots(3, 4, 2), False)],
    ids=["1-stage", "2-stage", "3-stage-one-batch"],
)  # fmt: skip
def test_greedy_outputs_equal_hf_generate_per_prompt(make_tiny, tmp_path, family, splits, slots,
                                                     refill):  # fmt: skip
    tiny = make_tiny(family, tmp_path / family)
    model = tiny.model.float().eval()
    requests = _requests(23)
    outputs, reports = _run(tiny.path, splits, slots, requests, refill)
    assert sorted(outputs) == sorted(r.id for r in requests)  # each request exactly once
    for r in requests:
        tokens, why = outputs[r.id]
        assert tokens == _hf(model, r), r.id
        assert why == ("stop" if tokens[-1] == EOS else "length")
        assert len(tokens) <= r.max_new_tokens
    first = reports[0]
    assert first["prompts"] == 23 and first["generated_tokens"] == sum(
        len(t) for t, _ in outputs.values()
    )
    assert all(rep["busy_s"] > 0 and rep["prefill_busy_s"] > 0 for rep in reports.values())


def test_kv_cache_stays_within_the_slots_longest_context(make_tiny, tmp_path):
    """Refilled groups cut columns no row uses: the cache never outgrows concurrency x the
    longest prompt + limit, however many requests pass through."""
    tiny = make_tiny("llama-gqa", tmp_path / "m")
    requests = _requests(60, seed=3)
    slots = Slots(2, 3, 2)
    _, reports = _run(tiny.path, [(0, 2), (2, 4)], slots, requests)
    cfg = tiny.model.config
    per_token = 2 * cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads) * 4
    longest = max(len(r.token_ids) + r.max_new_tokens for r in requests)
    bound = slots.concurrency * longest * per_token * 2  # two layers per stage
    assert all(0 < rep["kv_cache_bytes"] <= bound for rep in reports.values())


def test_sampling_does_not_depend_on_the_schedule(make_tiny, tmp_path):
    tiny = make_tiny("llama-gqa", tmp_path / "m")
    requests = _requests(12, sampling=Sampling(0.9, 0.95, seed=5))
    a, _ = _run(tiny.path, [(0, 4)], Slots(1, 2, 1), requests)
    b, _ = _run(tiny.path, [(0, 1), (1, 4)], Slots(3, 4, 2), requests, refill=False)
    assert a == b
    greedy = _run(tiny.path, [(0, 4)], Slots(1, 2, 1), _requests(12))[0]
    assert a != greedy  # it really sampled


def test_window_takes_the_oldest_and_its_nearest_lengths():
    window = Window(iter([5, 50, 6, 49, 7, 8]), size=4, length=lambda x: x)
    assert window.take(2) == [5, 6]  # the oldest (5) and the closest to it, shortest first
    assert window.buffer == [50, 49, 7, 8]  # refilled up to the window's size
    assert window.take(3) == [8, 49, 50]  # oldest now 50: 49 next, then 8 (7 is farther)
    assert window.take(5) == [7] and not window
