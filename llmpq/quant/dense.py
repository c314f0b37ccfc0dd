"""16-bit linears in the device's fastest weight layout (the runtime side of "16 bits").

Usage::

    pack_dense_linears(stage)        # in place: every remaining nn.Linear of the layers and head
    module = dense_linear(linear)    # PackedLinear on a bf16 CPU with oneDNN, else ``linear``

On CPU, ``F.linear`` with a plain bf16 weight hands oneDNN a row-major matrix on every call;
the same matmul with the weight reordered once into oneDNN's blocked layout
(``mkldnn._reorder_linear_weight``, what Inductor's freezing pass does) gives bit-identical
outputs and is much faster where decode lives. Measured on this project's 2-core AVX-512-BF16
machine, one thread, 40 distinct [2816, 1024] weights streamed from memory (ms for all 40):

==========  ==============  ==============  =====
rows (M)    ``F.linear``    packed          ratio
==========  ==============  ==============  =====
1           14.0            6.9             2.0x
4           15.1            7.5             2.0x
32          27.7            19.6            1.4x
128         70.0            63.8            1.1x
==========  ==============  ==============  =====

At M = 1 that is 15 GB/s against 31 GB/s of weights read, with ``sum()`` reading 36 GB/s.
The packed weight takes the same bytes (oneDNN pads to its block, < 0.5 % on real shapes).
The kernel needs a contiguous input (a strided view gives wrong numbers), so ``forward``
makes it so. A tied LM head that shares its weight with the stage's own embedding is left as
it is: packing would copy it, and the memory model counts it once.
"""

from __future__ import annotations

import torch
from torch import nn

from llmpq.models.stage import PipelineStage

PACKED_DTYPE = torch.bfloat16
BATCH_HINT = 1  # oneDNN's layout hint: decode-sized; prefill shapes run as fast either way


def packing_available(weight: torch.Tensor) -> bool:
    """Whether ``weight`` (an ``nn.Linear``'s) can take the packed kernel: bf16 on a CPU whose
    oneDNN build has bf16 matmul."""
    return (
        weight.device.type == "cpu"
        and weight.dtype == PACKED_DTYPE
        and torch.backends.mkldnn.is_available()
        and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


class PackedLinear(nn.Module):
    """``y = x @ W^T + b`` (bf16, CPU) with W held in oneDNN's blocked layout."""

    bits = 16
    kernel = "bf16_packed_cpu"

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach()
        self.register_buffer("weight", torch.ops.mkldnn._reorder_linear_weight(weight, BATCH_HINT))
        bias = None if linear.bias is None else linear.bias.detach().to(PACKED_DTYPE).contiguous()
        self.register_buffer("bias", bias)  # [N] or None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.to(PACKED_DTYPE).contiguous()  # [..., K]
        y = torch.ops.mkldnn._linear_pointwise(rows, self.weight, self.bias, "none", [], "")
        return y.to(x.dtype)  # [..., N]

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bits=16, "
            f"kernel={self.kernel}, bias={self.bias is not None}"
        )


def dense_linear(linear: nn.Linear) -> nn.Module:
    """The fastest module computing ``linear`` exactly: :class:`PackedLinear`, or ``linear``."""
    return PackedLinear(linear) if packing_available(linear.weight) else linear


def _shared(weight: torch.Tensor, others: list[torch.Tensor]) -> bool:
    return any(weight.data_ptr() == t.data_ptr() for t in others)


def pack_dense_linears(stage: PipelineStage) -> PipelineStage:
    """Swap the ``nn.Linear`` modules left in a pipeline stage's layers and LM head (the 16-bit
    ones) for :func:`dense_linear`, in place; a no-op where packing is not available."""
    embed_weights = [] if stage.embed is None else list(stage.embed.parameters())
    for part in (stage.layers, stage.head):
        if part is None:
            continue
        linears = [(n, m) for n, m in part.named_modules() if type(m) is nn.Linear]
        for name, linear in linears:
            if _shared(linear.weight, embed_weights):
                continue  # a tied head beside its embedding: one copy, as the memory model says
            parent_name, _, attr = name.rpartition(".")
            parent = part.get_submodule(parent_name) if parent_name else part
            setattr(parent, attr, dense_linear(linear))
    return stage
