"""The requests of an offline job: read from our JSONL or an OpenAI batch file, checked, tokenized.

Usage::

    from llmpq.runtime.requests import prepare_requests, iter_requests, RequestLimits

    limits = RequestLimits(max_positions=8192, default_max_new_tokens=64, model_names={"m"})
    summary = prepare_requests("prompts.jsonl", tokenizer, limits, "job/requests.jsonl")
    summary.count, summary.format, summary.prompt_lens, summary.max_new_tokens
    for request in iter_requests("job/requests.jsonl"):      # lazily, one line at a time
        request.id, request.token_ids, request.max_new_tokens, request.sampling

Two input forms, told apart by the first line:

* **llmpq JSONL**: ``{"id", "prompt"}`` (or ``"token_ids"`` instead of the prompt), optional
  ``max_new_tokens``, ``temperature``, ``top_p``, ``seed``;
* **OpenAI batch file** as vLLM's ``run_batch`` reads it: ``{"custom_id", "method": "POST",
  "url": "/v1/chat/completions" | "/v1/completions", "body": {"model", "messages" | "prompt",
  "max_tokens" | "max_completion_tokens", "temperature", "top_p", "seed"}}``; ``messages`` are
  rendered with the tokenizer's chat template (with the generation prompt).

:func:`prepare_requests` reads the whole file once, before any work starts, and stops at the
first bad line with one line naming it (line number, field, value, fix): not JSON, no id or
prompt, a duplicate id, an empty prompt, a prompt whose tokens plus its output limit exceed the
model's positions, a ``body.model`` other than the one served, a bad sampling field. It writes
the tokenized requests, one per line, which the first stage reads lazily: the launcher never
holds the prompts in memory, and neither does the stage. ``skip_ids`` (``--resume``) leaves out
requests already answered.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llmpq.errors import UserError
from llmpq.runtime.sampling import Sampling

LLMPQ, OPENAI = "llmpq", "openai"
CHAT, COMPLETION = "/v1/chat/completions", "/v1/completions"
OWN_FIELDS = {"id", "prompt", "token_ids", "max_new_tokens", "temperature", "top_p", "seed"}


@dataclass(frozen=True)
class Request:
    """One prompt to serve, tokenized; ``index`` is its place in the file (seeds sampling)."""

    id: str
    index: int
    token_ids: tuple[int, ...]
    max_new_tokens: int
    sampling: Sampling = Sampling()
    url: str = ""  # OpenAI batch endpoint; empty for llmpq JSONL

    def to_dict(self) -> dict:
        s = self.sampling
        return {"id": self.id, "index": self.index, "token_ids": list(self.token_ids),
                "max_new_tokens": self.max_new_tokens, "temperature": s.temperature,
                "top_p": s.top_p, "seed": s.seed, "url": self.url}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict) -> Request:
        return cls(d["id"], d["index"], tuple(d["token_ids"]), d["max_new_tokens"],
                   Sampling(d["temperature"], d["top_p"], d["seed"]), d["url"])  # fmt: skip


@dataclass(frozen=True)
class RequestLimits:
    """What every request is checked against, and the defaults it gets."""

    max_positions: int | None  # the model's positions (prompt + output must fit)
    default_max_new_tokens: int
    model_names: frozenset[str] = frozenset()  # names body.model may use (empty: any)
    sampling: Sampling = Sampling()  # the run's default sampling


@dataclass(frozen=True, eq=False)
class RequestSummary:
    """What :func:`prepare_requests` read: the count, the form and the length distribution."""

    path: Path  # the tokenized requests (one JSON object per line)
    format: str  # LLMPQ or OPENAI
    count: int
    skipped: int  # already answered (resume)
    prompt_lens: np.ndarray = field(repr=False)  # tokens per prompt, in file order
    max_new_tokens: np.ndarray = field(repr=False)  # each request's output limit


def _bad(path: Path, n: int, name: str, value, fix: str, problem: str = "is not valid"):
    shown = value if not isinstance(value, str) or len(value) <= 60 else value[:57] + "..."
    return UserError(f"{path} line {n}: {name}", shown, fix, problem)


def _number(path, n, body: dict, name: str, kind, default):
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
        kind is int and not float(value).is_integer()
    ):  # fmt: skip
        raise _bad(path, n, name, value, f"use a {kind.__name__}")
    return kind(value)


def _sampling(path, n, body: dict, default: Sampling) -> Sampling:
    temperature = _number(path, n, body, "temperature", float, default.temperature)
    top_p = _number(path, n, body, "top_p", float, default.top_p)
    seed = _number(path, n, body, "seed", int, default.seed)
    try:
        return Sampling(temperature, top_p, seed)
    except UserError as err:
        raise _bad(path, n, err.field, err.value, err.fix) from None


def _chat_text(path, n, tokenizer, messages) -> str:
    if not isinstance(messages, list) or not messages or not all(
        isinstance(m, dict) and "role" in m and "content" in m for m in messages
    ):  # fmt: skip
        raise _bad(path, n, "body.messages", str(messages), 'give [{"role": ..., "content": ...}]')
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise _bad(path, n, "body.messages", "(chat)", "give body.prompt instead",
                   "needs a chat template: the model's tokenizer has none")  # fmt: skip
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _tokens(path, n, tokenizer, text: str, add_special: bool) -> list[int]:
    if tokenizer is None:
        raise _bad(path, n, "prompt", text, "give token_ids, or a model with a tokenizer",
                   "cannot be tokenized: the model directory has no tokenizer")  # fmt: skip
    return list(tokenizer(text, add_special_tokens=add_special)["input_ids"])


def _parse(path: Path, n: int, line: str, fmt: str, tokenizer, limits: RequestLimits, index: int):
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise _bad(path, n, "line", line, "write one JSON object per line",
                   f"is not JSON ({err.msg})") from None  # fmt: skip
    if not isinstance(row, dict):
        raise _bad(path, n, "line", line, "write one JSON object per line", "is not an object")
    if fmt == OPENAI:
        if "custom_id" not in row:
            raise _bad(path, n, "custom_id", None, "give every request a custom_id", "is missing")
        rid, url, body = str(row["custom_id"]), row.get("url", CHAT), row.get("body")
        if url not in (CHAT, COMPLETION):
            raise _bad(path, n, "url", url, f"use {CHAT} or {COMPLETION}")
        if not isinstance(body, dict):
            raise _bad(path, n, "body", body, "give the request body as an object")
        model = body.get("model")
        if model is not None and limits.model_names and str(model) not in limits.model_names:
            raise _bad(path, n, "body.model", model, f"use {sorted(limits.model_names)[0]!r} "
                       "(the model served) or leave it out", "is not the model served")  # fmt: skip
        if "messages" in body:
            ids = _tokens(path, n, tokenizer, _chat_text(path, n, tokenizer, body["messages"]),
                          add_special=False)  # fmt: skip
        elif isinstance(body.get("prompt"), str):
            ids = _tokens(path, n, tokenizer, body["prompt"], add_special=True)
        else:
            raise _bad(path, n, "body", "(no prompt)", "give body.messages or body.prompt",
                       "has no prompt")  # fmt: skip
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        name = "body.max_tokens"
    else:
        unknown = sorted(set(row) - OWN_FIELDS)
        if unknown:
            raise _bad(path, n, unknown[0], row[unknown[0]], f"use only {sorted(OWN_FIELDS)} "
                       "(the first line makes this an llmpq JSONL file; an OpenAI batch file "
                       "has custom_id on every line)", "is unknown")  # fmt: skip
        if "id" not in row:
            raise _bad(path, n, "id", None, 'give every prompt an "id"', "is missing")
        rid, url, body = str(row["id"]), "", row
        if row.get("token_ids") is not None:
            raw = row["token_ids"]
            if not isinstance(raw, list) or not all(
                isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in raw
            ):  # fmt: skip
                raise _bad(path, n, "token_ids", str(raw), "give a list of token ids")
            ids = raw
        elif isinstance(row.get("prompt"), str):
            ids = _tokens(path, n, tokenizer, row["prompt"], add_special=True)
        else:
            raise _bad(path, n, "prompt", row.get("prompt"), 'give "prompt": "..." text',
                       "is missing or not text")  # fmt: skip
        limit, name = row.get("max_new_tokens"), "max_new_tokens"
    if not ids:
        raise _bad(path, n, "prompt", "", "give a non-empty prompt", "has no tokens")
    if limit is None:
        limit = limits.default_max_new_tokens
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise _bad(path, n, name, limit, "use a positive integer")
    if limits.max_positions is not None and len(ids) + limit > limits.max_positions:
        raise _bad(path, n, "prompt", f"{len(ids)} tokens + {limit} new",
                   f"shorten it or its output limit to {limits.max_positions} positions in all",
                   "exceeds the model's positions")  # fmt: skip
    sampling = _sampling(path, n, body, limits.sampling)
    return Request(rid, index, tuple(int(t) for t in ids), int(limit), sampling, url)


def detect_format(path: str | Path) -> str:
    """OPENAI if the first non-empty line has a ``custom_id``, else LLMPQ."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    return LLMPQ  # the parse names the line
                return OPENAI if isinstance(row, dict) and "custom_id" in row else LLMPQ
    return LLMPQ


def prepare_requests(
    path: str | Path,
    tokenizer,
    limits: RequestLimits,
    out_path: str | Path,
    skip_ids: frozenset[str] | set[str] = frozenset(),
) -> RequestSummary:
    """Check and tokenize every request of ``path`` into ``out_path`` (JSONL, written to a
    temporary name and renamed: never half-written); the first bad line raises UserError."""
    path, out_path = Path(path), Path(out_path)
    if not path.is_file():
        raise UserError("prompts file", str(path), "check the path", problem="does not exist")
    fmt = detect_format(path)
    seen: dict[str, int] = {}
    lens, limits_out, skipped = [], [], 0
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    try:
        with open(path, encoding="utf-8") as src, open(tmp, "w", encoding="utf-8") as dst:
            for n, line in enumerate(src, start=1):
                if not line.strip():
                    continue
                request = _parse(path, n, line.rstrip("\n"), fmt, tokenizer, limits, n - 1)
                if request.id in seen:
                    raise _bad(path, n, "id", request.id, "give every request its own id",
                               f"repeats line {seen[request.id]}'s")  # fmt: skip
                seen[request.id] = n
                if request.id in skip_ids:
                    skipped += 1
                    continue
                dst.write(json.dumps(request.to_dict()) + "\n")
                lens.append(len(request.token_ids))
                limits_out.append(request.max_new_tokens)
        if not seen:
            raise UserError("prompts file", str(path), "give at least one prompt", "is empty")
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return RequestSummary(out_path, fmt, len(lens), skipped, np.array(lens, dtype=np.int64),
                          np.array(limits_out, dtype=np.int64))  # fmt: skip


def iter_requests(path: str | Path) -> Iterator[Request]:
    """The tokenized requests of :func:`prepare_requests`, one line at a time."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield Request.from_dict(json.loads(line))


def first_requests(path: str | Path, out_path: str | Path, count: int) -> Path:
    """The first ``count`` non-empty lines of a requests file (0: all), written atomically."""
    from llmpq.files import write_text_atomic

    lines = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if count and len(lines) == count:
                break
            if line.strip():
                lines.append(line.rstrip("\n") + "\n")
    return write_text_atomic(out_path, "".join(lines))
