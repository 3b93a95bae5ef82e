"""The forgetting check: a general-ability set scored for base and adapter on every evaluation.

The shipped set (general_set.json, written by make_general_set.py) has a few hundred short
items in four categories; a user set (`general=PATH`, questions-file format or chat examples)
adds its own. A limit takes items round-robin over categories, so a small limit still covers
every category.
"""

from __future__ import annotations

import json
from math import comb
from pathlib import Path
from typing import Any

from training.errors import TrainingError
from training.evaluate.items import Item, check_items, load_questions, parse_item, score_answer
from training.evaluate.metrics import mean

SHIPPED = Path(__file__).with_name("general_set.json")
MAX_TOKENS = 48  # enough for "one sentence" items; the set asks for short answers


def shipped_set() -> tuple[list[Item], dict[str, Any]]:
    """The set shipped with loraplex and its header (name, version, provenance)."""
    data = json.loads(SHIPPED.read_text(encoding="utf-8"))
    items, errors = [], []
    for i, record in enumerate(data["items"]):
        try:
            items.append(parse_item(record, f"item-{i}", "general"))
        except ValueError as exc:
            errors.append(f"item {i}: {exc}")
    check_items(items, errors, str(SHIPPED))
    return items, {k: v for k, v in data.items() if k != "items"}


def round_robin(items: list[Item], limit: int | None) -> list[Item]:
    """The first `limit` items taken in turn from each category (all items when None)."""
    if limit is None or limit >= len(items):
        return list(items)
    queues: dict[str, list[Item]] = {}
    for item in items:
        queues.setdefault(item.category, []).append(item)
    picked: list[Item] = []
    while len(picked) < limit:
        for queue in queues.values():
            if queue and len(picked) < limit:
                picked.append(queue.pop(0))
    return picked


def general_items(
    limit: int | None = None, extra: Path | None = None
) -> tuple[list[Item], list[dict[str, Any]]]:
    """Items to score (shipped set, limited, plus a user set) and the sets used, for lineage."""
    if limit is not None and limit < 0:
        raise TrainingError(f"general_limit must be >= 0, got {limit}", "invalid_limit")
    shipped, header = shipped_set()
    items = round_robin(shipped, limit)
    sources = [
        {
            "name": header["name"],
            "version": header["version"],
            "items": len(items),
            "provenance": header["provenance"],
        }
    ]
    if extra is not None:
        user = load_questions(Path(extra), default_category="user")
        taken = {i.id for i in items}
        for item in user:
            if item.id in taken:  # user ids may repeat shipped ones; keep both apart
                item.id = f"user-{item.id}"
        items += user
        sources.append({"path": str(extra), "items": len(user)})
    return items, sources


def score_general(
    items: list[Item], base: list[str], adapter: list[str]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Accuracy per category and overall for base and adapter, and one row per item."""
    rows = []
    for item, b, a in zip(items, base, adapter, strict=True):
        sb, sa = score_answer(item, b), score_answer(item, a)
        rows.append(
            {
                "id": item.id,
                "category": item.category,
                "question": item.question,
                "expected": item.describe(),
                "base_answer": b,
                "adapter_answer": a,
                "base_correct": sb["correct"],
                "adapter_correct": sa["correct"],
            }
        )
    categories: dict[str, Any] = {}
    for cat in sorted({r["category"] for r in rows}):
        mine = [r for r in rows if r["category"] == cat]
        categories[cat] = _summary(mine)
    return {"overall": _summary(rows), "categories": categories}, rows


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    base = mean([float(r["base_correct"]) for r in rows])
    adapter = mean([float(r["adapter_correct"]) for r in rows])
    lost = sum(1 for r in rows if r["base_correct"] and not r["adapter_correct"])
    gained = sum(1 for r in rows if r["adapter_correct"] and not r["base_correct"])
    return {
        "items": len(rows),
        "base": round(base, 4),
        "adapter": round(adapter, 4),
        "drop": round(base - adapter, 4),
        "lost": lost,
        "gained": gained,
        "p_value": round(sign_test(lost, gained), 4),
    }


def sign_test(lost: int, gained: int) -> float:
    """One-sided exact sign (McNemar) test on the items only one model got right: the chance
    of losing at least `lost` of them if the adapter were no worse than base. 1.0: no evidence."""
    n = lost + gained
    if n == 0:
        return 1.0
    return sum(comb(n, k) for k in range(lost, n + 1)) / 2**n
