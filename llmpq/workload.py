"""The batch job to finish: how many prompts, how long they are, how many tokens to generate.

Usage::

    from llmpq.workload import Workload, load_workload

    w = load_workload("config/workloads/default.yaml")   # batch_size, prompt_len, gen_len
    w = Workload(batch_size=32, prompt_len=512, gen_len=100)
    w.generated_tokens, w.max_context_len

Prompts are padded (left) to ``prompt_len``; every sequence generates ``gen_len`` tokens.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from llmpq.errors import UserError
from llmpq.files import load_yaml_mapping, write_yaml_atomic

WORKLOAD_FIELDS = ("batch_size", "prompt_len", "gen_len")


@dataclass(frozen=True)
class Workload:
    batch_size: int  # prompts in the batch
    prompt_len: int  # tokens per prompt (after padding)
    gen_len: int  # tokens generated per prompt
    name: str = "workload"

    def __post_init__(self) -> None:
        for field_name in WORKLOAD_FIELDS:
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise UserError(
                    f"workload.{field_name}",
                    value,
                    "use a positive integer (e.g. batch_size: 32, prompt_len: 512, gen_len: 100)",
                    problem="is not a positive integer",
                )

    @property
    def generated_tokens(self) -> int:
        return self.batch_size * self.gen_len

    @property
    def max_context_len(self) -> int:
        """Tokens held in the KV cache per sequence at the last step."""
        return self.prompt_len + self.gen_len

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], default_name: str = "workload") -> Workload:
        unknown = sorted(set(data) - {*WORKLOAD_FIELDS, "name"})
        if unknown:
            raise UserError(
                "workload key", unknown[0], f"use only {', '.join(WORKLOAD_FIELDS)} and name",
                problem="is unknown",
            )  # fmt: skip
        for field_name in WORKLOAD_FIELDS:
            if field_name not in data:
                raise UserError(
                    f"workload.{field_name}", None, "add it as a positive integer", "is missing"
                )
        name = str(data.get("name", default_name))
        return cls(**{f: data[f] for f in WORKLOAD_FIELDS}, name=name)


def load_workload(path: str | Path) -> Workload:
    """Read and validate a workload YAML file (named after the file unless it sets ``name``)."""
    return Workload.from_dict(load_yaml_mapping(path, "workload"), default_name=Path(path).stem)


def save_workload(workload: Workload, path: str | Path) -> Path:
    return write_yaml_atomic(path, workload.to_dict())
