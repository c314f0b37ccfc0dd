"""Measure per-layer latency on a local device (a CPU worker or a CUDA GPU) -> a cost table.

Usage::

    from llmpq.profiler import profile_model, default_grid, ProfileGrid

    table = profile_model("results/models/default", device="cpu")      # default grid, ~1-3 min
    save_cost_table(table, "results/costs/cpu/default.nc")
    grid = ProfileGrid(bits=(4, 16), batch=(1, 2), seq=(8, 16), repeats=3)   # a tiny sweep
    table = profile_model("opt-1.3b", device="cuda", grid=grid)          # a shape: random weights

or ``llmpq profile --model M --device cpu --out F.nc``.

What is timed, per bitwidth, on a stack of the model's first ``stack_layers`` decoder layers
(all of them for small models) RTN-quantized to that width with the real quantized modules
(:func:`llmpq.quant.quantize_stage`) and 16-bit activations (bf16 on CPU, fp16 on CUDA):

* prefill: ``batch`` sequences of ``seq`` tokens through every layer of the stack with an empty
  KV cache; decode: one new token per sequence against a cache already holding ``seq`` tokens
  (the cache is cropped back after each step, so every repeat sees the same context). The
  stack's time is divided by its depth: one layer's latency, as layers follow one another in a
  stage. The first sequence has one left-padding token, so masks are materialised as with real
  left-padded prompts.
* ``stage_ms``: the stage's per-step inputs (masks, rotary or ALiBi tables), computed once per
  stage; ``embed_ms`` and ``head_ms``: the embeddings and the final norm + LM head on the last
  position (16-bit, independent of bits).

The grid is swept ``rounds`` times, every bitwidth in each round (one bitwidth after another
when their stacks together exceed ``INTERLEAVE_LIMIT_BYTES``), so the samples of one point are
taken at different moments and a burst of load or a slow drift elsewhere spoils few of them. In each round a point runs
``warmup`` untimed calls, then at least ``repeats`` timed ones, continuing while less than
``min_seconds`` has been timed (up to ``max_repeats``); the table holds the median of all its
samples. CPU timing uses one thread by default (a worker's one-core share). Shapes not on the
grid come from the fitted model (:mod:`llmpq.costmodel.latency`).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from llmpq import __version__
from llmpq.costmodel.tables import PART_VARIABLES, PHASES, build_cost_table
from llmpq.devices import CATALOG, LOCAL_CPU
from llmpq.errors import UserError
from llmpq.models.checkpoint import Checkpoint
from llmpq.models.spec import SUPPORTED_BITS, ModelSpec, model_spec
from llmpq.models.stage import PipelineStage, StageRange, StepInputs, load_stage, stage_from_model

DEFAULT_STACK_LAYERS = 8  # deeper models are timed on their first 8 layers
INTERLEAVE_LIMIT_BYTES = 2 * 1024**3  # keep every bitwidth's stack loaded up to this much


@dataclass(frozen=True)
class ProfileGrid:
    """The sweep: bitwidths × batch sizes × sequence lengths (both phases), and the repeats."""

    bits: tuple[int, ...] = SUPPORTED_BITS
    batch: tuple[int, ...] = (1, 2, 4, 8, 16)
    seq: tuple[int, ...] = (16, 32, 64, 128, 256)
    warmup: int = 1  # untimed calls before each point's samples (every round)
    repeats: int = 3  # timed calls per point and round, at least ...
    min_seconds: float = 0.02  # ... and more until this much was timed ...
    max_repeats: int = 20  # ... but not beyond this many
    rounds: int = 3  # sweeps over the grid, interleaved; the median pools them

    def __post_init__(self) -> None:
        for name in ("bits", "batch", "seq"):
            values = tuple(getattr(self, name))
            if not values or any(isinstance(v, bool) or int(v) != v or v <= 0 for v in values):
                raise UserError(f"grid.{name}", list(values), "give positive integers")
            object.__setattr__(self, name, tuple(sorted(set(int(v) for v in values))))
        for b in self.bits:
            if b not in SUPPORTED_BITS:
                raise UserError("grid.bits", b, f"choose from {list(SUPPORTED_BITS)}")
        if (
            self.repeats < 1 or self.warmup < 0 or self.max_repeats < self.repeats
            or self.rounds < 1
        ):  # fmt: skip
            raise UserError(
                "grid.repeats", self.repeats,
                "use repeats >= 1, warmup >= 0, max_repeats >= repeats, rounds >= 1",
            )  # fmt: skip

    @property
    def points(self) -> int:
        return len(self.bits) * len(self.batch) * len(self.seq)

    def to_dict(self) -> dict:
        return asdict(self)


def default_grid(device: str = "cpu") -> ProfileGrid:
    """CPU: batch 1-16, seq 16-256 (the cpu_small workload: batch 8, prompt 64, context <= 96,
    and beyond); CUDA: batch 1-32, seq 128-2048 (the paper's workloads: prompt 512, +100)."""
    if torch.device(device).type == "cuda":
        return ProfileGrid(batch=(1, 2, 4, 8, 16, 32), seq=(128, 256, 512, 1024, 2048))
    return ProfileGrid()


def local_device_type(device: str) -> str:
    """The catalog name of a local device: ``cpu``, or the CUDA GPU's type from its name."""
    dev = torch.device(device)
    if dev.type == "cpu":
        return LOCAL_CPU
    if dev.type != "cuda" or not torch.cuda.is_available():
        raise UserError("--device", device, "use cpu, or cuda[:i] on a machine with a CUDA GPU")
    props = torch.cuda.get_device_properties(dev)
    name, gib = props.name.upper(), props.total_memory / 1024**3
    guesses = [
        ("L40", ""),  # not in the catalog; must not pass for an L4
        ("H100", "H100-PCIe" if "PCIE" in name else "H100-SXM"),
        ("A800", "A800-80G"),
        ("A100", "A100-80G" if gib > 48 else "A100-40G"),
        ("V100", "V100-32G" if gib > 20 else "V100-16G"),
        ("P100", "P100-16G" if gib > 13 else "P100-12G"),
        ("A10", "A10"),
        ("L4", "L4"),
        ("T4", "T4"),
    ]
    for key, type_name in guesses:
        if key in name:
            if type_name not in CATALOG:
                break
            return type_name
    raise UserError(
        "--device", f"{device} ({props.name})", "name its type with --device-type",
        problem="is not a catalog GPU",
    )  # fmt: skip


def device_name(device: str) -> str:
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ----------------------------------------------------------------------------- model parts


@dataclass(frozen=True, eq=False)
class _Source:
    """Where layers come from: a local checkpoint, or random weights of a shape."""

    spec: ModelSpec
    checkpoint: Checkpoint | None
    device: torch.device
    dtype: torch.dtype
    stack_layers: int

    def stage(self, stage_range: StageRange) -> PipelineStage:
        """A stage of the model (``stage_range`` over ``stack_layers`` layers for a shape)."""
        if self.checkpoint is not None:
            return load_stage(self.checkpoint, stage_range, self.dtype, self.device)
        return stage_from_model(self._random_model(), stage_range).eval()

    def _random_model(self):
        from transformers import AutoConfig, AutoModelForCausalLM

        config_dict = self.spec.to_hf_config_dict()
        config = AutoConfig.for_model(config_dict.pop("model_type"), **config_dict)
        config.num_hidden_layers = self.stack_layers
        torch.manual_seed(0)
        with torch.device(self.device):
            model = AutoModelForCausalLM.from_config(config, dtype=self.dtype)
        return model.eval()

    def layer_range(self) -> StageRange:
        return StageRange.of(0, self.stack_layers, self.total_layers())

    def total_layers(self) -> int:
        return self.spec.num_layers if self.checkpoint is not None else self.stack_layers


def _source(model: str | Path, device: torch.device, stack_layers: int | None) -> _Source:
    from llmpq.quant import sixteen_bit_dtype

    spec = model_spec(model)
    checkpoint = Checkpoint(Path(model)) if Path(model).is_dir() else None
    depth = min(spec.num_layers, stack_layers or DEFAULT_STACK_LAYERS)
    return _Source(spec, checkpoint, device, sixteen_bit_dtype(device), depth)


def _quantized_stack(src: _Source, bits: int, group_size: int) -> PipelineStage:
    from llmpq.quant import pack_dense_linears, quantize_stage

    stage = src.stage(src.layer_range())
    plan = [bits] * src.stack_layers + [16] * (src.total_layers() - src.stack_layers)
    stage = quantize_stage(stage, plan, group_size) if bits != 16 else stage
    return pack_dense_linears(stage)  # 16-bit linears in the runtime's kernel layout


# ----------------------------------------------------------------------------- timing


CLOCKS = ("wall", "cpu")


@dataclass(frozen=True)
class _Timer:
    """Timing of a callable on one device (CUDA: synchronised); samples in ms.

    ``clock="cpu"`` reads the calling thread's CPU time instead of the wall clock: with one
    thread on a machine others are using, it leaves out the time the thread waits for a core.
    """

    device: torch.device
    grid: ProfileGrid
    clock: str = "wall"

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def samples_ms(self, setup: Callable[[], object], run: Callable[[object], object]) -> list:
        """Times of ``run(setup())``; ``setup`` is untimed (e.g. cropping a cache)."""
        now = time.thread_time if self.clock == "cpu" else time.perf_counter
        for _ in range(self.grid.warmup):
            run(setup())
        times: list[float] = []
        while len(times) < self.grid.repeats or (
            sum(times) < self.grid.min_seconds * 1e3 and len(times) < self.grid.max_repeats
        ):
            arg = setup()
            self._sync()
            start = now()
            run(arg)
            self._sync()
            times.append((now() - start) * 1e3)
        return times


def _padded_step(batch: int, seq: int, device: torch.device) -> StepInputs:
    """The prefill step of ``batch`` sequences of ``seq`` tokens, the first left-padded by one."""
    mask = torch.ones(batch, seq, dtype=torch.long, device=device)
    if seq > 1:
        mask[0, 0] = 0
    return StepInputs.from_mask(mask, seq)


@dataclass(frozen=True, eq=False)
class _StackRunner:
    """Runs the layers of a stack on hidden states with a cache, timing layers and extras."""

    stage: PipelineStage
    timer: _Timer

    def _layers(self, hidden: torch.Tensor, kwargs: list) -> torch.Tensor:
        run_layer = self.stage.adapter.run_layer
        for layer, layer_kwargs in zip(self.stage.layers, kwargs, strict=True):
            hidden = run_layer(layer, hidden, layer_kwargs)
        return hidden

    def _extras(self, hidden: torch.Tensor, step: StepInputs, cache) -> list:
        return self.stage.extras(hidden, step, cache, self.stage.stage_range.layer_ids)

    def point(self, batch: int, seq: int) -> dict[str, list[float]]:
        """layer and stage ms samples of prefill (batch × seq) and decode (batch, context seq)."""
        stage, timer, depth = self.stage, self.timer, len(self.stage.layers)
        device, dtype = timer.device, next(stage.layers.parameters()).dtype
        hidden_size = stage.config.hidden_size
        step = _padded_step(batch, seq, device)
        x = torch.randn(batch, seq, hidden_size, dtype=dtype, device=device)
        holder: dict = {}

        def prefill_setup():
            holder["cache"] = stage.new_cache()
            return self._extras(x, step, holder["cache"])

        out: dict[str, list[float]] = {}
        out["prefill_stage"] = timer.samples_ms(
            stage.new_cache, lambda cache: self._extras(x, step, cache)
        )
        times = timer.samples_ms(prefill_setup, lambda kw: self._layers(x, kw))
        out["prefill_layer"] = [t / depth for t in times]
        cache = holder["cache"]  # holds seq tokens per layer
        dstep = step.next()
        xd = torch.randn(batch, 1, hidden_size, dtype=dtype, device=device)

        def decode_setup():
            if cache.get_seq_length(stage.stage_range.start) > seq:
                cache.crop(-1)  # back to seq cached tokens
            return self._extras(xd, dstep, cache)

        out["decode_stage"] = timer.samples_ms(lambda: cache, lambda c: self._extras(xd, dstep, c))
        times = timer.samples_ms(decode_setup, lambda kw: self._layers(xd, kw))
        out["decode_layer"] = [t / depth for t in times]
        return out


def _time_parts(src: _Source, timer: _Timer, batch: int, seq: int, parts) -> dict[str, list]:
    """embed and head ms for prefill (batch × seq) and decode (one token per sequence)."""
    embed, head = parts
    out = {}
    for phase, q in (("prefill", seq), ("decode", 1)):
        step = _padded_step(batch, q, src.device)
        ids = torch.randint(3, src.spec.vocab_size, (batch, q), device=src.device)
        hidden = torch.randn(batch, q, src.spec.hidden_size, dtype=src.dtype, device=src.device)
        out[f"{phase}_embed"] = timer.samples_ms(
            lambda ids=ids: ids, lambda i, step=step: embed.embed(i, step)
        )
        out[f"{phase}_head"] = timer.samples_ms(
            lambda hidden=hidden: hidden, lambda h: head.head(h[:, -1:])
        )
    return out


@contextmanager
def _threads(threads: int | None) -> Iterator[int]:
    before = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise UserError("--threads", threads, "use a positive number of CPU threads")
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


@dataclass
class _Samples:
    """Timing samples per table cell, pooled over rounds (the one mutable helper, local to a run)."""

    cells: dict

    def add(self, key: tuple, times: list[float]) -> None:
        self.cells.setdefault(key, []).extend(times)

    def medians(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        out = np.full(shape, np.nan)
        for key, times in self.cells.items():
            if key[0] == name:
                out[key[1:]] = statistics.median(times)
        return out


def _sweep_parts(src, timer, grid, points, samples: _Samples, bar) -> None:
    from llmpq.quant import pack_dense_linears

    layers_total = src.total_layers()
    embed = src.stage(StageRange.of(0, 0, layers_total))
    head = pack_dense_linears(src.stage(StageRange.of(layers_total, layers_total, layers_total)))
    for _ in range(grid.rounds):
        for i, (b, s) in enumerate(points):
            got = _time_parts(src, timer, b, s, (embed, head))
            bi, si = divmod(i, len(grid.seq))
            for p, phase in enumerate(PHASES):
                samples.add(("embed_ms", p, bi, si), got[f"{phase}_embed"])
                samples.add(("head_ms", p, bi, si), got[f"{phase}_head"])
            bar.update(1)


def _sweep_order(src: _Source, grid: ProfileGrid) -> list[tuple[int, int]]:
    """(round, bits index) in sweep order: rounds outermost, every bitwidth in each, when all
    the stacks fit in ``INTERLEAVE_LIMIT_BYTES`` (so slow drift in the machine's speed hits every
    bitwidth alike); otherwise one bitwidth at a time."""
    stacks = sum(src.spec.layer_weight_bytes(b) for b in grid.bits) * src.stack_layers
    pairs = [(r, k) for r in range(grid.rounds) for k in range(len(grid.bits))]
    return pairs if stacks <= INTERLEAVE_LIMIT_BYTES else sorted(pairs, key=lambda rk: rk[::-1])


def _sweep_layers(src, timer, grid, points, samples: _Samples, bar, group_size: int) -> None:
    order = _sweep_order(src, grid)
    interleaved = len(order) > 1 and order[1][1] != order[0][1]
    runners: dict[int, _StackRunner] = {}  # every stack when interleaved, else the current one
    for _, k in order:
        if k not in runners:
            if not interleaved:
                runners.clear()
            runners[k] = _StackRunner(_quantized_stack(src, grid.bits[k], group_size), timer)
        for i, (b, s) in enumerate(points):
            got = runners[k].point(b, s)
            bi, si = divmod(i, len(grid.seq))
            for p, phase in enumerate(PHASES):
                samples.add(("layer_ms", k, p, bi, si), got[f"{phase}_layer"])
                if k == 0:  # the stage's extras do not depend on bits
                    samples.add(("stage_ms", p, bi, si), got[f"{phase}_stage"])
            bar.update(1)


@torch.no_grad()
def profile_model(
    model: str | Path,
    device: str = "cpu",
    grid: ProfileGrid | None = None,
    *,
    device_type: str | None = None,
    threads: int | None = 1,
    stack_layers: int | None = None,
    group_size: int = 128,
    clock: str = "wall",
    progress: bool = True,
) -> xr.Dataset:
    """Time ``model`` (a checkpoint directory or a shape name) on ``device``: a cost table.

    ``threads``: torch CPU threads while timing (default 1: a CPU worker's one-core share, as
    in ``config/clusters/cpu_hetero.yaml``; None keeps torch's setting). ``clock``: ``wall``,
    or ``cpu`` (the thread's CPU time; one thread only).
    """
    started = time.perf_counter()
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device", device, "use cpu: this machine has no CUDA GPU")
    if clock not in CLOCKS:
        raise UserError("--clock", clock, f"use one of {list(CLOCKS)}")
    type_name = device_type or local_device_type(device)
    grid = grid or default_grid(device)
    src = _source(model, dev, stack_layers)
    points = [(b, s) for b in grid.batch for s in grid.seq]
    samples = _Samples({})
    with _threads(threads) as used_threads, tqdm(
        total=grid.rounds * (grid.points + len(points)), disable=not progress, unit="pt",
        desc=f"profile {src.spec.name} on {type_name}",
    ) as bar:  # fmt: skip
        if clock == "cpu" and (used_threads > 1 or dev.type == "cuda"):
            raise UserError("--clock", clock, "use it with --threads 1 on a CPU, or use wall")
        timer = _Timer(dev, grid, clock)
        _sweep_parts(src, timer, grid, points, samples, bar)
        _sweep_layers(src, timer, grid, points, samples, bar, group_size)
    shape = (len(PHASES), len(grid.batch), len(grid.seq))
    layer_ms = samples.medians("layer_ms", (len(grid.bits), *shape))
    parts_ms = {name: samples.medians(name, shape) for name in PART_VARIABLES}
    attrs = {
        "device_name": device_name(device),
        "torch_version": str(torch.__version__),
        "llmpq_version": __version__,
        "threads": used_threads,
        "clock": clock,
        "warmup": grid.warmup,
        "repeats": grid.repeats,
        "rounds": grid.rounds,
        "min_seconds": grid.min_seconds,
        "max_repeats": grid.max_repeats,
        "stack_layers": src.stack_layers,
        "weights": "checkpoint" if src.checkpoint is not None else "random (shape only)",
        "quantizer": f"rtn, group_size {group_size}",
        "activation_dtype": str(src.dtype).removeprefix("torch."),
        "statistic": "median of the samples of every round",
        "padding": "first sequence left-padded by one token",
        "profile_seconds": round(time.perf_counter() - started, 2),
        "hostname": platform.node(),
        "cpu_count": os.cpu_count() or 0,
        "profile_grid": json.dumps(grid.to_dict()),
    }
    return build_cost_table(
        layer_ms, parts_ms, bits=grid.bits, batch=grid.batch, seq=grid.seq, spec=src.spec,
        device_type=type_name, source="measured", attrs=attrs,
    )  # fmt: skip
