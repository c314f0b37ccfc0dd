"""``outputs.jsonl`` of a dataset run: one line per finished request, appended as it finishes.

Usage::

    from llmpq.runtime.outputs import OutputLog, answered_ids

    done = answered_ids("out/outputs.jsonl")       # ids already there (resume); repairs a torn end
    with OutputLog("out/outputs.jsonl", fmt="llmpq", model="smollm2-135m") as log:
        log.write(request, token_ids=(12, 7, 2), text="...", finish_reason="stop")

Line forms, matching the input's (:mod:`llmpq.runtime.requests`):

* llmpq: ``{"id", "text", "token_ids", "finish_reason", "prompt_tokens"}``;
* OpenAI batch output as vLLM's ``run_batch`` writes it: ``{"id", "custom_id", "response":
  {"status_code": 200, "request_id", "body": {"id", "object", "created", "model", "choices":
  [{"index": 0, "message": {"role": "assistant", "content"} | "text", "finish_reason"}],
  "usage": {"prompt_tokens", "completion_tokens", "total_tokens"}}}, "error": null}``.

``finish_reason``: ``stop`` (an end-of-sequence token, kept in ``token_ids``) or ``length`` (the
request's output limit). Each line goes out in one ``write`` of the whole line and is flushed at
once, so a killed run leaves whole lines only; should a crash of the file system still leave a
partial last line, :func:`answered_ids` cuts it off before resuming.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

from llmpq.errors import UserError
from llmpq.runtime.requests import CHAT, LLMPQ, OPENAI, Request


def output_line(request: Request, token_ids, text: str, finish_reason: str, fmt: str,
                model: str) -> dict:  # fmt: skip
    """The output record of one finished request in form ``fmt``."""
    if fmt == LLMPQ:
        return {"id": request.id, "text": text, "token_ids": list(token_ids),
                "finish_reason": finish_reason, "prompt_tokens": len(request.token_ids)}  # fmt: skip
    chat = request.url == CHAT
    choice = {"index": 0, "finish_reason": finish_reason}
    choice |= {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
    prompt, completion = len(request.token_ids), len(token_ids)
    body = {
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()), "model": model, "choices": [choice],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion},
    }  # fmt: skip
    return {
        "id": f"llmpq-{uuid.uuid4().hex}", "custom_id": request.id,
        "response": {"status_code": 200, "request_id": f"llmpq-batch-{uuid.uuid4().hex}",
                     "body": body},
        "error": None,
    }  # fmt: skip


class OutputLog:
    """Appends finished requests to ``path``, one flushed line each."""

    def __init__(self, path: str | Path, fmt: str, model: str) -> None:
        if fmt not in (LLMPQ, OPENAI):
            raise ValueError(f"unknown output form {fmt!r}")
        self.path, self.fmt, self.model = Path(path), fmt, model
        self.file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self.lines = 0

    def write(self, request: Request, token_ids, text: str, finish_reason: str) -> None:
        record = output_line(request, token_ids, text, finish_reason, self.fmt, self.model)
        self.file.write(json.dumps(record, ensure_ascii=False) + "\n")  # one write: whole lines
        self.file.flush()
        self.lines += 1

    def close(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()

    def __enter__(self) -> OutputLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def answered_ids(path: str | Path) -> set[str]:
    """Ids of the requests ``path`` already answers (either form); a last line without its
    newline (a torn write) is cut off first. A missing file answers none."""
    path = Path(path)
    if not path.is_file():
        return set()
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):  # a torn last line: drop it, its request is served again
        with open(path, "r+b") as f:
            f.truncate(end)
    ids = set()
    for n, line in enumerate(data[:end].decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            ids.add(str(row["custom_id"] if "custom_id" in row else row["id"]))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise UserError(f"{path} line {n}", line[:60], "remove the line or serve to a new "
                            "--out", f"is not an output line ({err})") from None  # fmt: skip
    return ids
