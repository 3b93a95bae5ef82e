"""Exemplar files: plain lines, a JSON list, or JSONL with `prompt` or `messages`."""

from __future__ import annotations

import json

import pytest

from serve.admin.adapters import read_exemplars
from serve.errors import ServiceError


def test_plain_lines_and_json_list() -> None:
    assert read_exemplars("Extract the order\n\n  Parse this email \n") == [
        "Extract the order",
        "Parse this email",
    ]
    assert read_exemplars('["a", "b"]') == ["a", "b"]
    assert read_exemplars("") == []


def test_jsonl_with_prompt_or_messages_is_parsed_not_embedded_raw() -> None:
    lines = [
        {"prompt": "Extract the order from: two mugs", "completion": "{}"},
        {
            "messages": [
                {"role": "system", "content": "be terse"},
                {"role": "user", "content": "Triage: printer jam"},
                {"role": "assistant", "content": "hardware, low"},
            ]
        },  # fmt: skip
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "Summarise notes"}]}]},
    ]
    text = "\n".join(json.dumps(x) for x in lines)
    assert read_exemplars(text) == [
        "Extract the order from: two mugs",
        "Triage: printer jam",
        "Summarise notes",
    ]
    assert read_exemplars(json.dumps(lines)) == read_exemplars(text)  # a JSON list of objects


def test_bad_lines_name_the_line() -> None:
    with pytest.raises(ServiceError, match="line 2 has no prompt"):
        read_exemplars('{"prompt": "ok"}\n{"completion": "no prompt"}')
    with pytest.raises(ServiceError, match="line 2 is not valid JSON"):
        read_exemplars('{"prompt": "ok"}\n{"prompt": ')
