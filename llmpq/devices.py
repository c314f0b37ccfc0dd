"""Device types: the built-in GPU catalog and the measured local CPU worker.

Usage::

    from llmpq.devices import device_type, CATALOG

    t4 = device_type("T4")                  # datasheet figures
    t4.memory_bytes, t4.bandwidth_GBps, t4.fp16_TFLOPS
    cpu = device_type("cpu")                # bandwidth and FLOP/s measured here, once per process

Catalog figures are dense (non-sparse) datasheet peaks from ``shared/reference/peers.md`` §(d):
H100 and A100 from the NVIDIA datasheets, L4 and T4 from NVIDIA's "with sparsity" figures halved
where only those are published, V100 the SXM2 figures, P100 the PCIe figures (no tensor cores:
the FP16 figure is 2x FP32, and there is no int8 tensor rate), A10 and A800 from the datasheet
values quoted there. ``memory_GiB`` is the marketed capacity; the memory model subtracts the CUDA
context and allocator reserve. ``pcie_GBps`` is the nominal per-direction host link (PCIe 3/4/5
x16: 16/32/64 GB/s); ``nvlink_GBps`` the per-GPU NVLink bandwidth between two GPUs of that type
on one host, where the SXM boards have it.

``bits`` is the set of weight bitwidths a device may be given. Weight-only kernels that
dequantize in the matmul run on every CUDA generation listed (Pascal included), so every catalog
type offers {3, 4, 8, 16}; a cluster file narrows the set per device (``bits: [4, 8, 16]``)
where a deployment's kernels do not cover a width.
"""

from __future__ import annotations

import functools
import os
import statistics
import time
from dataclasses import asdict, dataclass, replace
from types import MappingProxyType
from typing import Any

from llmpq.errors import UserError

GiB = 1024**3
ALL_BITS = (3, 4, 8, 16)


@dataclass(frozen=True)
class DeviceType:
    """What the planner needs to know about one kind of device."""

    name: str
    memory_GiB: float
    bandwidth_GBps: float  # peak memory bandwidth
    fp16_TFLOPS: float  # dense FP16 (tensor-core where present) peak
    int8_TOPS: float | None  # dense INT8 tensor peak; None without int8 tensor cores
    bits: tuple[int, ...] = ALL_BITS
    compute_capability: str | None = None
    pcie_GBps: float = 16.0
    nvlink_GBps: float | None = None
    source: str = "datasheet"  # datasheet | measured | inline

    def __post_init__(self) -> None:
        for name in ("memory_GiB", "bandwidth_GBps", "fp16_TFLOPS", "pcie_GBps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise UserError(f"device {self.name!r} {name}", value, "use a positive number")
        if not self.bits or any(b not in ALL_BITS for b in self.bits):
            raise UserError(
                f"device {self.name!r} bits", list(self.bits), f"choose from {list(ALL_BITS)}"
            )
        object.__setattr__(self, "bits", tuple(sorted(set(self.bits))))

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_GiB * GiB)

    @property
    def is_gpu(self) -> bool:
        return self.name != "cpu" and self.compute_capability is not None

    def ridge_batch(self, bits: int = 16) -> float:
        """Decode batch where weight streaming stops bounding a matmul: peak·bytes/weight / (2·BW)."""
        return self.fp16_TFLOPS * 1e12 * (bits / 8) / (2 * self.bandwidth_GBps * 1e9)

    def with_overrides(self, figures: dict[str, Any]) -> DeviceType:
        """A copy with some figures replaced (a cluster file's inline values), marked ``inline``."""
        return replace(self, **_checked_figures(self.name, figures), source="inline")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["bits"] = list(self.bits)
        return data


FIGURE_KEYS = (
    "memory_GiB", "bandwidth_GBps", "fp16_TFLOPS", "int8_TOPS", "bits", "compute_capability",
    "pcie_GBps", "nvlink_GBps",
)  # fmt: skip
REQUIRED_INLINE_KEYS = ("memory_GiB", "bandwidth_GBps", "fp16_TFLOPS")


def _checked_figures(device_name: str, figures: dict[str, Any]) -> dict[str, Any]:
    for key in figures:
        if key not in FIGURE_KEYS:
            raise UserError(
                f"device {device_name!r} field",
                key,
                f"use one of {list(FIGURE_KEYS)}",
                "is unknown",
            )
    if "bits" in figures:
        bits = figures["bits"]
        if not isinstance(bits, (list, tuple)):
            raise UserError(
                f"device {device_name!r} bits", bits, f"give a list from {list(ALL_BITS)}"
            )
        figures = {**figures, "bits": tuple(bits)}
    return figures


def inline_device_type(name: str, figures: dict[str, Any]) -> DeviceType:
    """A device type given entirely in a cluster file (not in the catalog)."""
    missing = [k for k in REQUIRED_INLINE_KEYS if k not in figures]
    if missing:
        raise UserError(
            f"device {name!r} {missing[0]}", None,
            f"give {', '.join(REQUIRED_INLINE_KEYS)} for a type outside the catalog", "is missing",
        )  # fmt: skip
    figures = {"int8_TOPS": None, **_checked_figures(name, figures)}
    return DeviceType(name=name, source="inline", **figures)


def _gpu(
    name: str, memory_GiB: float, bandwidth_GBps: float, fp16_TFLOPS: float,
    int8_TOPS: float | None, cc: str, pcie_GBps: float, nvlink_GBps: float | None = None,
) -> DeviceType:  # fmt: skip
    return DeviceType(
        name=name, memory_GiB=memory_GiB, bandwidth_GBps=bandwidth_GBps,
        fp16_TFLOPS=fp16_TFLOPS, int8_TOPS=int8_TOPS, compute_capability=cc,
        pcie_GBps=pcie_GBps, nvlink_GBps=nvlink_GBps,
    )  # fmt: skip


CATALOG: MappingProxyType[str, DeviceType] = MappingProxyType(
    {
        d.name: d
        for d in (
            _gpu("T4", 16, 320, 65, 130, "7.5", 16),
            _gpu("P100-12G", 12, 549, 18.7, None, "6.0", 16),
            _gpu("P100-16G", 16, 732, 18.7, None, "6.0", 16),
            _gpu("V100-16G", 16, 900, 125, None, "7.0", 16, 300),
            _gpu("V100-32G", 32, 900, 125, None, "7.0", 16, 300),
            _gpu("A10", 24, 600, 125, 250, "8.6", 32),
            _gpu("A100-40G", 40, 1555, 312, 624, "8.0", 32, 600),
            _gpu("A100-80G", 80, 2039, 312, 624, "8.0", 32, 600),
            _gpu("A800-80G", 80, 2039, 312, 624, "8.0", 32, 400),
            _gpu("L4", 24, 300, 121, 242, "8.9", 32),
            _gpu("H100-SXM", 80, 3350, 989, 1979, "9.0", 64, 900),
            _gpu("H100-PCIe", 80, 2000, 756, 1513, "9.0", 64),
        )
    }
)
LOCAL_CPU = "cpu"


def device_type_names() -> list[str]:
    return [*CATALOG, LOCAL_CPU]


def device_type(name: str, field: str = "device type") -> DeviceType:
    """A catalog GPU by name, or the measured local ``cpu``; UserError naming the choices."""
    if name in CATALOG:
        return CATALOG[name]
    if name == LOCAL_CPU:
        return measure_cpu()
    matches = [n for n in CATALOG if n.lower() == str(name).lower()]
    hint = f"did you mean {matches[0]!r}? " if matches else ""
    raise UserError(
        field,
        name,
        f"{hint}use one of {', '.join(device_type_names())}, or give memory_GiB, "
        "bandwidth_GBps and fp16_TFLOPS inline",
        problem="is not a known device type",
    )


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _matmul_flops_per_s(dtype, largest: int = 1024, enough_s: float = 0.02) -> float:
    """FLOP/s of a square ``dtype`` matmul: the side doubles from 128 until one product takes
    ``enough_s`` or the side reaches ``largest``, so a CPU whose 16-bit path is emulated (bf16
    at < 1 GFLOP/s without AVX512-BF16) is measured in a fraction of a second, not in 15 s."""
    import torch

    n = 128
    while True:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b  # untimed: a shape's first product includes oneDNN's kernel generation (~45 ms)
        start = time.perf_counter()
        a @ b
        if n >= largest or time.perf_counter() - start >= enough_s:
            return 2 * n**3 / _median_seconds(lambda a=a, b=b: a @ b, repeats=5)
        n *= 2


@functools.cache
def measure_cpu() -> DeviceType:
    """The local CPU as a device type: memory from the OS, bandwidth and FLOP/s measured (~1 s).

    * bandwidth: copy of a 128 MiB fp32 tensor (read + write bytes over the median time);
    * fp16_TFLOPS: a bf16 matmul of side up to 1024 (this CPU's 16-bit path; fp16 is emulated on
      most CPUs), smaller where one product takes over 20 ms;
    * int8_TOPS: the weight-only int8 matmul ``torch._weight_int8pack_mm`` at 256×1024×1024,
      as effective multiply-adds ×2 per second — the kernel the 8-bit layers run on.
    Cached once per process; the threads are torch's current setting.
    """
    import torch

    memory_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    src = torch.ones(32 * 1024 * 1024)  # 128 MiB of fp32
    dst = torch.empty_like(src)
    copy_s = _median_seconds(lambda: dst.copy_(src), repeats=5)
    n = 1024
    fp16_flops_per_s = _matmul_flops_per_s(torch.bfloat16, largest=n)
    x = torch.randn(256, n, dtype=torch.bfloat16)
    w = torch.randint(-127, 127, (n, n), dtype=torch.int8)
    scales = torch.ones(n, dtype=torch.bfloat16)
    int8_s = _median_seconds(lambda: torch._weight_int8pack_mm(x, w, scales), repeats=5)
    return DeviceType(
        name=LOCAL_CPU,
        memory_GiB=round(memory_bytes / GiB, 2),
        bandwidth_GBps=round(2 * src.numel() * 4 / copy_s / 1e9, 2),
        fp16_TFLOPS=round(fp16_flops_per_s / 1e12, 6),
        int8_TOPS=round(2 * 256 * n * n / int8_s / 1e12, 6),
        compute_capability=None,
        pcie_GBps=4.0,  # gloo over loopback TCP: 3-3.8 GB/s one-way measured (ecosystem notes §6)
        source="measured",
    )
