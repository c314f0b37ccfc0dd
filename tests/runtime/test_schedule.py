"""The schedule's micro-batches, KV-cache regrouping, sampling and failure diagnosis (no processes)."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache, LlamaConfig

from llmpq.errors import UserError
from llmpq.runtime.kvcache import cache_bytes, concat_caches, split_cache
from llmpq.runtime.launch import diagnose, torchrun_command
from llmpq.runtime.sampling import Sampling, next_tokens, top_p_probs
from llmpq.runtime.schedule import Schedule


def test_slices_are_consecutive_and_drop_empty_groups():
    s = Schedule.of(10, prefill_size=4, decode_size=4, decode_count=3, gen_len=5)
    assert s.prefill_slices == ((0, 4), (4, 8), (8, 10))
    assert s.decode_slices == ((0, 4), (4, 8), (8, 10))
    assert Schedule.of(3, 2, 4, 2, 1).decode_slices == ((0, 3),)
    with pytest.raises(UserError, match="micro_batch"):
        Schedule.of(10, 4, 3, 3, 5)


def test_caches_regroup_along_the_batch():
    config = LlamaConfig(num_hidden_layers=3, hidden_size=32, num_attention_heads=4)
    parts = []
    for b in (2, 1):
        cache = DynamicCache(config=config)
        for i in (1, 2):  # a stage holding layers 1 and 2
            cache.update(torch.randn(b, 4, 5, 8), torch.randn(b, 4, 5, 8), i)
        parts.append(cache)
    whole = concat_caches(DynamicCache(config=config), parts, range(1, 3))
    assert whole.layers[2].keys.shape == (3, 4, 5, 8)
    one, two = split_cache(
        whole, [(0, 1), (1, 3)], lambda: DynamicCache(config=config), range(1, 3)
    )
    assert torch.equal(two.layers[1].values[0], parts[0].layers[1].values[1])
    assert torch.equal(two.layers[1].keys[1], parts[1].layers[1].keys[0])
    assert two.get_seq_length(1) == 5
    assert cache_bytes(whole, range(1, 3)) == 2 * 2 * 3 * 4 * 5 * 8 * 4


def test_sampling_is_seeded_per_sequence_and_step():
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0))
    s = Sampling(temperature=1.0, top_p=0.9, seed=3)
    a = next_tokens(logits, range(4), 2, s)
    assert torch.equal(a, next_tokens(logits, range(4), 2, s))
    assert torch.equal(a[2:], next_tokens(logits[2:], range(2, 4), 2, s))  # grouping-free
    assert torch.equal(next_tokens(logits, range(4), 0, Sampling()), logits.argmax(-1))
    draws = torch.stack([next_tokens(logits, range(4), k, s) for k in range(20)])
    assert len(draws.unique()) > 4  # steps draw differently
    assert not torch.equal(draws, torch.stack(
        [next_tokens(logits, range(4), k, Sampling(1.0, 0.9, seed=4)) for k in range(20)]))  # fmt: skip
    probs = top_p_probs(torch.tensor([[0.5, 0.3, 0.15, 0.05]]), 0.7)
    assert (probs > 0).tolist() == [[True, True, False, False]]
    with pytest.raises(UserError, match="top_p"):
        Sampling(1.0, 0.0)


def test_diagnose_names_the_stage():
    plan = _plan_of_three()
    lost = {"state": "failed", "error": "lost stage 1: Connection closed", "lost_peer": 1}
    silent = {0: lost, 1: {"state": "loaded"}, 2: {"state": "terminated"}}
    assert diagnose(plan, silent, 1).startswith("stage 1 (cpu-1, layers [1, 2)) died or hung")
    timed_out = {0: {"state": "terminated"}, 1: {"state": "terminated"}, 2: lost}
    assert diagnose(plan, timed_out, 1).startswith("stage 1 (cpu-1, layers [1, 2)) died or hung")
    own = {0: lost, 1: {"state": "failed", "error": "MemoryError: x"}, 2: {"state": "done"}}
    assert "stage 1 (cpu-1, layers [1, 2)) failed: MemoryError" in diagnose(plan, own, 1)


def _plan_of_three():
    from llmpq.models.spec import ModelSpec
    from llmpq.plan import MicroBatch, Plan, Stage
    from llmpq.workload import Workload

    spec = ModelSpec.from_hf_config(
        LlamaConfig(num_hidden_layers=3, hidden_size=32, num_attention_heads=4).to_dict()
    )
    stages = tuple(Stage(f"cpu-{i}", "cpu", (i, i + 1), (16,)) for i in range(3))
    return Plan("m", spec, Workload(2, 4, 4), "manual", stages, MicroBatch(1, 1, 2))


def test_torchrun_command_standalone_or_passed_through(tmp_path):
    cmd = torchrun_command(3, tmp_path)
    assert cmd[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "3"]
    cmd = torchrun_command(4, tmp_path, ["--nnodes", "2", "--node-rank", "1"])
    assert "--standalone" not in cmd and cmd[cmd.index("--nproc-per-node") + 1] == "2"
    assert cmd[-3:] == ["-m", "llmpq.runtime.worker", str(tmp_path)]
