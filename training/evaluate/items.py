"""Checkable questions: the per-path questions file, the general-ability set, and their scoring.

One item shape serves both (JSONL, one object a line):

    {"id": "q1", "question": "...", "answer": "Paris"}
    {"question": "...", "any_of": ["Paris", "Paris, France"]}
    {"question": "...", "json": {"sku": "A-1", "qty": 2}}
    {"question": "...", "regex": "^\\s*\\d+\\s*$"}
    {"question": "...", "rule": "uppercase"}            or {"rule": {"name": "max_words", "n": 3}}
    {"question": "...", "messages": [...earlier turns...], "answer": "..."}

`answer`, `any_of` and `json` exclude each other; `regex` and `rule` may join any of them (all
given checks must pass). `messages` are the turns before the question (multi-turn); `category`
groups items in reports (the general set's categories: arithmetic, facts, ...). A chat example
(`{"messages": [..., {"role": "assistant", ...}]}`) is read as its last user turn with the
assistant's answer. Every malformed line is reported, by number, before anything is generated.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.errors import TrainingError
from training.evaluate.metrics import normalise, parse_json, token_f1

ROLES = ("system", "user", "assistant")
ANSWER_KEYS = ("answer", "any_of", "json")
KNOWN_KEYS = {"id", "question", "messages", "category", *ANSWER_KEYS, "regex", "rule"}
MAX_REPORTED = 20  # bad lines listed in one error; the count says how many more
_WORD = re.compile(r"[A-Za-z0-9][\w'’-]*")


@dataclass
class Item:
    """One checkable question."""

    id: str
    question: str
    category: str = "user"
    messages: list[dict[str, str]] = field(default_factory=list)  # turns before the question
    answer: str | None = None
    any_of: list[str] | None = None
    json: Any = None
    has_json: bool = False  # `json: null` is a valid expectation, so presence is tracked apart
    regex: re.Pattern[str] | None = None
    rule: tuple[str, dict[str, Any]] | None = None

    def conversation(self) -> list[dict[str, str]]:
        """The chat sent to the model: earlier turns, then the question as the user turn."""
        return [*self.messages, {"role": "user", "content": self.question}]

    def reference(self) -> str | None:
        """A text form of the expected answer (for reports and partial credit), if any."""
        if self.answer is not None:
            return self.answer
        if self.any_of:
            return self.any_of[0]
        if self.has_json:
            return json.dumps(self.json)
        return None

    def describe(self) -> str:
        """What a right answer looks like, in words (reports show it as the expectation)."""
        parts = [self.reference() or ""]
        if self.any_of and len(self.any_of) > 1:
            parts = [" | ".join(self.any_of)]
        if self.regex is not None:
            parts.append(f"matches /{self.regex.pattern}/")
        if self.rule is not None:
            name, params = self.rule
            parts.append(f"rule {name}" + (f" {json.dumps(params)}" if params else ""))
        return "; ".join(p for p in parts if p)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as it would be written in a questions file."""
        out: dict[str, Any] = {"id": self.id, "category": self.category, "question": self.question}
        if self.messages:
            out["messages"] = self.messages
        if self.answer is not None:
            out["answer"] = self.answer
        if self.any_of is not None:
            out["any_of"] = self.any_of
        if self.has_json:
            out["json"] = self.json
        if self.regex is not None:
            out["regex"] = self.regex.pattern
        if self.rule is not None:
            name, params = self.rule
            out["rule"] = {"name": name, **params} if params else name
        return out


# --- rules: instruction-following checks that need no reference answer -------------------------


def _words(text: str) -> list[str]:
    return _WORD.findall(text)


def _letters(text: str) -> str:
    return "".join(c for c in text if c.isalpha())


def _number(text: str) -> float | None:
    stripped = text.strip().rstrip(".").replace(",", "")
    try:
        return float(stripped)
    except ValueError:
        return None


RULES: dict[str, tuple[Callable[[str, dict[str, Any]], bool], dict[str, type]]] = {
    "uppercase": (lambda a, p: bool(_letters(a)) and _letters(a).isupper(), {}),
    "lowercase": (lambda a, p: bool(_letters(a)) and _letters(a).islower(), {}),
    "one_word": (lambda a, p: len(_words(a)) == 1, {}),
    "max_words": (lambda a, p: 0 < len(_words(a)) <= p["n"], {"n": int}),
    "starts_with": (lambda a, p: a.strip().lower().startswith(p["text"].lower()), {"text": str}),
    "ends_with": (
        lambda a, p: a.strip().rstrip(".!").lower().endswith(p["text"].lower()),
        {"text": str},
    ),
    "contains": (lambda a, p: p["text"].lower() in a.lower(), {"text": str}),
    "not_contains": (lambda a, p: p["text"].lower() not in a.lower(), {"text": str}),
    "number": (
        lambda a, p: (n := _number(a)) is not None and ("value" not in p or n == p["value"]),
        {},
    ),
    "json_object": (
        lambda a, p: (
            (v := parse_json(a))[0]
            and isinstance(v[1], dict)
            and ("keys" not in p or set(v[1]) == set(p["keys"]))
        ),
        {},
    ),
    "lines": (
        lambda a, p: len([x for x in a.strip().splitlines() if x.strip()]) == p["n"],
        {"n": int},
    ),
}


def _parse_rule(value: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(value, str):
        name, params = value, {}
    elif isinstance(value, dict) and isinstance(value.get("name"), str):
        name, params = value["name"], {k: v for k, v in value.items() if k != "name"}
    else:
        raise ValueError("'rule' must be a rule name or {\"name\": ..., params}")
    if name not in RULES:
        raise ValueError(f"unknown rule {name!r}; known: {sorted(RULES)}")
    for param, kind in RULES[name][1].items():
        if not isinstance(params.get(param), kind) or isinstance(params.get(param), bool):
            raise ValueError(f"rule {name!r} needs {param!r} ({kind.__name__})")
    return name, params


# --- parsing -------------------------------------------------------------------------------------


def _string_list(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError(f"'{name}' must be a non-empty list of strings")
    return value


def _turns(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list):
        raise ValueError("'messages' must be a list of {role, content}")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise ValueError(f"messages[{i}] needs a role in {list(ROLES)}")
        if not isinstance(m.get("content"), str):
            raise ValueError(f"messages[{i}].content must be a string")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def parse_item(record: Any, default_id: str, default_category: str = "user") -> Item:
    """One item from a parsed JSON value; ValueError saying what is wrong."""
    if not isinstance(record, dict):
        raise ValueError("each line must be a JSON object")
    if "question" not in record and "messages" in record:
        record = _from_chat(record)
    unknown = sorted(set(record) - KNOWN_KEYS)
    if unknown:
        raise ValueError(f"unknown keys {unknown}; known: {sorted(KNOWN_KEYS)}")
    question = record.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("'question' must be a non-empty string")
    given = [k for k in ANSWER_KEYS if k in record]
    if len(given) > 1:
        raise ValueError(f"give one of {list(ANSWER_KEYS)}, not {given}")
    if not given and "regex" not in record and "rule" not in record:
        raise ValueError(
            "no expected answer: give 'answer', 'any_of' or 'json' (or a 'regex' or 'rule')"
        )
    item_id = record.get("id", default_id)
    if not isinstance(item_id, str | int) or isinstance(item_id, bool):
        raise ValueError("'id' must be a string or a number")
    category = record.get("category", default_category)
    if not isinstance(category, str) or not category:
        raise ValueError("'category' must be a non-empty string")
    item = Item(
        id=str(item_id),
        question=question,
        category=category,
        messages=_turns(record.get("messages", [])),
    )
    if "answer" in record:
        if not isinstance(record["answer"], str) or not record["answer"].strip():
            raise ValueError("'answer' must be a non-empty string")
        item.answer = record["answer"]
    if "any_of" in record:
        item.any_of = _string_list(record["any_of"], "any_of")
    if "json" in record:
        item.json, item.has_json = record["json"], True
    if "regex" in record:
        if not isinstance(record["regex"], str):
            raise ValueError("'regex' must be a string")
        try:
            item.regex = re.compile(record["regex"])
        except re.error as exc:
            raise ValueError(f"'regex' does not compile: {exc}") from None
    if "rule" in record:
        item.rule = _parse_rule(record["rule"])
    return item


def _from_chat(record: dict[str, Any]) -> dict[str, Any]:
    """A chat example as an item: its last user turn asked, its final answer expected."""
    turns = _turns(record["messages"])
    if not turns or turns[-1]["role"] != "assistant":
        raise ValueError("a chat line must end with the assistant's answer")
    users = [i for i, m in enumerate(turns) if m["role"] == "user"]
    if not users:
        raise ValueError("a chat line needs a user turn")
    last = users[-1]
    rest = {k: v for k, v in record.items() if k != "messages"}
    return {
        **rest,
        "question": turns[last]["content"],
        "messages": turns[:last],
        "answer": turns[-1]["content"],
    }


def load_questions(path: Path, default_category: str = "user") -> list[Item]:
    """Every item of a questions JSONL file; one TrainingError listing each bad line's number.

    Nothing is generated before this returns, so a typo on line 90 costs milliseconds.
    """
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"{path} does not exist", "file_not_found", "not_found")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise TrainingError(f"{path} is not UTF-8 text (expected JSONL)", "invalid_file") from None
    items, errors = [], []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            items.append(parse_item(json.loads(line), f"line-{lineno}", default_category))
        except json.JSONDecodeError as exc:
            errors.append(f"line {lineno}: invalid JSON: {exc.msg}")
        except ValueError as exc:
            errors.append(f"line {lineno}: {exc}")
    check_items(items, errors, str(path))
    return items


def check_items(items: list[Item], errors: list[str], where: str) -> None:
    """Raise one TrainingError for the bad lines, duplicate ids or an empty set."""
    seen: dict[str, int] = {}
    for item in items:
        seen[item.id] = seen.get(item.id, 0) + 1
    dupes = sorted(k for k, n in seen.items() if n > 1)
    if dupes:
        errors.append(f"duplicate ids {dupes[:5]}")
    if errors:
        more = f" (and {len(errors) - MAX_REPORTED} more)" if len(errors) > MAX_REPORTED else ""
        raise TrainingError(
            f"{where}: {len(errors)} bad lines: " + "; ".join(errors[:MAX_REPORTED]) + more,
            "invalid_questions",
        )
    if not items:
        raise TrainingError(f"{where} has no questions", "empty_dataset")


# --- scoring -------------------------------------------------------------------------------------


def _contains(answer: str, expected: str) -> bool:
    """Whether the expected text occurs in the answer as whole normalised words."""
    want = normalise(expected)
    return bool(want) and f" {want} " in f" {normalise(answer)} "


def score_answer(item: Item, answer: str) -> dict[str, Any]:
    """{"correct": bool, "score": 0..1, "checks": {check: bool}} for one answer to `item`.

    answer / any_of: the expected text occurs in the answer as whole words (case, punctuation
    and articles ignored); json: the answer parses to the expected value; regex: it matches
    somewhere; rule: the named rule holds. `correct` needs every check; `score` is 1.0 when
    correct, else partial credit: the token F1 against the text reference (JSON objects: the
    share of expected keys with the expected value).
    """
    checks: dict[str, bool] = {}
    partial = 0.0
    if item.answer is not None:
        checks["answer"] = _contains(answer, item.answer)
        partial = token_f1(item.answer, answer)
    if item.any_of is not None:
        checks["any_of"] = any(_contains(answer, alt) for alt in item.any_of)
        partial = max(token_f1(alt, answer) for alt in item.any_of)
    if item.has_json:
        ok, value = parse_json(answer)
        checks["json"] = ok and value == item.json
        if ok and isinstance(item.json, dict) and isinstance(value, dict) and item.json:
            partial = sum(value.get(k) == v for k, v in item.json.items()) / len(item.json)
    if item.regex is not None:
        checks["regex"] = item.regex.search(answer) is not None
    if item.rule is not None:
        name, params = item.rule
        checks[f"rule:{name}"] = bool(RULES[name][0](answer, params))
    correct = all(checks.values())
    return {"correct": correct, "score": 1.0 if correct else round(partial, 4), "checks": checks}
