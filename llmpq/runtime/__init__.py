"""The serving runtime: a plan run for real as a pipeline over ``torch.distributed``.

Usage::

    from llmpq.runtime import serve

    result = serve("plan.json", "results/models/default", "prompts.jsonl", "results/serve/x",
                   cluster="config/clusters/cpu_hetero.yaml")
    result.metrics.to_dict()["measured"]["tokens_per_s"]

    from llmpq.runtime import serve_dataset          # a whole file of requests, refilled

    serve_dataset("plan.json", model_dir, "prompts.jsonl", "results/serve/x", resume=True)

Modules, one concept each: ``launch`` (``serve``: checks, torchrun, outputs), ``worker`` (one
stage process), ``pipeline`` (a stage's part of the schedule), ``schedule`` (the micro-batches),
``kvcache`` (regrouping caches), ``transport`` (the ring of messages over ``torch.distributed``
or in-process queues), ``sockets`` (the ring of one host's CPU stages), ``sampling``, ``prompts``,
``budget`` (memory need vs budget), ``job`` (launcher -> worker files), ``metrics``; for a
dataset: ``dataset`` (``serve_dataset``), ``requests`` (input files), ``continuous`` (the refill
schedule), ``outputs`` (streamed output lines).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# Names resolved on first use (PEP 562): importing a light submodule (``slurm``, ``nodes``,
# ``requests``) must not pull in torch and transformers, which every Snakefile parse would then
# pay for (~3 s a parse).
_LAZY = {
    "DatasetResult": "llmpq.runtime.dataset",
    "serve_dataset": "llmpq.runtime.dataset",
    "Output": "llmpq.runtime.launch",
    "ServeFailed": "llmpq.errors",
    "ServeResult": "llmpq.runtime.launch",
    "serve": "llmpq.runtime.launch",
    "DatasetMetrics": "llmpq.runtime.metrics",
    "ServeMetrics": "llmpq.runtime.metrics",
    "Prompt": "llmpq.runtime.prompts",
    "Sampling": "llmpq.runtime.sampling",
}

if TYPE_CHECKING:
    from llmpq.errors import ServeFailed
    from llmpq.runtime.dataset import DatasetResult, serve_dataset
    from llmpq.runtime.launch import Output, ServeResult, serve
    from llmpq.runtime.metrics import DatasetMetrics, ServeMetrics
    from llmpq.runtime.prompts import Prompt
    from llmpq.runtime.sampling import Sampling


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


__all__ = [
    "DatasetMetrics", "DatasetResult", "Output", "Prompt", "Sampling", "ServeFailed",
    "ServeMetrics", "ServeResult", "serve", "serve_dataset",
]  # fmt: skip
