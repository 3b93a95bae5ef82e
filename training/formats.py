"""Instruction data formats, detected per file and normalised.

Supported (JSONL, one example per line):
- OpenAI chat fine-tuning: {"messages": [{"role", "content"}, ...]} (optional system first)
- prompt/completion:       {"prompt": "...", "completion": "..."}
- Alpaca:                  {"instruction": "...", "input": "...", "output": "..."}
- preference pairs:        {"prompt": "...", "chosen": "...", "rejected": "..."}

A file's format is the format of its first valid JSON object; every later line must have the
same format (a mixed file is almost always a concatenation mistake). Malformed lines are
rejected with their line number and a reason; a file whose first object matches no format is an
error. SFT examples normalise to {"messages": [...]}; preference pairs to {"prompt", "chosen",
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
    """What a file held: its format, normalised examples, and rejected lines with reasons."""

    format: str | None = None  # chat, prompt_completion, alpaca or preference
    sft: list[dict[str, Any]] = field(default_factory=list)
    preference: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[tuple[str, int, str]] = field(default_factory=list)  # (file, line, reason)


def detect(record: dict[str, Any]) -> str:
    """The format of one JSON object; ValueError naming the accepted shapes if none fits."""
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


def normalise(
    record: Any, expected: str | None = None, require_answer: bool = False
) -> tuple[str, dict[str, Any]]:
    """(kind, normalised example); kind is 'sft' or 'preference'. Raises ValueError.

    With `expected` (the file's format), a record of another format is rejected; with
    `require_answer`, a chat record without an assistant message is.
    """
    if not isinstance(record, dict):
        raise ValueError("each line must be a JSON object")
    kind = detect(record)
    if expected is not None and kind != expected:
        raise ValueError(f"line is {kind} but the file is {expected} (one format per file)")
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
        if require_answer and not any(m["role"] == "assistant" for m in out):
            raise ValueError("no assistant message: nothing to train or score on")
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


def load_jsonl(path: Path, require_answer: bool = False) -> Loaded:
    """Read one file; malformed lines are rejected with their line number, not fatal.

    With `require_answer`, a chat line without an assistant message counts as malformed.

    Raises TrainingError when the file is missing, not UTF-8, or its first JSON object matches
    no known format (the whole file would be rejected: say so at once).
    """
    if not path.is_file():
        raise TrainingError(f"{path} does not exist", "file_not_found", "not_found")
    out = Loaded()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise TrainingError(f"{path} is not UTF-8 text (expected JSONL)", "invalid_file") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            out.rejected.append((str(path), lineno, f"invalid JSON: {exc.msg}"))
            continue
        if out.format is None and isinstance(record, dict):
            try:
                out.format = detect(record)
            except ValueError as exc:
                raise TrainingError(
                    f"{path}:{lineno}: {exc}; got keys {sorted(record)}", "unknown_format"
                ) from None
        try:
            kind, example = normalise(record, out.format, require_answer)
        except ValueError as exc:
            out.rejected.append((str(path), lineno, str(exc)))
            continue
        (out.sft if kind == "sft" else out.preference).append(example)
    return out


def rejection_summary(rejected: list[tuple[str, int, str]]) -> dict[str, int]:
    """Rejected lines counted by reason (the part before the first colon)."""
    counts: dict[str, int] = {}
    for _, _, reason in rejected:
        key = reason.split(":")[0]
        counts[key] = counts.get(key, 0) + 1
    return counts


def read_examples(path: Path) -> list[dict[str, Any]]:
    """A prepared split file; any malformed line, or a chat line without an assistant answer,
    is an error naming its line number."""
    loaded = load_jsonl(path, require_answer=True)
    if loaded.rejected:
        file, line, reason = loaded.rejected[0]
        raise TrainingError(
            f"{file}:{line}: {reason} ({len(loaded.rejected)} bad lines): prepare the data with "
            "`loraplex data prepare`",
            "invalid_dataset",
        )
    return loaded.sft or loaded.preference


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """One JSON object per line, UTF-8."""
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every line of a JSONL file, parsed (no validation)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def to_prompt_completion(example: dict[str, Any]) -> dict[str, Any]:
    """Chat example to conversational prompt (all turns before the last answer) + completion."""
    msgs = example["messages"]
    last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
    return {"prompt": msgs[:last], "completion": [msgs[last]]}
