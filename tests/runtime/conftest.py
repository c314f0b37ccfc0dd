"""Shared by the runtime tests: hand-written plans for a checkpoint, prompts from token ids.

* ``make_plan(model_dir, splits, micro_batch, bits=16, batch_size=3, gen_len=8)``: a plan with
  one stage per ``[start, end)`` in ``splits`` on devices ``cpu-0``, ``cpu-1``, ...
* ``id_prompts(ids, mask)``: prompts carrying the unpadded token ids of a left-padded batch.
* ``JOIN_s``, ``FAIL_WITHIN_s``, ``HANG_DETECT_s``: the waits of the process tests (below).
* ``assert_hf_up_to_ties(model_dir, prompt_ids, got, want)``: served greedy tokens equal HF's
  but where bf16 breaks a near-tie the other way.
* ``generated(hf_tokens, prompt_len, eos_ids)``: HF ``generate`` rows cut as ``serve`` writes
  them (generated tokens only, up to and including the first end-of-sequence token).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from llmpq.models.checkpoint import Checkpoint
from llmpq.models.spec import ModelSpec
from llmpq.plan import MicroBatch, Plan, Stage
from llmpq.runtime import Prompt
from llmpq.workload import Workload

# A node joins the rendezvous within seconds here (its launcher's imports); the tests let it wait
# 180 s, so a slow or busy machine (emulated bf16, both cores taken) never misses it. The tests
# of a node that never joins set their own short wait: that wait is what they test.
JOIN_s = 180
# A run with a dead or hung stage must end, not hang: within this bound, generous for the
# stages' starts on a busy CPU (a hang would sit out the 600 s load timeout).
FAIL_WITHIN_s = 180
# A stage is declared hung when its neighbour hears nothing for this long. Once the stages have
# loaded and met (a barrier), a tiny model's stage sends every few milliseconds here: 5 s is
# over 100x that, and it is how long the hang tests wait.
HANG_DETECT_s = 5


def make_plan(
    model_dir: Path, splits: Sequence[tuple[int, int]], micro_batch: tuple[int, int, int],
    bits: int | Sequence[int] = 16, batch_size: int = 3, prompt_len: int = 7, gen_len: int = 8,
) -> Plan:  # fmt: skip
    spec = ModelSpec.from_hf_config(Checkpoint(model_dir).config_dict(), name=model_dir.name)
    per_layer = [bits] * spec.num_layers if isinstance(bits, int) else list(bits)
    stages = tuple(
        Stage(f"cpu-{i}", "cpu", (s, e), tuple(per_layer[s:e])) for i, (s, e) in enumerate(splits)
    )
    workload = Workload(batch_size, prompt_len, gen_len)
    return Plan(model_dir.name, spec, workload, "manual", stages, MicroBatch(*micro_batch))


def id_prompts(ids: torch.Tensor, mask: torch.Tensor) -> list[Prompt]:
    return [
        Prompt(str(i), "", tuple(row[m.bool()].tolist()))
        for i, (row, m) in enumerate(zip(ids, mask, strict=True))
    ]


def generated(hf_tokens: torch.Tensor, prompt_len: int, eos_ids: Sequence[int]) -> list[list[int]]:
    rows = []
    for row in hf_tokens[:, prompt_len:].tolist():
        ends = [i for i, t in enumerate(row) if t in eos_ids]
        rows.append(row[: ends[0] + 1] if ends else row)
    return rows


@pytest.fixture(scope="session")
def tiny_families(tmp_path_factory, make_tiny) -> dict:
    """OPT, BLOOM and LLaMA-GQA tiny models with HF greedy references of their bf16 copies."""
    out = {}
    for name in ("opt", "bloom", "llama-gqa"):
        tiny = make_tiny(name, tmp_path_factory.mktemp(name))
        _, tokens = tiny.reference(tiny.model.to(torch.bfloat16))  # 16-bit on CPU is bf16
        out[name] = (tiny, tokens)
    return out


def assert_hf_up_to_ties(
    model_dir: Path, prompts: dict[str, list[int]], got: dict[str, list[int]], want: dict
) -> None:
    """``got`` equals HF's greedy ``want`` per request, but where bf16 breaks a near-tie the
    other way: batched and single-row bf16 matmuls round differently (seen on AVX512-BF16
    CPUs, and with the emulated bf16 of CPUs without it), so at the first differing token both
    tokens must be HF's top two with logits within bf16's resolution of each other. (The fp32 schedule tests in test_continuous are exact.)"""
    from transformers import AutoModelForCausalLM

    assert sorted(got) == sorted(want)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).eval()
    differing = [k for k in want if got[k] != want[k]]
    assert len(differing) <= max(1, len(want) // 4), differing  # ties are rare
    for k in differing:
        i = next(i for i, (a, b) in enumerate(zip(got[k], want[k], strict=False)) if a != b)
        with torch.no_grad():
            logits = model(torch.tensor([prompts[k] + want[k][:i]])).logits[0, -1].float()
        top = torch.topk(logits, 2)
        assert {got[k][i], want[k][i]} == set(top.indices.tolist()), (k, i)
        assert float(top.values[0] - top.values[1]) <= 0.02 * float(top.values[0].abs()) + 0.05, (
            k, i, top.values.tolist())  # fmt: skip
