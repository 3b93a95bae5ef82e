"""Instruction data formats, detected per line and normalised.

Supported (JSONL, one example per line):
- OpenAI chat fine-tuning: {"messages": [{"role", "content"}, ...]} (optional system first)
- prompt/completion:       {"prompt": "...", "completion": "..."}
- Alpaca:                  {"instruction": "...", "input": "...", "output": "..."}
- preference pairs:        {"prompt": "...", "chosen": "...", "rejected": "..."}

SFT examples normalise to {"messages": [...]}; preference pairs to {"prompt", "chosen",
"rejected"} with string values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.errors import TrainingError

ROLES = {"system", "user", "assistant"}


@dataclass
class Loaded:
    """What a file held: normalised examples, their kind, and rejected lines with reasons."""

    sft: list[dict[str, Any]] = field(default_factory=list)
    preference: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[tuple[str, int, str]] = field(default_factory=list)  # (file, line, reason)


def detect(record: dict[str, Any]) -> str:
    if "messages" in record:
        return "chat"
    if {"prompt", "chosen", "rejected"} <= record.keys():
        return "preference"
    if {"prompt", "completion"} <= record.keys():
        return "prompt_completion"
    if {"instruction", "output"} <= record.keys():
        return "alpaca"
    raise ValueError(
        "unknown format: expected 'messages', 'prompt'+'completion', 'instruction'+'output' or "
        "'prompt'+'chosen'+'rejected'"
    )


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"'{name}' must be a string")
    return value


def normalise(record: Any) -> tuple[str, dict[str, Any]]:
    """(kind, normalised example); kind is 'sft' or 'preference'. Raises ValueError."""
    if not isinstance(record, dict):
        raise ValueError("each line must be a JSON object")
    kind = detect(record)
    if kind == "chat":
        messages = record["messages"]
        if not isinstance(messages, list) or not messages:
            raise ValueError("'messages' must be a non-empty list")
        out = []
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in ROLES:
                raise ValueError(f"message {i} needs a role in {sorted(ROLES)}")
            out.append(
                {"role": m["role"], "content": _text(m.get("content"), f"messages[{i}].content")}
            )
        return "sft", {"messages": out}
    if kind == "preference":
        return "preference", {
            "prompt": _text(record["prompt"], "prompt"),
            "chosen": _text(record["chosen"], "chosen"),
            "rejected": _text(record["rejected"], "rejected"),
        }
    if kind == "prompt_completion":
        prompt, completion = (
            _text(record["prompt"], "prompt"),
            _text(record["completion"], "completion"),
        )
    else:
        instruction = _text(record["instruction"], "instruction")
        extra = _text(record.get("input") or "", "input")
        prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        completion = _text(record["output"], "output")
    return "sft", {"messages": [{"role": "user", "content": prompt},
                                {"role": "assistant", "content": completion}]}  # fmt: skip


def load_jsonl(path: Path) -> Loaded:
    """Read one file; malformed lines are rejected with their line number, not fatal."""
    if not path.is_file():
        raise TrainingError(f"{path} does not exist", "file_not_found", 404)
    out = Loaded()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise TrainingError(f"{path} is not UTF-8 text (expected JSONL)", "invalid_file") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            kind, example = normalise(json.loads(line))
        except json.JSONDecodeError as exc:
            out.rejected.append((str(path), lineno, f"invalid JSON: {exc.msg}"))
            continue
        except ValueError as exc:
            out.rejected.append((str(path), lineno, str(exc)))
            continue
        (out.sft if kind == "sft" else out.preference).append(example)
    return out


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
