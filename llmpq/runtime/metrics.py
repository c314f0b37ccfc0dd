"""What a serving run measured, beside what the plan predicted (the names the plan uses).

Usage::

    from llmpq.runtime.metrics import ServeMetrics

    metrics = ServeMetrics.from_reports(plan, stage_reports, generated_tokens=256, wall_s=9.1)
    metrics.tokens_per_s, metrics.makespan_s, metrics.stages[1]["busy_s"]
    metrics.to_dict()        # metrics.json: {"measured": ..., "predicted": ..., "stages": [...]}

``makespan_s`` = ``prefill_s`` + ``decode_s``, timed on the first stage from the moment every
stage is loaded: prefill until the last first token is back, decode until the last token is.
``tokens_per_s`` counts the tokens generated (up to each sequence's end) over ``makespan_s``;
``wall_s`` is the whole call (process start, loading, the run, writing outputs); ``load_s`` the
slowest stage's loading (and quantizing). Per stage: ``busy_s`` (compute: layers, head,
sampling, cache regrouping), split into ``prefill_busy_s`` (prefill passes and the regrouping)
and ``decode_busy_s``, and its fraction of the makespan, ``peak_memory_bytes`` (CPU: the
process's peak resident set, runtime included; CUDA: peak allocated), beside the memory model's
``predicted_memory_bytes`` and the stage's budget.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from llmpq.plan import Plan

COMPARED = ("makespan_s", "prefill_s", "decode_s", "tokens_per_s")


@dataclass(frozen=True)
class ServeMetrics:
    method: str
    num_stages: int
    batch_size: int
    prompt_len: int  # after padding
    gen_len: int
    generated_tokens: int
    prefill_s: float
    decode_s: float
    makespan_s: float
    tokens_per_s: float
    load_s: float
    wall_s: float
    launcher: str
    stages: tuple[dict[str, Any], ...]
    predicted: dict[str, Any] | None = None  # the plan's, as it stands in the plan

    @classmethod
    def from_reports(
        cls, plan: Plan, reports: list[dict[str, Any]], *, batch_size: int, prompt_len: int,
        gen_len: int, generated_tokens: int, wall_s: float, launcher: str,
    ) -> ServeMetrics:  # fmt: skip
        first = reports[0]
        makespan = first["prefill_s"] + first["decode_s"]
        stages = tuple(r | {"busy_fraction": r["busy_s"] / makespan if makespan else 0.0}
                       for r in reports)  # fmt: skip
        return cls(
            method=plan.method, num_stages=len(reports), batch_size=batch_size,
            prompt_len=prompt_len, gen_len=gen_len, generated_tokens=generated_tokens,
            prefill_s=first["prefill_s"], decode_s=first["decode_s"], makespan_s=makespan,
            tokens_per_s=generated_tokens / makespan if makespan else 0.0,
            load_s=max(r["load_s"] for r in reports), wall_s=wall_s, launcher=launcher,
            stages=stages, predicted=asdict(plan.predicted) if plan.predicted else None,
        )  # fmt: skip

    def measured(self) -> dict[str, Any]:
        names = ("makespan_s", "prefill_s", "decode_s", "tokens_per_s", "generated_tokens",
                 "load_s", "wall_s")  # fmt: skip
        return {n: getattr(self, n) for n in names}

    def measured_over_predicted(self) -> dict[str, float] | None:
        """Measured / predicted for each figure both have (None without a prediction)."""
        if not self.predicted:
            return None
        return {n: getattr(self, n) / self.predicted[n] for n in COMPARED if self.predicted.get(n)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "launcher": self.launcher,
            "num_stages": self.num_stages,
            "batch_size": self.batch_size,
            "prompt_len": self.prompt_len,
            "gen_len": self.gen_len,
            "measured": self.measured(),
            "predicted": self.predicted,
            "measured_over_predicted": self.measured_over_predicted(),
            "stages": list(self.stages),
        }


@dataclass(frozen=True)
class DatasetMetrics:
    """What a dataset run measured (``metrics.json`` of ``serve --prompts``): ``makespan_s`` on
    the first stage from every stage loaded to the last request written; ``tokens_per_s`` the
    generated tokens (up to each end-of-sequence or limit) over it; this run's requests only
    (a resumed run counts what it served)."""

    method: str
    num_stages: int
    refill: bool  # False: one batch at a time
    concurrency: int  # sequences in flight: decode_count x decode_size
    prompts: int
    generated_tokens: int
    prompt_tokens: int
    makespan_s: float
    tokens_per_s: float
    load_s: float
    wall_s: float
    launcher: str
    prompt_lens: dict[str, float]  # min / mean / p50 / p90 / max tokens per prompt
    stages: tuple[dict[str, Any], ...]
    predicted: dict[str, Any] | None = None  # the plan's dataset prediction, if it has one

    @classmethod
    def from_reports(
        cls, plan: Plan, reports: list[dict[str, Any]], *, refill: bool, prompt_lens,
        wall_s: float, launcher: str,
    ) -> DatasetMetrics:  # fmt: skip
        import numpy as np

        from llmpq.dataset_workload import length_summary

        first = reports[0]
        makespan = first["makespan_s"]
        stages = tuple(r | {"busy_fraction": r["busy_s"] / makespan if makespan else 0.0}
                       for r in reports)  # fmt: skip
        lens = np.asarray(prompt_lens, dtype=np.float64)
        summary = length_summary(lens)
        mb = plan.micro_batch
        predicted = plan.dataset.predicted if plan.dataset is not None else None
        return cls(
            method=plan.method, num_stages=len(reports), refill=refill,
            concurrency=mb.decode_size * mb.decode_count, prompts=first["prompts"],
            generated_tokens=first["generated_tokens"], prompt_tokens=int(lens.sum()),
            makespan_s=makespan,
            tokens_per_s=first["generated_tokens"] / makespan if makespan else 0.0,
            load_s=max(r["load_s"] for r in reports), wall_s=wall_s, launcher=launcher,
            prompt_lens=summary, stages=stages, predicted=predicted,
        )  # fmt: skip

    def measured_over_predicted(self) -> dict[str, float] | None:
        if not self.predicted:
            return None
        return {n: getattr(self, n) / self.predicted[n] for n in ("makespan_s", "tokens_per_s")
                if self.predicted.get(n)}  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stages"] = list(self.stages)
        data["measured_over_predicted"] = self.measured_over_predicted()
        return data
