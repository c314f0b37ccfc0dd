"""The example dataset: chat requests of varied lengths cut from text that ships with Python.

Usage::

    from llmpq.example_prompts import example_requests, write_example_requests

    lines = example_requests(300, seed=0)     # OpenAI batch request dicts
    write_example_requests("config/prompts/example_openai.jsonl", 300)

Each request asks the model to summarize, explain or continue a passage of one to eight
sentences of Python's own documentation (``pydoc_data.topics``, the text ``help()`` shows;
never from the topics the imported models' held-out perplexity text is made of), with an output limit of 16 to 96 tokens: prompt lengths from about 20 to 300
tokens, outputs that often end early at end-of-sequence. The shipped
``config/prompts/example_openai.jsonl`` is this function's output (a test keeps them equal).
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from llmpq.files import write_text_atomic

ASKS = (
    "Summarize this passage in one sentence:",
    "Explain what this passage means to a beginner:",
    "Continue this text:",
    "What is the main point of the following text?",
    "Rewrite this passage in plain words:",
)
LIMITS = (16, 32, 48, 64)


def _sentences() -> list[str]:
    from llmpq.models.corpus import SOURCES
    from llmpq.models.gguf import HELDOUT_MAX_CHARS, first_documents

    held_out = {d.text for d in first_documents("pydoc_topics", HELDOUT_MAX_CHARS)}
    text = " ".join(d.text for d in SOURCES["pydoc_topics"]() if d.text not in held_out)
    text = re.sub(r"\s+", " ", text)
    parts = re.split(r"(?<=[.!?]) (?=[A-Z])", text)
    return [p for p in parts if 40 <= len(p) <= 240 and p.count("*") < 3]


def example_requests(count: int, seed: int = 0, model: str | None = None) -> list[dict]:
    """``count`` OpenAI batch chat requests (``custom_id`` ``request-0``, ...)."""
    rng = random.Random(seed)
    sentences = _sentences()
    out = []
    for i in range(count):
        n = rng.choice((1, 1, 1, 2, 2, 3))
        start = rng.randrange(len(sentences) - n)
        passage = " ".join(sentences[start : start + n])
        body = {"messages": [{"role": "user", "content": f"{rng.choice(ASKS)}\n\n{passage}"}],
                "max_tokens": rng.choice(LIMITS)}  # fmt: skip
        if model:
            body["model"] = model
        out.append({"custom_id": f"request-{i}", "method": "POST",
                    "url": "/v1/chat/completions", "body": body})  # fmt: skip
    return out


def write_example_requests(path: str | Path, count: int, seed: int = 0) -> Path:
    lines = "".join(json.dumps(r) + "\n" for r in example_requests(count, seed))
    return write_text_atomic(path, lines)
