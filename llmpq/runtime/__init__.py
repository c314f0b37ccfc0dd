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

from llmpq.runtime.dataset import DatasetResult, serve_dataset
from llmpq.runtime.launch import Output, ServeFailed, ServeResult, serve
from llmpq.runtime.metrics import DatasetMetrics, ServeMetrics
from llmpq.runtime.prompts import Prompt
from llmpq.runtime.sampling import Sampling

__all__ = [
    "DatasetMetrics", "DatasetResult", "Output", "Prompt", "Sampling", "ServeFailed",
    "ServeMetrics", "ServeResult", "serve", "serve_dataset",
]  # fmt: skip
