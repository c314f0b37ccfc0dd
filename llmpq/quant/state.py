"""The offline artefact: a model's quantized linears, saved as safetensors and loaded per stage.

Usage::

    qmodel = quantize_model("results/models/default", [4, 4, 8, 16, 3, 3], method="gptq")
    qmodel.save("results/quant/default-mixed.safetensors")         # atomic
    part = QuantizedModel.load("results/quant/default-mixed.safetensors", layers=range(3, 6))
    part.layer_weights(4)        # {"self_attn.q_proj": QuantizedWeight, ...} (empty at 16 bits)

Only the linears of layers below 16 bits are stored; 16-bit layers, biases, norms, embeddings
and the head are read from the model checkpoint itself. File layout (portable: no kernel's
private layout), for each quantized linear ``layers.{i}.{name}`` (``name`` as in
``ModelSpec.layer_linears()``):

* ``.qweight``: 8 bits int8 ``[N, K]``; 4 bits uint8 ``[N, K/2]`` nibble bytes
  (:func:`llmpq.quant.packing.pack_nibbles`); 3 bits uint8 ``[N, 3K/8]``: the nibble bytes
  of the doubled codes packed along each row (``pack_3bit(..., dim=1)``, same module).
* ``.scales``: bf16 ``[N]`` (8 bits) or ``[N, K/group_size]``; ``.zeros`` (3/4 bits): bf16
  ``[N, K/group_size]``, the value of code 8 (see :mod:`llmpq.quant.rtn`).

The safetensors metadata holds ``format`` (``llmpq.quant/1``), ``bits_per_layer`` (JSON),
``group_size`` and ``method``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from llmpq.errors import UserError
from llmpq.quant.packing import pack_3bit, pack_nibbles, unpack_3bit, unpack_nibbles
from llmpq.quant.rtn import QuantizedWeight

FORMAT = "llmpq.quant/1"
METHODS = ("rtn", "gptq")


def layer_key(layer: int, linear: str) -> str:
    """The artefact's name of one linear: ``layers.{layer}.{linear}``."""
    return f"layers.{layer}.{linear}"


@dataclass(frozen=True, eq=False)
class QuantizedModel:
    """Quantized linears of the layers below 16 bits, keyed by :func:`layer_key`."""

    bits_per_layer: tuple[int, ...]
    group_size: int
    method: str  # rtn | gptq
    weights: Mapping[str, QuantizedWeight]

    def __post_init__(self) -> None:
        object.__setattr__(self, "bits_per_layer", tuple(self.bits_per_layer))
        object.__setattr__(self, "weights", MappingProxyType(dict(self.weights)))

    @property
    def num_layers(self) -> int:
        return len(self.bits_per_layer)

    def layer_weights(self, layer: int) -> dict[str, QuantizedWeight]:
        """Linear name -> QuantizedWeight of one layer (empty for a 16-bit layer)."""
        prefix = layer_key(layer, "")
        return {k.removeprefix(prefix): w for k, w in self.weights.items() if k.startswith(prefix)}

    def save(self, path: str | Path) -> Path:
        """Write the safetensors file atomically (temp file in the same folder + rename)."""
        path = Path(path)
        tensors: dict[str, torch.Tensor] = {}
        for key, qw in self.weights.items():
            tensors |= {f"{key}.{part}": t for part, t in _portable(qw).items()}
        metadata = {
            "format": FORMAT,
            "bits_per_layer": json.dumps(list(self.bits_per_layer)),
            "group_size": str(self.group_size),
            "method": self.method,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata=metadata)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | Path, layers: Iterable[int] | None = None) -> QuantizedModel:
        """Read the file, only the tensors of ``layers`` if given (a stage's own)."""
        path = Path(path)
        if not path.is_file():
            raise UserError("quantized file", str(path), "check the path", problem="does not exist")
        try:
            with safe_open(path, framework="pt") as f:
                metadata = f.metadata() or {}
                if metadata.get("format") != FORMAT:
                    raise _not_ours(path)
                bits = tuple(json.loads(metadata["bits_per_layer"]))
                group_size = int(metadata["group_size"])
                wanted = set(range(len(bits)) if layers is None else layers)
                parts: dict[str, dict[str, torch.Tensor]] = {}
                for name in f.keys():
                    key, _, part = name.rpartition(".")
                    if int(key.split(".")[1]) in wanted:
                        parts.setdefault(key, {})[part] = f.get_tensor(name)
        except (SafetensorError, KeyError, ValueError) as err:
            raise _not_ours(path) from err
        weights = {
            key: _from_portable(p, bits[int(key.split(".")[1])], group_size)
            for key, p in parts.items()
        }
        return cls(bits, group_size, metadata["method"], weights)


def _not_ours(path: Path) -> UserError:
    return UserError(
        "quantized file",
        str(path),
        "give a file written by QuantizedModel.save (llmpq ppl --save-quantized)",
        problem=f"is not an {FORMAT} safetensors file",
    )


def _portable(qw: QuantizedWeight) -> dict[str, torch.Tensor]:
    """The file's tensors of one linear (see the module docstring)."""
    if qw.bits == 8:
        return {"qweight": qw.codes.contiguous(), "scales": qw.scales.contiguous()}
    if qw.bits == 4:
        qweight = pack_nibbles(qw.codes)  # uint8 [N, K/2]
    else:
        qweight = pack_3bit(pack_nibbles(qw.codes * 2), dim=1)  # uint8 [N, 3K/8]
    return {"qweight": qweight, "scales": qw.scales.contiguous(), "zeros": qw.zeros.contiguous()}


def _from_portable(
    parts: Mapping[str, torch.Tensor], bits: int, group_size: int
) -> QuantizedWeight:
    qweight, scales = parts["qweight"], parts["scales"]
    if bits == 8:
        return QuantizedWeight(8, qweight.shape[1], qweight, scales, None)
    if bits == 4:
        codes = unpack_nibbles(qweight)
    else:
        codes = unpack_nibbles(unpack_3bit(qweight, dim=1)) // 2
    # a linear whose inputs the asked group size does not divide has a smaller one: its shape says
    return QuantizedWeight(bits, codes.shape[1] // scales.shape[1], codes, scales, parts["zeros"])
