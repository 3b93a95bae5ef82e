"""A small generated task for demos, tests and benchmarks: answer in strict JSON.

The base model answers "Extract the person's details as JSON" with prose; an adapter trained on
a few hundred of these answers with exactly `{"name": ..., "city": ..., "age": ...}`. Format
compliance is easy to measure, so it shows whether training changed the model.
"""

from __future__ import annotations

import json
import random
from typing import Any

NAMES = ["Alice", "Bruno", "Chen", "Dara", "Emil", "Fatima", "Goran", "Hana", "Ivo", "Jun",
         "Kira", "Liam", "Mona", "Nils", "Olga", "Pavel", "Quinn", "Rosa", "Sven", "Tara"]  # fmt: skip
CITIES = [
    "Lisbon",
    "Oslo",
    "Kyoto",
    "Lima",
    "Accra",
    "Perth",
    "Quebec",
    "Tallinn",
    "Zagreb",
    "Hanoi",
]
TEMPLATES = [
    "{name} is {age} years old and lives in {city}.",
    "Meet {name}, a {age}-year-old from {city}.",
    "Living in {city}, {name} turned {age} this year.",
    "{name} ({age}) moved to {city} last spring.",
]
INSTRUCTION = "Extract the person's name, city and age from the text as a JSON object."


def json_task(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """`n` chat examples: a sentence in, a strict JSON object out."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        person = {"name": rng.choice(NAMES), "city": rng.choice(CITIES), "age": rng.randint(18, 90)}
        text = rng.choice(TEMPLATES).format(**person)
        rows.append({"messages": [
            {"role": "user", "content": f"{INSTRUCTION}\n\nText: {text}"},
            {"role": "assistant", "content": json.dumps(person)},
        ]})  # fmt: skip
    return rows


def json_compliance(answer: str, expected: dict[str, Any]) -> tuple[bool, bool]:
    """(is a JSON object with exactly the three keys, equals the expected object)."""
    try:
        got = json.loads(answer.strip())
    except json.JSONDecodeError:
        return False, False
    ok = isinstance(got, dict) and set(got) == {"name", "city", "age"}
    return ok, ok and got == expected
