"""Stages loaded from safetensors reproduce the HF model exactly, reading only their own tensors."""

from __future__ import annotations

import re

import pytest
import torch
from safetensors.torch import load_file, save_file

from llmpq.errors import UserError
from llmpq.models.checkpoint import Checkpoint
from llmpq.models.stage import (
    StageRange,
    StepInputs,
    chain_forward,
    generate_greedy,
    load_stage,
    split_even,
    stage_from_model,
)

pytestmark = pytest.mark.usefixtures("one_thread")
NUM_STAGES = [1, 2, 3, 4]


def load_chain(path, num_layers: int, num_stages: int, **kwargs):
    return [load_stage(path, r, **kwargs) for r in split_even(num_layers, num_stages)]


def assert_logits_match(logits: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor):
    """Equal within 1e-5 at real (non-padded) positions."""
    real = mask.bool()  # [B, T]
    torch.testing.assert_close(logits[real], reference[real], atol=1e-5, rtol=0)


@pytest.mark.parametrize("num_stages", NUM_STAGES)
def test_chained_stages_give_hf_logits(tiny, num_stages):
    ids, mask = tiny.ids, tiny.mask
    stages = load_chain(tiny.path, tiny.num_layers, num_stages)
    assert_logits_match(chain_forward(stages, ids, mask), tiny.logits, mask)


def greedy(stages, tiny, **kwargs) -> torch.Tensor:
    """generate_greedy on tiny's batch, with the eos and pad ids HF generate used for it."""
    kwargs.setdefault("eos_token_id", tiny.model.generation_config.eos_token_id)
    return generate_greedy(
        stages, tiny.ids, tiny.mask, tiny.max_new_tokens, pad_token_id=tiny.pad, **kwargs
    )


@pytest.mark.parametrize("num_stages", NUM_STAGES)
def test_chained_stages_give_hf_greedy_tokens(tiny, num_stages):
    stages = load_chain(tiny.path, tiny.num_layers, num_stages)
    assert torch.equal(greedy(stages, tiny), tiny.tokens)


def test_stages_from_in_memory_model_match(tiny):
    ids, mask = tiny.ids, tiny.mask
    stages = [stage_from_model(tiny.model, r) for r in split_even(tiny.num_layers, 2)]
    model_layers = stages[0].adapter.layers_of(tiny.model)
    assert stages[1].layers[0] is model_layers[2]  # shared, not copied
    assert_logits_match(chain_forward(stages, ids, mask), tiny.logits, mask)
    assert torch.equal(greedy(stages, tiny), tiny.tokens)


def test_greedy_stops_at_eos_and_pads_like_hf(tiny):
    ids, mask = tiny.ids, tiny.mask
    eos = int(tiny.tokens[0, ids.shape[1] + 2])  # the 3rd token generated for prompt 0
    expected = tiny.model.generate(
        ids, attention_mask=mask, max_new_tokens=tiny.max_new_tokens, do_sample=False,
        eos_token_id=eos, pad_token_id=tiny.pad,
    )  # fmt: skip
    tokens = greedy(load_chain(tiny.path, tiny.num_layers, 2), tiny, eos_token_id=eos)
    assert torch.equal(tokens, expected)
    assert (tokens[0, ids.shape[1] + 3 :] == tiny.pad).all()


def test_bf16_stages_match_hf_bf16(tiny):
    ids, mask = tiny.ids, tiny.mask
    stages = load_chain(tiny.path, tiny.num_layers, 2, dtype=torch.bfloat16)
    assert {p.dtype for s in stages for p in s.parameters()} == {torch.bfloat16}
    # from_pretrained(dtype=bf16) keeps the rotary inv_freq in fp32, as load_stage does
    hf_bf16 = type(tiny.model).from_pretrained(tiny.path, dtype=torch.bfloat16)
    logits, _ = tiny.reference(hf_bf16)
    assert_logits_match(chain_forward(stages, ids, mask), logits, mask)


def layer_index(key: str) -> int | None:
    """The decoder-layer number in a stored key (``model.layers.3.x`` -> 3), else None."""
    found = re.search(r"(?:^|\.)(?:layers|h)\.(\d+)\.", key)
    return int(found.group(1)) if found else None


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """Every stored key read through Checkpoint.read during the test."""
    keys: list[str] = []
    original = Checkpoint.read

    def recording_read(self, wanted, device="cpu"):
        wanted = list(wanted)
        keys.extend(wanted)
        return original(self, wanted, device)

    monkeypatch.setattr(Checkpoint, "read", recording_read)
    return keys


def test_each_stage_reads_only_its_own_tensors(tiny, reads):
    ckpt = Checkpoint(tiny.path)
    ranges = split_even(tiny.num_layers, 4)
    read_by_stage = []
    for stage_range in ranges:
        reads.clear()
        load_stage(ckpt, stage_range)
        read_by_stage.append(set(reads))
    for stage_range, keys in zip(ranges, read_by_stage, strict=True):
        assert {layer_index(k) for k in keys} - {None} == set(stage_range.layer_ids)
        if not (stage_range.is_first or stage_range.is_last):
            assert None not in {layer_index(k) for k in keys}  # no embedding, no head
    assert set().union(*read_by_stage) == set(ckpt.keys())  # a full chain reads every tensor
    first_ends, last_ends = (
        {k for k in keys if layer_index(k) is None}
        for keys in (read_by_stage[0], read_by_stage[-1])
    )
    tied = tiny.model.config.tie_word_embeddings
    assert len(first_ends & last_ends) == int(tied)  # only the tied embedding is read twice


def test_tied_head_reads_the_embedding(tiny, reads):
    tied = tiny.model.config.tie_word_embeddings
    keys = Checkpoint(tiny.path).keys()
    assert ("lm_head.weight" in keys) != tied
    stage = load_stage(tiny.path, StageRange.of(4, 4, tiny.num_layers))
    assert ("lm_head.weight" in reads) != tied
    assert any("embed" in k for k in reads) == tied
    torch.testing.assert_close(stage.head.lm_head.weight, tiny.model.lm_head.weight)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory, make_tiny):
    return make_tiny("llama-gqa", tmp_path_factory.mktemp("sharded"), max_shard_size="20KB")


def test_sharded_checkpoint_gives_hf_outputs(sharded):
    ids, mask = sharded.ids, sharded.mask
    assert len(Checkpoint(sharded.path).files) > 4
    stages = load_chain(sharded.path, sharded.num_layers, 3)
    assert_logits_match(chain_forward(stages, ids, mask), sharded.logits, mask)
    assert torch.equal(greedy(stages, sharded), sharded.tokens)


def test_stage_opens_only_the_shards_it_needs(sharded, monkeypatch):
    import llmpq.models.checkpoint as checkpoint_module

    opened: set[str] = set()
    original = checkpoint_module.safe_open

    def recording_open(path, *args, **kwargs):
        opened.add(path.name)
        return original(path, *args, **kwargs)

    ckpt = Checkpoint(sharded.path)
    needed = {ckpt._file_of[k] for k in ckpt.keys() if layer_index(k) == 1}
    monkeypatch.setattr(checkpoint_module, "safe_open", recording_open)
    load_stage(ckpt, StageRange.of(1, 2, sharded.num_layers))
    assert opened == needed
    assert len(needed) < len(ckpt.files)


def test_bare_hub_prefixes_load(tiny, tmp_path):
    """Older hub checkpoints store ``decoder.layers.N`` / ``h.N`` without the model prefix."""
    tensors = load_file(tiny.path / "model.safetensors")
    bare = {re.sub(r"^(model\.|transformer\.)", "", k): t for k, t in tensors.items()}
    save_file(bare, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text((tiny.path / "config.json").read_text())
    ids, mask = tiny.ids, tiny.mask
    stages = load_chain(tmp_path, tiny.num_layers, 2)
    assert_logits_match(chain_forward(stages, ids, mask), tiny.logits, mask)


def test_step_inputs_positions_follow_the_padding():
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    step = StepInputs.from_mask(mask, q_len=4)
    assert step.position_ids.tolist() == [[0, 0, 0, 1], [0, 1, 2, 3]]
    decode = step.next()
    assert (decode.past_len, decode.q_len) == (4, 1)
    assert decode.position_ids.tolist() == [[2], [4]]


def test_split_even_covers_all_layers_in_order():
    ranges = split_even(5, 2)
    assert [(r.start, r.end, r.is_first, r.is_last) for r in ranges] == [
        (0, 3, True, False),
        (3, 5, False, True),
    ]
    assert [(r.start, r.end) for r in split_even(4, 4)] == [(0, 1), (1, 2), (2, 3), (3, 4)]


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: split_even(4, 5), ["5", "1 to 4"]),
        (lambda: StageRange.of(3, 2, 4), ["[3, 2)", "<= 4"]),
        (lambda: StageRange.of(0, 6, 4), ["[0, 6)", "4 layers"]),
        (lambda: StageRange(1, 4, is_first=True, is_last=True).check(4), ["is_first=True"]),
    ],
)
def test_bad_ranges_name_the_numbers(make, words):
    with pytest.raises(UserError) as error:
        make()
    assert all(word in str(error.value) for word in words)


def test_load_stage_checks_the_range_against_the_model(tiny):
    with pytest.raises(UserError, match=r"\[2, 9\)"):
        load_stage(tiny.path, StageRange(2, 9, is_first=False, is_last=True))


def test_a_cpu_decode_step_always_gets_its_mask():
    """Unpadded CPU decode takes the masked attention path the profiler times (not HF's
    enable_gqa one, 2.7x slower on CPU); an unpadded prefill keeps sdpa's is_causal skip."""
    from transformers import DynamicCache, LlamaConfig

    from llmpq.models.adapters import causal_mask

    config = LlamaConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                         num_hidden_layers=1, vocab_size=32)  # fmt: skip
    config._attn_implementation = "sdpa"
    mask = torch.ones(2, 5, dtype=torch.long)
    prefill = StepInputs.from_mask(mask, 5)
    assert causal_mask(config, torch.zeros(2, 5, 64), prefill, None, 0) is None
    cache = DynamicCache(config=config)
    cache.update(torch.zeros(2, 2, 5, 16), torch.zeros(2, 2, 5, 16), 0)  # the prompt's keys
    got = causal_mask(config, torch.zeros(2, 1, 64), prefill.next(), cache, 0)
    assert got is not None and got.shape[-2:] == (1, 6) and bool(got.all())  # sees all 6
