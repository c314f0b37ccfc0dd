"""Request files (llmpq JSONL and OpenAI batch) in, output lines out, resume bookkeeping."""

from __future__ import annotations

import json
import re

import pytest

from llmpq.errors import UserError
from llmpq.runtime import requests as rq
from llmpq.runtime.outputs import OutputLog, answered_ids
from llmpq.runtime.requests import RequestLimits, iter_requests, prepare_requests
from llmpq.runtime.sampling import Sampling

LIMITS = RequestLimits(64, 8, frozenset({"tiny"}), Sampling())
TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<assistant>{% endif %}")  # fmt: skip


@pytest.fixture(scope="module")
def tokenizer(tiny_default):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_default)
    tok.chat_template = TEMPLATE
    return tok


def _write(tmp_path, rows) -> str:
    path = tmp_path / "in.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def test_llmpq_lines_with_their_own_limits_and_sampling(tmp_path, tokenizer):
    path = _write(tmp_path, [
        {"id": "a", "prompt": "def f():"},
        "",
        {"id": 7, "token_ids": [5, 6, 7], "max_new_tokens": 3, "temperature": 0.5, "seed": 2},
    ])  # fmt: skip
    s = prepare_requests(path, tokenizer, LIMITS, tmp_path / "req.jsonl")
    assert s.format == rq.LLMPQ and s.count == 2 and s.skipped == 0
    a, b = list(iter_requests(s.path))
    assert a.id == "a" and a.token_ids == tuple(tokenizer("def f():")["input_ids"])
    assert a.max_new_tokens == 8 and a.sampling == Sampling() and a.index == 0
    assert (b.id, b.token_ids, b.max_new_tokens, b.index) == ("7", (5, 6, 7), 3, 2)
    assert b.sampling == Sampling(0.5, 1.0, 2)
    assert list(s.prompt_lens) == [len(a.token_ids), 3] and list(s.max_new_tokens) == [8, 3]


def test_openai_batch_chat_and_completion(tmp_path, tokenizer):
    msgs = [{"role": "user", "content": "hi"}]
    path = _write(tmp_path, [
        {"custom_id": "c1", "method": "POST", "url": rq.CHAT,
         "body": {"model": "tiny", "messages": msgs, "max_completion_tokens": 4, "top_p": 0.9}},
        {"custom_id": "c2", "url": rq.COMPLETION, "body": {"prompt": "x = ", "max_tokens": 2}},
    ])  # fmt: skip
    s = prepare_requests(path, tokenizer, LIMITS, tmp_path / "req.jsonl", skip_ids={"c2"})
    assert s.format == rq.OPENAI and s.count == 1 and s.skipped == 1
    (c1,) = iter_requests(s.path)
    rendered = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert rendered == "<user>hi\n<assistant>"
    assert c1.token_ids == tuple(tokenizer(rendered, add_special_tokens=False)["input_ids"])
    assert c1.url == rq.CHAT and c1.max_new_tokens == 4 and c1.sampling.top_p == 0.9


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}], "line 2: id = 'a' repeats line 1"),
        ([{"id": "a", "token_ids": list(range(3, 70))}], "line 1: prompt = '67 tokens + 8 new' "
         "exceeds the model's positions"),
        (["{not json"], "line 1: line = '{not json' is not JSON"),
        ([{"prompt": "x"}], "line 1: id = None is missing"),
        ([{"id": "a", "prompt": "x", "max_new_tokens": 0}], "line 1: max_new_tokens = 0"),
        ([{"id": "a", "prompt": "x", "temperature": -1}], "line 1: temperature = -1.0"),
        ([{"id": "a", "prompt": "x", "colour": 1}], "line 1: colour = 1 is unknown"),
        ([{"id": "a", "token_ids": []}], "line 1: prompt = '' has no tokens"),
        ([{"custom_id": "a", "body": {"model": "gpt-4", "prompt": "x"}}],
         "line 1: body.model = 'gpt-4' is not the model served; use 'tiny'"),
        ([{"custom_id": "a", "url": "/v1/embeddings", "body": {}}], "line 1: url = '/v1/embed"),
        ([{"custom_id": "a", "body": {"max_tokens": 3}}], "line 1: body = '(no prompt)'"),
    ],
)  # fmt: skip
def test_a_bad_line_is_named_and_nothing_is_written(tmp_path, tokenizer, rows, expected):
    path = _write(tmp_path, rows)
    with pytest.raises(UserError, match=re.escape("in.jsonl " + expected)):
        prepare_requests(path, tokenizer, LIMITS, tmp_path / "req.jsonl")
    assert list(tmp_path.iterdir()) == [tmp_path / "in.jsonl"]  # no output, no temporary


def test_empty_and_missing_files(tmp_path, tokenizer):
    with pytest.raises(UserError, match="is empty"):
        prepare_requests(_write(tmp_path, ["", " "]), tokenizer, LIMITS, tmp_path / "r.jsonl")
    with pytest.raises(UserError, match="does not exist"):
        prepare_requests(tmp_path / "no.jsonl", tokenizer, LIMITS, tmp_path / "r.jsonl")


def test_output_lines_in_either_form_and_a_torn_end_repaired(tmp_path, tokenizer):
    (a,) = iter_requests(
        prepare_requests(
            _write(tmp_path, [{"id": "a", "token_ids": [5, 6]}]),
            tokenizer,
            LIMITS,
            tmp_path / "r.jsonl",
        ).path
    )
    chat = {
        "custom_id": "b",
        "url": rq.CHAT,
        "body": {"messages": [{"role": "user", "content": "x"}]},
    }
    (b,) = iter_requests(
        prepare_requests(_write(tmp_path, [chat]), tokenizer, LIMITS, tmp_path / "r.jsonl").path
    )
    out = tmp_path / "outputs.jsonl"
    with OutputLog(out, rq.LLMPQ, "tiny") as log:
        log.write(a, [9, 2], "ab", "stop")
    with OutputLog(out, rq.OPENAI, "tiny") as log:
        log.write(b, [4], "c", "length")
    first, second = map(json.loads, out.read_text().splitlines())
    assert first == {"id": "a", "text": "ab", "token_ids": [9, 2], "finish_reason": "stop",
                     "prompt_tokens": 2}  # fmt: skip
    assert second["custom_id"] == "b" and second["error"] is None
    body = second["response"]["body"]
    assert second["response"]["status_code"] == 200 and body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "c"}
    assert body["choices"][0]["finish_reason"] == "length" and body["model"] == "tiny"
    assert body["usage"] == {"prompt_tokens": len(b.token_ids), "completion_tokens": 1,
                             "total_tokens": len(b.token_ids) + 1}  # fmt: skip
    with open(out, "a") as f:
        f.write('{"id": "c", "te')  # a torn write
    assert answered_ids(out) == {"a", "b"}
    assert out.read_text().endswith("\n") and len(out.read_text().splitlines()) == 2
    assert answered_ids(tmp_path / "none.jsonl") == set()
    out.write_text("garbage\n")
    with pytest.raises(UserError, match="outputs.jsonl line 1"):
        answered_ids(out)
