"""Weight-only quantized linears against bf16, and the default model's perplexity per bitwidth.

Run::

    python bench/quant_kernels.py [--json results/bench/quant_kernels.json]
        [--model results/models/default] [--skip-ppl] [--rounds 30] [--threads N]
        [--clock wall|cpu] [--cache warm|cold] [--skip-kernels]

Part 1 times ``nn.Linear`` in bf16 and the 8/4/3-bit modules of :mod:`llmpq.quant.linear` (the
ones the runtime serves) at decode-like (M = 1, 4, 16) and prefill-like (M = 512) shapes with
K = N = 2048 and 4096, in one process, and reports the median per call; the speed-up is bf16's
median over the module's.

* ``--cache warm`` (default): each module is called ``rounds`` times in a row, so a weight
  smaller than the last-level cache (32 MiB here: the 8/4/3-bit ones at K = 4096, not bf16's)
  stays cached, as when one layer is run again and again; ecosystem-notes §6 timed the ops so.
* ``--cache cold``: the modules are called in turn, round by round, and a 64 MiB buffer is
  written before every timed call, so every weight comes from memory, as in a model much larger
  than the cache. Decode is then bound by the bytes read: about 2x for 8 bits, 4x for 4 bits.
* ``--clock cpu`` times the process's CPU time instead of the wall clock: with ``--threads 1``
  on a machine others are using, it leaves out the time the thread waits for a core (and two
  threads on a busy 2-core machine make every parallel region wait a scheduler slice).

Part 2 evaluates the model's held-out perplexity at uniform 16, 8, 4 and 3 bits, RTN and GPTQ,
with :func:`llmpq.quality.plan_perplexity`.

JSON: ``ms_per_call`` and ``decode_speedup_vs_bf16`` / ``prefill_speedup_vs_bf16`` keyed by bits
("8", "4", "3") then ``"M=1,K=4096"``-style shapes; ``ppl`` keyed "16", "8", "4-rtn", "4-gptq",
"3-rtn", "3-gptq"; plus the settings, load averages and versions.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from llmpq.files import write_json_atomic
from llmpq.quant.linear import quant_linear
from llmpq.quant.rtn import quantize_rtn

SIZES = (2048, 4096)  # K = N
DECODE_M = (1, 4, 16)
PREFILL_M = (512,)
BITS = (8, 4, 3)
GROUP_SIZE = 128
FLUSH_BYTES = 64 << 20  # twice the last-level cache
PPL_RUNS = (("16", 16, "rtn"), ("8", 8, "rtn"), ("4-rtn", 4, "rtn"), ("4-gptq", 4, "gptq"),
            ("3-rtn", 3, "rtn"), ("3-gptq", 3, "gptq"))  # fmt: skip


def _modules(size: int) -> dict[str, nn.Module]:
    """bf16 nn.Linear and the 8/4/3-bit modules of one random [size, size] weight."""
    gen = torch.Generator().manual_seed(size)
    weight = torch.randn(size, size, generator=gen) * 0.02  # [N, K]
    dense = nn.Linear(size, size, bias=False, dtype=torch.bfloat16)
    dense.weight.data = weight.to(torch.bfloat16)
    modules: dict[str, nn.Module] = {"16": dense}
    for bits in BITS:
        modules[str(bits)] = quant_linear(quantize_rtn(weight, bits, GROUP_SIZE))
    return modules


@torch.no_grad()
def _median_ms(
    modules: dict[str, nn.Module], x: torch.Tensor, rounds: int, clock, cold: bool
) -> dict[str, float]:
    """Median ms per call of each module after a warm-up call (see --cache in the docstring)."""
    for module in modules.values():
        module(x)
    calls = [name for _ in range(rounds) for name in modules]
    if not cold:
        calls.sort(key=list(modules).index)  # stable: each module's calls back to back
    flush = torch.empty(FLUSH_BYTES, dtype=torch.uint8) if cold else None
    times: dict[str, list[float]] = {name: [] for name in modules}
    for name in calls:
        if flush is not None:
            flush.fill_(len(times[name]) % 251)  # evicts the last-level cache
        start = clock()
        modules[name](x)
        times[name].append(clock() - start)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def bench_kernels(rounds: int, clock=time.perf_counter, cold: bool = False) -> dict:
    ms: dict[str, dict[str, float]] = {str(b): {} for b in (16, *BITS)}
    for size in SIZES:
        modules = _modules(size)
        for m in (*DECODE_M, *PREFILL_M):
            x = torch.randn(m, size, generator=torch.Generator().manual_seed(m)).bfloat16()
            reps = rounds if m < 512 else max(5, rounds // 5)
            for name, value in _median_ms(modules, x, reps, clock, cold).items():
                ms[name][f"M={m},K={size}"] = round(value, 4)
    return {
        "ms_per_call": ms,
        "decode_speedup_vs_bf16": _speedups(ms, DECODE_M),
        "prefill_speedup_vs_bf16": _speedups(ms, PREFILL_M),
    }


def _speedups(ms: dict[str, dict[str, float]], m_values: tuple[int, ...]) -> dict:
    """bits -> shape -> bf16 ms / ms, for the shapes whose M is in ``m_values``."""
    shapes = [s for s in ms["16"] if int(s.split(",")[0].removeprefix("M=")) in m_values]
    return {str(b): {s: round(ms["16"][s] / ms[str(b)][s], 3) for s in shapes} for b in BITS}


def bench_ppl(model_dir: Path) -> dict:
    from llmpq.models.spec import model_spec
    from llmpq.quality import plan_perplexity

    layers = model_spec(model_dir).num_layers
    ppl, seconds, tokens = {}, {}, 0
    for key, bits, method in PPL_RUNS:
        result = plan_perplexity(model_dir, [bits] * layers, method=method, group_size=GROUP_SIZE)
        ppl[key], seconds[key], tokens = result.perplexity, result.seconds, result.tokens_evaluated
        print(f"  ppl {key:>7}: {result.perplexity:9.4f}  ({result.seconds:.1f} s)", flush=True)
    return {"ppl": ppl, "ppl_seconds": seconds, "ppl_tokens": tokens, "model": str(model_dir)}


def format_kernels(result: dict) -> str:
    ms = result["ms_per_call"]
    lines = [
        f"weight-only linear, median ms per call (speed-up vs bf16); {result['clock']} clock, "
        f"{result['cache']} cache, {result['threads']} threads, group {GROUP_SIZE}",
        f"{'K=N':>5} {'M':>4} {'bf16':>9} " + " ".join(f"{f'{b}-bit':>17}" for b in BITS),
    ]
    for size in SIZES:
        for m in (*DECODE_M, *PREFILL_M):
            shape = f"M={m},K={size}"
            base = ms["16"][shape]
            cells = [f"{ms[str(b)][shape]:9.3f} ({base / ms[str(b)][shape]:4.1f}x)" for b in BITS]
            lines.append(f"{size:>5} {m:>4} {base:9.3f} " + " ".join(f"{c:>17}" for c in cells))
    return "\n".join(lines)


def format_ppl(result: dict) -> str:
    ppl = result["ppl"]
    base = ppl["16"]
    lines = [f"perplexity of {result['model']} on {result['ppl_tokens']} held-out tokens"]
    for key, value in ppl.items():
        lines.append(f"  {key:>7}  {value:9.4f}  ({(value / base - 1) * 100:+6.2f} % vs 16-bit)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--model", default="results/models/default", help="model for part 2")
    parser.add_argument("--skip-ppl", action="store_true", help="kernels only")
    parser.add_argument("--skip-kernels", action="store_true", help="perplexity only")
    parser.add_argument("--rounds", type=int, default=30, help="timed calls per module and shape")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="what to time")
    parser.add_argument("--cache", choices=("warm", "cold"), default="warm", help="see above")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result: dict = {
        "clock": args.clock,
        "cache": args.cache,
        "threads": torch.get_num_threads(),
        "load_average_before": os.getloadavg(),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "python": platform.python_version(),
    }
    if not args.skip_kernels:
        clock = time.process_time if args.clock == "cpu" else time.perf_counter
        result |= bench_kernels(args.rounds, clock, cold=args.cache == "cold")
        result["load_average_after_kernels"] = os.getloadavg()
        print(format_kernels(result), flush=True)
    if not args.skip_ppl:
        result |= bench_ppl(Path(args.model))
        print(format_ppl(result))
    if args.json:
        write_json_atomic(args.json, result)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
