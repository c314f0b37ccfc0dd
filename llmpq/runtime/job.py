"""What the launcher hands every stage process: one folder with the job, the inputs, the reports.

Usage::

    from llmpq.runtime.job import Job, StageJob, JobDir

    jd = JobDir.create(out_dir)                    # out_dir/.serve-XXXX
    jd.write(job, input_ids, attention_mask)       # job.json, inputs.pt
    job, ids, mask = jd.read()                     # in each worker
    jd.write_status(rank, "failed", error="...")   # status-<rank>.json: started|done|failed|...
    jd.write_report(rank, report)                  # stage-<rank>.json (+ tokens.pt on stage 0)

Every file is written atomically; the launcher reads the statuses to name a stage that failed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from llmpq.files import write_json_atomic
from llmpq.plan import Plan
from llmpq.runtime.sampling import Sampling


@dataclass(frozen=True)
class StageJob:
    """One stage's device, CPU threads (None: leave as is), memory budget (None: unchecked) and
    host."""

    device: str
    threads: int | None = None
    budget_bytes: int | None = None
    host: str | None = None  # the cluster file's host (the node that runs it)


@dataclass(frozen=True)
class Fault:
    """Test hook: stage ``stage`` kills itself (SIGKILL) or hangs (SIGSTOP) before its
    ``after_sends``-th send."""

    stage: int
    action: str  # "kill" | "hang"
    after_sends: int = 1


@dataclass(frozen=True)
class DatasetJob:
    """A dataset run: where the tokenized requests are and where stage 0 writes the outputs."""

    requests: str  # tokenized requests JSONL (llmpq.runtime.requests.prepare_requests)
    outputs: str  # outputs.jsonl, appended as requests finish
    output_format: str  # "llmpq" or "openai"
    model_name: str  # what OpenAI output lines name as the model
    max_prompt_len: int  # the longest prompt (frame sizes)
    max_context_len: int  # the longest prompt + output limit (the memory check)
    refill: bool = True  # False: one batch at a time
    progress: str | None = None  # progress.json, rewritten by stage 0 as requests finish


@dataclass(frozen=True)
class Job:
    plan: dict[str, Any]  # Plan.to_dict()
    model_dir: str
    stages: tuple[StageJob, ...]
    gen_len: int
    sampling: Sampling = Sampling()
    eos_ids: tuple[int, ...] = ()
    pad_id: int = 0
    quantized: str | None = None  # a pre-quantized artefact (QuantizedModel file)
    group_size: int = 128  # on-the-fly RTN group size for 3/4-bit layers
    stage_timeout_s: float = 30.0  # a receive waiting longer means the sender died or hangs
    load_timeout_s: float = 600.0  # all stages loaded (the barrier before the run)
    fault: Fault | None = None
    ring: str = "auto"  # the stages' transport: auto, sockets or dist (see RINGS)
    dataset: DatasetJob | None = None  # a dataset run (llmpq.runtime.continuous); else one batch

    @property
    def plan_obj(self) -> Plan:
        return Plan.from_dict(self.plan)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        data = dict(data)
        data["stages"] = tuple(StageJob(**s) for s in data["stages"])
        data["sampling"] = Sampling(**data["sampling"])
        data["eos_ids"] = tuple(data["eos_ids"])
        data["fault"] = Fault(**data["fault"]) if data.get("fault") else None
        data["dataset"] = DatasetJob(**data["dataset"]) if data.get("dataset") else None
        return cls(**data)


@dataclass(frozen=True)
class JobDir:
    path: Path

    @classmethod
    def create(cls, parent: str | Path, path: Path | None = None) -> JobDir:
        """A new job folder in ``parent``; ``path``: that one, named for a multi-node run (what
        an earlier run left there is removed first)."""
        Path(parent).mkdir(parents=True, exist_ok=True)
        if path is None:
            return cls(Path(tempfile.mkdtemp(prefix=".serve-", dir=parent)))
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir()
        return cls(path)

    def write(self, job: Job, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
        self._save({"input_ids": input_ids, "attention_mask": attention_mask}, "inputs.pt")
        write_json_atomic(self.path / "job.json", job.to_dict())

    def write_job(self, job: Job) -> None:
        """A dataset job: its requests are a file of their own (``DatasetJob.requests``)."""
        write_json_atomic(self.path / "job.json", job.to_dict())

    def read(self) -> tuple[Job, torch.Tensor | None, torch.Tensor | None]:
        job = Job.from_dict(json.loads((self.path / "job.json").read_text()))
        if job.dataset is not None:
            return job, None, None
        inputs = torch.load(self.path / "inputs.pt")
        return job, inputs["input_ids"], inputs["attention_mask"]

    def _save(self, obj: Any, name: str) -> None:
        tmp = self.path / f".{name}.{os.getpid()}.tmp"
        torch.save(obj, tmp)
        os.replace(tmp, self.path / name)

    def write_status(self, rank: int, state: str, **info: Any) -> None:
        """The calling process's state, with its pid and host (the launcher kills by pid)."""
        me = {"pid": os.getpid(), "host": os.uname().nodename}
        write_json_atomic(self.path / f"status-{rank}.json", {"state": state, **me, **info})

    def statuses(self, world: int) -> dict[int, dict | None]:
        out: dict[int, dict | None] = {}
        for rank in range(world):
            path = self.path / f"status-{rank}.json"
            out[rank] = json.loads(path.read_text()) if path.is_file() else None
        return out

    def write_report(self, rank: int, report: dict[str, Any], tokens=None) -> None:
        if tokens is not None:
            self._save(tokens, "tokens.pt")
        write_json_atomic(self.path / f"stage-{rank}.json", report)

    def reports(self, world: int) -> list[dict[str, Any]]:
        return [json.loads((self.path / f"stage-{r}.json").read_text()) for r in range(world)]

    def tokens(self) -> dict[str, Any]:
        return torch.load(self.path / "tokens.pt")

    @property
    def log(self) -> Path:
        return self.path / "torchrun.log"
