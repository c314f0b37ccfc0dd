"""Perplexity of a bit plan: the model quantized per layer, run as the runtime runs it.

Usage::

    from llmpq.quality import plan_perplexity

    result = plan_perplexity("results/models/default", [4, 4, 8, 16, 3, 3], method="gptq")
    result.perplexity, result.tokens_evaluated
    plan_perplexity(model_dir, [16] * 6)              # the 16-bit (bf16 on CPU) reference
    plan_perplexity(model_dir, bits, text="my.txt", stage_layers=[(0, 3), (3, 6)])

or ``llmpq ppl --model DIR (--plan plan.json | --bits B) --out F.json``. The text defaults to
the model's held-out split (``DIR/data/heldout.txt``, as the default model is saved). The model
is quantized by :func:`llmpq.quant.quantize_model` (or a saved artefact is used), its stages are
built with ``load_stage`` at the 16-bit dtype plus :func:`llmpq.quant.apply_quantized` (the
modules the runtime serves), and the text is scored in non-overlapping windows exactly as
:func:`llmpq.models.default.evaluate_perplexity` does (it is reused, through the stage chain).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from llmpq.errors import UserError
from llmpq.models.checkpoint import Checkpoint
from llmpq.models.default import evaluate_perplexity
from llmpq.models.gguf import load_import_record
from llmpq.models.spec import ModelSpec
from llmpq.models.stage import PipelineStage, StageRange, chain_forward
from llmpq.quant.apply import load_quantized_stage
from llmpq.quant.calibration import model_text_ids
from llmpq.quant.offline import check_bit_plan, quantize_model
from llmpq.quant.state import QuantizedModel

HELDOUT_TEXT = Path("data") / "heldout.txt"  # where the default model keeps its held-out split
DEFAULT_WINDOW_TOKENS = 512  # the default model's training window
MIN_EVAL_TOKENS = 64  # fewer tokens than this make a meaningless perplexity
EVAL_BATCH = 8  # windows per forward pass


@dataclass(frozen=True)
class PerplexityResult:
    """What ``llmpq ppl`` writes."""

    model: str
    text: str  # the evaluated text file
    perplexity: float
    tokens_evaluated: int  # next-token predictions scored (text tokens - 1)
    window_tokens: int
    bits_per_layer: tuple[int, ...]
    method: str  # rtn | gptq
    group_size: int  # asked for; a linear whose inputs it does not divide gets a smaller one:
    group_sizes: dict[str, int]  # the group size each linear of a layer got at 3/4 bits
    stage_layers: tuple[tuple[int, int], ...]
    quantize_seconds: float
    eval_seconds: float
    seconds: float  # both
    source_quantization: str | None = None  # an imported model's stored grid (Q4_1): the reference

    def to_dict(self) -> dict:
        data = asdict(self)
        data["bits_per_layer"] = list(self.bits_per_layer)
        data["stage_layers"] = [list(r) for r in self.stage_layers]
        return data


class _StageChain(nn.Module):
    """Stages run in order, called like an HF causal LM (what evaluate_perplexity expects)."""

    def __init__(self, stages: Sequence[PipelineStage]) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)

    def forward(self, input_ids: torch.Tensor, use_cache: bool = False) -> SimpleNamespace:
        mask = torch.ones_like(input_ids)  # [B, T]: windows are never padded
        return SimpleNamespace(logits=chain_forward(list(self.stages), input_ids, mask))


def _stage_ranges(
    stage_layers: Sequence[tuple[int, int]] | None, num_layers: int
) -> list[StageRange]:
    if stage_layers is None:
        return [StageRange.of(0, num_layers, num_layers)]
    ranges = [StageRange.of(start, end, num_layers) for start, end in stage_layers]
    covered = [i for r in ranges for i in r.layer_ids]
    if covered != list(range(num_layers)):
        raise UserError(
            "stage_layers",
            [list(r) for r in stage_layers],
            f"give contiguous [start, end) ranges covering layers 0..{num_layers - 1} in order",
            problem="do not cover the model",
        )
    return ranges


def plan_perplexity(
    model_dir: str | Path,
    bits_per_layer: Sequence[int],
    text: str | Path | None = None,
    method: str = "rtn",
    group_size: int = 128,
    *,
    stage_layers: Sequence[tuple[int, int]] | None = None,
    calib_text: str | Path | None = None,
    quantized: QuantizedModel | None = None,
    save_quantized: str | Path | None = None,
    window_tokens: int = DEFAULT_WINDOW_TOKENS,
) -> PerplexityResult:
    """Perplexity of the model with ``bits_per_layer`` on ``text``; see the module docstring.

    ``stage_layers`` splits the model into stages as a plan does (default: one stage);
    ``quantized`` evaluates a saved artefact instead of quantizing (its plan must match);
    ``save_quantized`` writes the artefact evaluated (safetensors); windows are
    ``window_tokens`` long, at most the model's positions.
    """
    start = time.perf_counter()
    model_dir = Path(model_dir)
    ckpt = Checkpoint(model_dir)
    record = load_import_record(model_dir)
    spec = ModelSpec.from_hf_config(ckpt.config_dict(), name=model_dir.name)
    bits = check_bit_plan(spec, bits_per_layer, group_size, method)
    ranges = _stage_ranges(stage_layers, spec.num_layers)
    text_path, ids = model_text_ids(
        model_dir, text, HELDOUT_TEXT, "evaluate", "--text", MIN_EVAL_TOKENS
    )
    window = min(window_tokens, spec.max_positions)
    if quantized is None:
        quantized = quantize_model(model_dir, bits, method, group_size, calib_text=calib_text)
    elif quantized.bits_per_layer != bits:
        raise UserError(
            "quantized",
            list(quantized.bits_per_layer),
            f"quantize for this plan's bits {list(bits)}",
            problem="was quantized for another bit plan",
        )
    if save_quantized is not None:
        quantized.save(save_quantized)
    quantize_done = time.perf_counter()
    stages = [load_quantized_stage(ckpt, r, quantized) for r in ranges]
    perplexity = evaluate_perplexity(_StageChain(stages), ids, window, EVAL_BATCH)
    end = time.perf_counter()
    return PerplexityResult(
        model=str(model_dir),
        text=str(text_path),
        perplexity=perplexity,
        tokens_evaluated=ids.numel() - 1,
        window_tokens=window,
        bits_per_layer=bits,
        method=quantized.method,
        group_size=quantized.group_size,
        group_sizes=spec.group_sizes(quantized.group_size),
        stage_layers=tuple((r.start, r.end) for r in ranges),
        quantize_seconds=round(quantize_done - start, 3),
        eval_seconds=round(end - quantize_done, 3),
        seconds=round(end - start, 3),
        source_quantization=record.source_quantization if record else None,
    )
