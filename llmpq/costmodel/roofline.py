"""Roofline cost tables for device types nobody here has: datasheet peaks × efficiency factors.

Usage::

    from llmpq.costmodel.roofline import roofline_table, calibrate_efficiency, DEFAULT_EFFICIENCY

    table = roofline_table(spec, device_type("T4"))                  # source = "roofline"
    factors = calibrate_efficiency(measured_table, device_type("cpu"))   # from any measured device
    table = roofline_table(spec, device_type("A100-40G"), factors)

or ``llmpq roofline --model M --device-type T4 --out F.nc [--calibrate measured.nc]``.

Each entry is the form of :mod:`llmpq.costmodel.latency` with its terms written from the
device's peak memory bandwidth ``BW`` and 16-bit FLOP/s ``P`` (weight-only quantization
computes in 16 bits) reached at fractions ``η_bw``, ``η_c`` that depend on phase and bits::

    layer = floor + max(W / (BW·η_bw), F / (P·η_c)) + n · act_bytes / (BW·η_bw) + attention
    attention = prefill: 2·batch·s²·heads·head_dim / (P·η_c)   (causal half of QKᵀ and AV)
                decode:  batch·(ctx+1)·kv_bytes_per_token_per_layer / (BW·η_bw)   (read the cache)

``act_bytes`` per token is the activation traffic outside the matmuls' weights (each linear's
input and output, norms, residuals, rotary, the MLP's elementwise ops; 16-bit). Pre/post:
``embed`` moves n·4·hidden bytes, ``head`` is one matmul (V·H weights, 16-bit) on the last
positions, ``stage`` builds masks and position tables; each has the part floor.

Default efficiency factors (``DEFAULT_EFFICIENCY``), and where they come from:

* decode, 16 bits: η_bw 0.75 — memory-bound GEMV/skinny GEMM in cuBLAS reaches about 70-85% of
  peak DRAM bandwidth (assumption consistent with vendor STREAM-like figures);
* decode, 8/4/3 bits: η_bw 0.55 / 0.45 / 0.35 — `peers.md` §(e.4): single-stream 4-bit decode
  with Marlin/BitBLAS reaches 39-53% of the weights roofline on A100; 8 bits sits between 16 and
  4, and 3 bits (dequantized on the fly, no dedicated kernel) below 4 (assumptions);
* prefill, 16 bits: η_c 0.60 — cuBLAS on LLM-sized GEMMs reaches about 50-75% of the dense
  tensor peak; 8/4/3 bits: 0.45 / 0.45 / 0.30 — dequantization inside or before the GEMM
  (spec §12.6: 2023 kernels lost much of prefill at 3/4 bits; Marlin-class recovers most);
* η_c in decode and η_bw in prefill take the same values (rarely the binding term);
* floors: 0.08 ms per decoder layer (eager PyTorch launches ~15-25 kernels per layer at ~4-5 µs
  each) and 0.02 ms per pre/post part (assumptions).

They are starting points: :func:`calibrate_efficiency` replaces them with the factors a
measured table implies (decode fits give η_bw, prefill fits η_c, against that device's own
peaks), and a measured table of a type overrides its roofline table altogether.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

import numpy as np
import xarray as xr
from scipy.optimize import nnls

from llmpq.costmodel.latency import LatencyModel, layer_features, part_features
from llmpq.costmodel.tables import PART_VARIABLES, PHASES, build_cost_table
from llmpq.devices import DeviceType
from llmpq.models.spec import BYTES_16BIT, SUPPORTED_BITS, ModelSpec

EFFICIENCY_RANGE = (0.01, 2.0)  # calibrated factors are clipped to this
DEFAULT_BATCH = (1, 2, 4, 8, 16, 32, 64)
DEFAULT_SEQ = (128, 256, 512, 1024, 2048)


@dataclass(frozen=True)
class Efficiency:
    """Fractions of a device's peaks one kernel class reaches."""

    bandwidth: float  # of peak memory bandwidth
    compute: float  # of peak 16-bit FLOP/s


@dataclass(frozen=True)
class EfficiencyFactors:
    """η per (phase, bits), and the fixed floors."""

    factors: Mapping[tuple[str, int], Efficiency]
    layer_floor_ms: float = 0.08
    part_floor_ms: float = 0.02
    source: str = "defaults: llmpq.costmodel.roofline docstring (peers.md e.4, assumptions)"

    def __post_init__(self) -> None:
        object.__setattr__(self, "factors", MappingProxyType(dict(self.factors)))

    def of(self, phase: str, bits: int) -> Efficiency:
        return self.factors[(phase, int(bits))]

    def to_json(self) -> str:
        return json.dumps(
            {
                "factors": {
                    f"{phase}/{bits}": [e.bandwidth, e.compute]
                    for (phase, bits), e in sorted(self.factors.items())
                },
                "layer_floor_ms": self.layer_floor_ms,
                "part_floor_ms": self.part_floor_ms,
                "source": self.source,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> EfficiencyFactors:
        data = json.loads(text)
        factors = {}
        for key, (bw, compute) in data["factors"].items():
            phase, bits = key.split("/")
            factors[(phase, int(bits))] = Efficiency(bw, compute)
        return cls(factors, data["layer_floor_ms"], data["part_floor_ms"], data["source"])


def _defaults() -> EfficiencyFactors:
    bandwidth = {16: 0.75, 8: 0.55, 4: 0.45, 3: 0.35}
    compute = {16: 0.60, 8: 0.45, 4: 0.45, 3: 0.30}
    return EfficiencyFactors(
        {(p, b): Efficiency(bandwidth[b], compute[b]) for p in PHASES for b in SUPPORTED_BITS}
    )


DEFAULT_EFFICIENCY = _defaults()


def activation_bytes_per_token(spec: ModelSpec) -> int:
    """16-bit activation traffic of one layer per token outside the weights: each linear's
    input and output, two norms and two residual adds (read + write), rotary on q and k, and
    the MLP's elementwise ops (activation, gating)."""
    linears = sum(lin.in_features + lin.out_features for lin in spec.layer_linears())
    h, f = spec.hidden_size, spec.ffn_dim
    hq, hkv = spec.num_heads * spec.head_dim, spec.num_kv_heads * spec.head_dim
    rotary = 2 * (hq + hkv) if spec.family == "llama" else 0
    return BYTES_16BIT * (linears + 4 * h + 6 * h + rotary + 3 * f)


def _per_ms(per_second: float) -> float:
    return 1e3 / per_second  # ms per unit


def _layer_ms(spec, dt, eff: EfficiencyFactors, bits, phase, batch, seq) -> np.ndarray:
    e = eff.of(phase, bits)
    bw, flops = dt.bandwidth_GBps * 1e9 * e.bandwidth, dt.fp16_TFLOPS * 1e12 * e.compute
    f = layer_features(spec, bits, phase, batch, seq)
    hq = spec.num_heads * spec.head_dim
    if phase == "prefill":
        per_attention = 2 * hq * _per_ms(flops)
    else:
        per_attention = spec.layer_kv_bytes_per_token() * _per_ms(bw)
    roof = np.maximum(f.weight_bytes * _per_ms(bw), f.flops * _per_ms(flops))
    per_token = activation_bytes_per_token(spec) * _per_ms(bw)
    return eff.layer_floor_ms + roof + per_token * f.tokens + per_attention * f.attention


def _part_ms(spec, dt, eff: EfficiencyFactors, part, phase, batch, seq) -> np.ndarray:
    e = eff.of(phase, 16)
    bw, flops = dt.bandwidth_GBps * 1e9 * e.bandwidth, dt.fp16_TFLOPS * 1e12 * e.compute
    f = part_features(spec, part, phase, batch, seq)
    per_token = {
        "embed": 4 * spec.hidden_size * BYTES_16BIT,  # gather: read and write one row
        "head": 4 * spec.hidden_size * BYTES_16BIT,  # final norm of the last position
        "stage": 4 * spec.head_dim * BYTES_16BIT,  # rotary cos/sin (or positions) per token
    }[part]
    roof = np.maximum(f.weight_bytes * _per_ms(bw), f.flops * _per_ms(flops))
    mask = f.attention * _per_ms(bw)  # one byte per (query, key) of the 4-D mask
    return eff.part_floor_ms + roof + per_token * f.tokens * _per_ms(bw) + mask


def roofline_table(
    spec: ModelSpec,
    device_type: DeviceType,
    efficiency: EfficiencyFactors = DEFAULT_EFFICIENCY,
    *,
    bits: tuple[int, ...] | None = None,
    batch: tuple[int, ...] = DEFAULT_BATCH,
    seq: tuple[int, ...] = DEFAULT_SEQ,
) -> xr.Dataset:
    """A cost table for ``spec`` on ``device_type`` from its peaks (``source = roofline``)."""
    bits = tuple(sorted(bits or device_type.bits))
    b, s = np.meshgrid(np.asarray(batch), np.asarray(seq), indexing="ij")
    layer = np.stack(
        [
            np.stack([_layer_ms(spec, device_type, efficiency, k, p, b, s) for p in PHASES])
            for k in bits
        ]
    )
    parts = {
        name: np.stack(
            [_part_ms(spec, device_type, efficiency, name.removesuffix("_ms"), p, b, s)
             for p in PHASES]
        )
        for name in PART_VARIABLES
    }  # fmt: skip
    attrs = {
        "device_name": f"{device_type.name} (datasheet)",
        "bandwidth_GBps": device_type.bandwidth_GBps,
        "fp16_TFLOPS": device_type.fp16_TFLOPS,
        "efficiency": efficiency.to_json(),
        "efficiency_source": efficiency.source,
    }
    return build_cost_table(
        layer, parts, bits=bits, batch=batch, seq=seq, spec=spec, device_type=device_type.name,
        source="roofline", attrs=attrs,
    )  # fmt: skip


def _clip(value: float) -> float:
    return float(np.clip(value, *EFFICIENCY_RANGE))


def _shared_floor_ms(weights: np.ndarray, constant_ms: np.ndarray, fallback: float) -> float:
    """Intercept of ``constant ≈ floor + W·k`` across bitwidths (non-negative), the software
    floor a single bitwidth's fit cannot tell apart from weight streaming."""
    if len(weights) < 2:
        return fallback
    (floor, _), _ = nnls(np.column_stack([np.ones_like(weights), weights]), constant_ms)
    return float(floor)


def calibrate_efficiency(
    measured: xr.Dataset,
    device_type: DeviceType,
    base: EfficiencyFactors = DEFAULT_EFFICIENCY,
) -> EfficiencyFactors:
    """The factors a measured table implies against ``device_type``'s own peaks.

    * η_bw from decode: the fitted latency of one sequence at an empty context is a floor plus
      the weight read; the floor (shared by all bitwidths) is the intercept of that latency
      against the layer's weight bytes, and η_bw(bits) = W / (BW · (latency − floor)).
    * η_c from prefill: the marginal cost of a token at the largest grid point, taken as matmul
      work, gives effective FLOP/s (slightly pessimistic: elementwise work is lumped in).

    Bits the table lacks, and points where the fit leaves nothing to attribute, keep ``base``'s
    factors. Floors are not transferred: they belong to the measured device's software stack.
    Factors are clipped to ``EFFICIENCY_RANGE``.
    """
    model = LatencyModel.from_table(measured)
    spec = model.spec
    bits = [b for b in model.bits if (b, "decode") in model.layer_fits]
    weights = np.array([float(spec.layer_weight_bytes(b)) for b in bits])
    constant = np.array(
        [model.layer_ms(b, "decode", 1, 0) - model.layer_fits[(b, "decode")].ms_per_attention
         for b in bits]
    )  # fmt: skip
    floor = _shared_floor_ms(weights, constant, base.layer_floor_ms)
    factors = dict(base.factors)
    for b, w, c in zip(bits, weights, constant, strict=True):
        if c > floor:
            eta = _clip(w / (device_type.bandwidth_GBps * 1e9 * (c - floor) / 1e3))
            for p in PHASES:
                factors[(p, b)] = replace(factors[(p, b)], bandwidth=eta)
    matmul_flops_per_token = 2.0 * sum(lin.weight_count for lin in spec.layer_linears())
    top_batch, top_seq = int(measured.batch.max()), int(measured.seq.max())
    for b in model.bits:
        if (b, "prefill") not in model.layer_fits:
            continue
        n = top_batch * top_seq
        slope_ms = model.layer_ms(b, "prefill", top_batch, top_seq) - model.layer_ms(
            b, "prefill", top_batch, top_seq - 1
        )  # ms for top_batch more tokens (and their attention)
        if slope_ms > 0 and n > 0:
            tflops = matmul_flops_per_token * top_batch / (slope_ms / 1e3) / 1e12
            eta = _clip(tflops / device_type.fp16_TFLOPS)
            for p in PHASES:
                factors[(p, b)] = replace(factors[(p, b)], compute=eta)
    name = measured.attrs.get("device_name", measured.attrs.get("device_type", "?"))
    source = f"calibrated from a measured table of {measured.attrs['device_type']} ({name})"
    return replace(base, factors=factors, source=source)
