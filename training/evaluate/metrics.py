"""Per-example task metrics, each its own number: exact match, token F1, ROUGE-L, JSON validity,
JSON Schema match, key-set match, label accuracy. Answer loss comes from `logprobs.py`.

Every metric is a function of one (expected, answer) pair returning 0.0 or 1.0 (F1 and ROUGE-L:
a fraction); `Task` says which of them apply to a test set, decided once from its expected
answers, so base and adapter are always scored on the same metrics.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from training.errors import TrainingError

# A label set is "small" when it has at most this many distinct answers and every label is seen
# on average at least twice: a sentiment or routing task, not free text that happens to repeat.
MAX_LABELS = 20
MAX_LABEL_WORDS = 4
_ARTICLES = re.compile(r"\b(a|an|the)\b")
# Punctuation becomes a space (not nothing), so '{"age":30}' reads as the words "age 30".
_PUNCT = str.maketrans(string.punctuation, " " * len(string.punctuation))
_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n(.*)\n```$", re.S)

# (name, higher is better) in the order reports show them.
METRICS = [
    ("exact_match", True),
    ("token_f1", True),
    ("rouge_l", True),
    ("label_accuracy", True),
    ("json_valid", True),
    ("key_match", True),
    ("schema_match", True),
    ("answer_loss", False),
]
HIGHER_IS_BETTER = dict(METRICS)


def normalise(text: str) -> str:
    """Lower case, punctuation as spaces, no articles, single spaces (as SQuAD normalises)."""
    text = _ARTICLES.sub(" ", text.lower().translate(_PUNCT))
    return " ".join(text.split())


def tokens(text: str) -> list[str]:
    """Normalised words."""
    return normalise(text).split()


def parse_json(answer: str) -> tuple[bool, Any]:
    """(parses, value) of an answer; a whole-answer ```json fence is unwrapped first."""
    text = answer.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        return True, json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return False, None


def exact_match(expected: str, answer: str) -> float:
    """1.0 when the normalised strings are equal, or both are JSON with equal values."""
    if normalise(expected) == normalise(answer):
        return 1.0
    ok_e, want = parse_json(expected)
    ok_a, got = parse_json(answer)
    return float(ok_e and ok_a and isinstance(want, dict | list) and want == got)


def token_f1(expected: str, answer: str) -> float:
    """Harmonic mean of word precision and recall over normalised words (bag of words)."""
    want, got = tokens(expected), tokens(answer)
    if not want or not got:
        return float(want == got)
    common = sum((Counter(want) & Counter(got)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(got), common / len(want)
    return 2 * precision * recall / (precision + recall)


@lru_cache(maxsize=1)
def _rouge() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l(expected: str, answer: str) -> float:
    """ROUGE-L F-measure (longest common subsequence of words), via `rouge-score`."""
    return float(_rouge().score(expected, answer)["rougeL"].fmeasure)


def check_schema(schema: Any) -> Any:
    """A jsonschema validator for `schema`; TrainingError when it is not a valid JSON Schema."""
    import jsonschema

    if not isinstance(schema, dict | bool):
        raise TrainingError(
            f"the JSON Schema must be an object, got {type(schema).__name__}", "invalid_schema"
        )
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        path = "/".join(str(p) for p in exc.path) or "(root)"
        raise TrainingError(
            f"invalid JSON Schema at {path}: {exc.message}", "invalid_schema"
        ) from None
    return cls(schema)


@dataclass
class Task:
    """What a test set's expected answers say about the task, and so which metrics apply."""

    json: bool = False  # every expected answer is a JSON object
    labels: list[str] = field(default_factory=list)  # the small label set, if it is one
    schema: Any = None  # a jsonschema validator (JSON tasks given a schema)

    def metrics(self) -> list[str]:
        """The generation metrics scored for this task (answer loss comes separately)."""
        names = ["exact_match", "token_f1", "rouge_l"]
        if self.labels:
            names.append("label_accuracy")
        if self.json or self.schema is not None:
            names += ["json_valid", "key_match"] if self.json else ["json_valid"]
        if self.schema is not None:
            names.append("schema_match")
        return names

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary for the report."""
        return {
            "json": self.json,
            "labels": self.labels,
            "schema": self.schema is not None,
            "metrics": self.metrics(),
        }


def detect_task(expected: list[str], schema: Any = None) -> Task:
    """The task behind these expected answers: JSON objects, a small label set, or free text."""
    parsed = [parse_json(e) for e in expected]
    is_json = bool(expected) and all(ok and isinstance(v, dict) for ok, v in parsed)
    labels: list[str] = []
    if not is_json and len(expected) >= 4:
        distinct = {normalise(e) for e in expected}
        short = all(0 < len(d.split()) <= MAX_LABEL_WORDS for d in distinct)
        if short and 2 <= len(distinct) <= min(MAX_LABELS, len(expected) // 2):
            # Report labels as written (first spelling seen), but match them normalised.
            seen: dict[str, str] = {}
            for e in expected:
                seen.setdefault(normalise(e), e.strip())
            labels = sorted(seen.values())
    validator = check_schema(schema) if schema is not None else None
    return Task(json=is_json, labels=labels, schema=validator)


def predicted_label(answer: str, labels: list[str]) -> str | None:
    """The label an answer gives: the one it equals, else the only one it mentions (whole
    words); None when it gives none or several."""
    norm = normalise(answer)
    by_norm = {normalise(label): label for label in labels}
    if norm in by_norm:
        return by_norm[norm]
    padded = f" {norm} "
    found = [label for n, label in by_norm.items() if n and f" {n} " in padded]
    return found[0] if len(found) == 1 else None


def score_example(task: Task, expected: str, answer: str) -> dict[str, float]:
    """Every generation metric of `task` for one answer."""
    scores = {
        "exact_match": exact_match(expected, answer),
        "token_f1": token_f1(expected, answer),
        "rouge_l": rouge_l(expected, answer),
    }
    if task.labels:
        label = predicted_label(answer, task.labels)
        scores["label_accuracy"] = float(
            label is not None and normalise(label) == normalise(expected)
        )
    if task.json or task.schema is not None:
        ok, value = parse_json(answer)
        scores["json_valid"] = float(ok)
        if task.json:
            _, want = parse_json(expected)
            scores["key_match"] = float(ok and isinstance(value, dict) and set(value) == set(want))
        if task.schema is not None:
            scores["schema_match"] = float(ok and task.schema.is_valid(value))
    return scores


def mean(values: list[float]) -> float:
    """Arithmetic mean; 0.0 for no values."""
    return sum(values) / len(values) if values else 0.0
