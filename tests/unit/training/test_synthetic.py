"""The generated JSON tasks: the grounded rows hold the combined path's user turn, their answer
takes the facts from the named person's source, and held-out people never meet training ones."""

from __future__ import annotations

import json
import random
import re

import pytest

from retrieval.prompt import REFERENCE_HEADER
from training.synthetic import (
    HELD_OUT_CITIES,
    INSTRUCTION,
    TRAIN_CITIES,
    grounded_ask,
    grounded_json_task,
    grounded_turn,
    json_compliance,
    json_task,
    people,
)

SOURCE_RE = r"<source (\d+): ([^>]*)>\n(.*?)\n</source \1>"


def test_grounded_rows_answer_with_the_named_persons_record() -> None:
    rows = grounded_json_task(200, seed=4)
    assert rows == grounded_json_task(200, seed=4)  # seeded
    counts = set()
    for row in rows:
        user, answer = (m["content"] for m in row["messages"])
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        person = json.loads(answer)
        assert list(person) == ["name", "city", "age"] and isinstance(person["age"], int)
        assert user.startswith(REFERENCE_HEADER + "\n<source 1: ")
        ask = user[user.index(INSTRUCTION) :]
        # The ask names the person and holds none of the facts; exactly one source does.
        assert person["name"] in ask and person["city"] not in ask
        assert str(person["age"]) not in ask
        sources = re.findall(SOURCE_RE, user, re.S)
        assert [int(n) for n, _, _ in sources] == list(range(1, len(sources) + 1))
        holders = [t for _, _, t in sources if person["name"] in t]
        assert len(holders) == 1
        assert person["city"] in holders[0] and str(person["age"]) in holders[0]
        counts.add(len(sources))
        assert json_compliance(answer, person) == (True, True)
    assert counts == {1, 2, 3}  # the person's record alone, and beside one or two others


def test_a_grounded_turn_is_the_sources_then_the_ask_as_written() -> None:
    ask = grounded_ask("Kira", random.Random(0))
    turn = grounded_turn(ask, [("Account Kira", "Kira is 34 years old and lives in Oslo.")])
    assert turn == (
        f"{REFERENCE_HEADER}\n<source 1: Account Kira>\n"
        "Kira is 34 years old and lives in Oslo.\n</source 1>\n\n" + ask
    )
    assert ask.startswith(f"{INSTRUCTION}\n\nText: ") and "Kira" in ask
    # Another template is rendered the same way the combined path renders it.
    plain = grounded_turn("Q", [("A", "B")], "context")
    assert plain == "Context:\n[1] A: B\n\nQ"


def test_held_out_people_share_no_name_or_city_with_training_people() -> None:
    train, held = people(150, seed=1), people(150, seed=1, held_out=True)
    assert len({p["name"] for p in train}) == 150  # distinct names
    assert not {p["name"] for p in train} & {p["name"] for p in held}
    assert {p["city"] for p in train} <= set(TRAIN_CITIES)
    assert {p["city"] for p in held} <= set(HELD_OUT_CITIES)
    assert not set(TRAIN_CITIES) & set(HELD_OUT_CITIES)
    assert all(18 <= p["age"] <= 90 for p in train + held)
    rows = grounded_json_task(100, seed=2)
    named = {json.loads(r["messages"][1]["content"])["name"] for r in rows}
    assert not named & {p["name"] for p in people(192, seed=9, held_out=True)}
    with pytest.raises(ValueError, match="at most 192"):
        people(193)


def test_json_task_puts_the_facts_in_the_ask() -> None:
    for row in json_task(20, seed=0):
        user, answer = (m["content"] for m in row["messages"])
        person = json.loads(answer)
        assert user.startswith(f"{INSTRUCTION}\n\nText: ") and "<source" not in user
        assert person["city"] in user and str(person["age"]) in user
    assert json_compliance("not json", {}) == (False, False)
