"""Weight-only quantization: 8-bit per channel, 3/4-bit group-wise; RTN or GPTQ; fast kernels.

Two steps, as in gpt-fast: an offline step writes the quantized weights, a runtime step swaps a
stage's ``nn.Linear`` modules for quantized ones::

    from llmpq.quant import QuantizedModel, load_quantized_stage, quantize_model

    qmodel = quantize_model("results/models/default", [4, 4, 8, 16, 3, 3], method="gptq")
    qmodel.save("default-plan.safetensors")                                # offline artefact
    stage = load_quantized_stage("results/models/default", stage_range,
                                 QuantizedModel.load("default-plan.safetensors"))  # runtime

Modules: :mod:`~llmpq.quant.rtn` (grids, round-to-nearest, :class:`QuantizedWeight`),
:mod:`~llmpq.quant.gptq`, :mod:`~llmpq.quant.packing` (nibbles, 3-bit packing, kernel layouts),
:mod:`~llmpq.quant.linear` (QuantLinear and its kernels), :mod:`~llmpq.quant.dense` (the
16-bit linears in oneDNN's packed layout on CPU), :mod:`~llmpq.quant.state` (the
safetensors artefact), :mod:`~llmpq.quant.calibration`, :mod:`~llmpq.quant.offline` and
:mod:`~llmpq.quant.apply`. Storage sizes follow the contract in :mod:`llmpq.models.spec`.
"""

from llmpq.quant.apply import (
    apply_quantized,
    load_quantized_stage,
    quantize_stage,
    sixteen_bit_dtype,
)
from llmpq.quant.dense import PackedLinear, dense_linear, pack_dense_linears
from llmpq.quant.gptq import Hessian, quantize_gptq
from llmpq.quant.linear import QuantLinear, module_bytes, quant_linear
from llmpq.quant.offline import quantize_model
from llmpq.quant.rtn import QuantizedWeight, quantize_rtn
from llmpq.quant.state import QuantizedModel

__all__ = [
    "Hessian",
    "PackedLinear",
    "QuantLinear",
    "QuantizedModel",
    "QuantizedWeight",
    "apply_quantized",
    "dense_linear",
    "load_quantized_stage",
    "module_bytes",
    "pack_dense_linears",
    "quant_linear",
    "quantize_gptq",
    "quantize_model",
    "quantize_rtn",
    "quantize_stage",
    "sixteen_bit_dtype",
]
