"""Small generated tasks for demos, tests and benchmarks: answer in strict JSON.

The base model answers "Extract the person's details as JSON" with prose; an adapter trained on
a few hundred of these answers with exactly `{"name": ..., "city": ..., "age": ...}`. Format
compliance is easy to measure, so it shows whether training changed the model.

`json_task`: the sentence holding the facts is in the ask. `grounded_json_task`: the ask only
names the person ("Text: Kira, the account holder in our records.") and the facts are in
reference sources, rendered exactly as the gateway's combined path (an adapter plus retrieved
documents) renders them (`retrieval.prompt.adapter_template`), some with records of other
people beside the one asked about. An adapter trained on `json_task` alone never saw a sources
block and does not look there for the city and age.
"""

from __future__ import annotations

import json
import random
from typing import Any

from retrieval.prompt import DEFAULT_TEMPLATE, Source, Template, adapter_template, with_sources

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


# -- grounded: the facts are in the sources ---------------------------------------------------
# Names are made of two syllables; the first syllable's pool is split in two, so names drawn
# for training and held out for evaluation never meet (`held_out`). Cities likewise: an adapter
# that scores on held-out people and cities reads the sources rather than recalling its data.
FIRST = [
    "Max",
    "Leo",
    "An",
    "Or",
    "Ka",
    "Lo",
    "Mi",
    "Ta",
    "Col",
    "Ar",
    "Ad",
    "Ros",
    "Vi",
    "Da",
    "Ne",
    "Ba",
    "Al",
    "Tom",
    "Mon",
    "Em",
    "Gu",
    "Ha",
    "Li",
    "Yo",
]
SECOND = [
    "ran",
    "lia",
    "vek",
    "dor",
    "mina",
    "stan",
    "rin",
    "lo",
    "mar",
    "tis",
    "na",
    "ven",
    "dra",
    "rik",
    "sa",
    "bel",
]
POOL = len(FIRST) // 2 * len(SECOND)  # distinct names in each half
# Many cities, each seen rarely: a JSON string splits a city into other tokens than the
# source's " Oslo" ("Os", "lo"), and with ten cities an adapter learns those ten spellings, not
# the respelling (a 4-step adapter wrote "Ossdal" for a source's Oslo, "Zurkle" for Zurich).
TRAIN_CITIES = [
    *CITIES,
    "Bergen",
    "Cusco",
    "Dakar",
    "Essen",
    "Faro",
    "Galway",
    "Hobart",
    "Izmir",
    "Jaipur",
    "Kazan",
    "Leeds",
    "Malmo",
    "Nantes",
    "Odessa",
    "Porto",
    "Quito",
    "Riga",
    "Split",
    "Turin",
    "Utrecht",
    "Antwerp",
    "Bilbao",
    "Bologna",
    "Bremen",
    "Bristol",
    "Brno",
    "Cadiz",
    "Cardiff",
    "Chennai",
    "Cologne",
    "Dublin",
    "Durban",
    "Edinburgh",
    "Florence",
    "Geneva",
    "Genoa",
    "Ghent",
    "Glasgow",
    "Granada",
    "Hamburg",
    "Helsinki",
    "Krakow",
    "Leipzig",
    "Lille",
    "Madrid",
    "Marseille",
    "Milan",
    "Naples",
    "Nice",
    "Palermo",
    "Prague",
    "Rome",
    "Seville",
    "Sofia",
    "Stockholm",
    "Toulouse",
    "Valencia",
    "Venice",
    "Vienna",
    "Vilnius",
    "Warsaw",
    "Bordeaux",
    "Dresden",
    "Gdansk",
    "Malaga",
    "Seattle",
    "Denver",
    "Boston",
    "Austin",
    "Dallas",
    "Chicago",
    "Toronto",
    "Ottawa",
    "Montreal",
    "Vancouver",
    "Calgary",
    "Havana",
    "Bogota",
    "Caracas",
    "Santiago",
    "Recife",
    "Manaus",
    "Cairo",
    "Tunis",
    "Nairobi",
    "Lagos",
    "Mumbai",
    "Delhi",
    "Pune",
    "Dhaka",
    "Karachi",
    "Lahore",
    "Seoul",
    "Busan",
    "Osaka",
    "Sapporo",
    "Taipei",
    "Manila",
    "Jakarta",
    "Bangkok",
    "Auckland",
    "Adelaide",
    "Brisbane",
    "Darwin",
]
HELD_OUT_CITIES = [
    "Aarhus",
    "Basel",
    "Cork",
    "Dundee",
    "Graz",
    "Kaunas",
    "Lyon",
    "Munich",
    "Nagoya",
    "Plovdiv",
    "Salta",
    "Tartu",
    "Varna",
    "Wuhan",
    "York",
    "Zurich",
]
RECORDS = [
    *TEMPLATES,
    "{name}: age {age}, city {city}.",
    "Account holder {name} lives in {city} and is {age} years old.",
    "{name} is {age}. Home town: {city}.",
]
# How the ask names the person: the facts are never in it.
ASKS = [
    "{name}, the account holder in our records.",
    "Our customer {name}.",
    "The record for {name}.",
    "{name}, from our files.",
    "Details of {name}, please.",
    "{name}",
]
LABELS = ["Account {name}", "{name}", "Customer {name}", "Member {name}"]


# How the integration test and bench/combined.py train an adapter on `grounded_json_task` rows
# (TrainConfig fields): the format and the reading in about a minute on two cores.
GROUNDED_ROWS = 120
GROUNDED_RECIPE: dict[str, Any] = {
    "max_steps": 10,
    "eval_steps": 10,
    "batch_size": 8,
    "max_length": 256,
    "learning_rate": 1e-3,
    "rank": 8,
    "warmup_ratio": 0.0,
}


def people(n: int, seed: int = 0, held_out: bool = False) -> list[dict[str, Any]]:
    """`n` people with distinct made-up names, a city and an age (18-90); `held_out` draws
    from name and city pools that the training rows (`grounded_json_task`) never use."""
    rng = random.Random(seed)
    firsts = FIRST[1::2] if held_out else FIRST[0::2]
    cities = HELD_OUT_CITIES if held_out else TRAIN_CITIES
    if n > POOL:
        raise ValueError(f"at most {POOL} distinct names; asked for {n}")
    names = rng.sample([f + s for f in firsts for s in SECOND], n)
    return [
        {"name": name, "city": rng.choice(cities), "age": rng.randint(18, 90)} for name in names
    ]


def record(person: dict[str, Any], rng: random.Random) -> str:
    """One sentence stating a person's city and age, in a form drawn from `RECORDS`."""
    return rng.choice(RECORDS).format(**person)


def grounded_ask(name: str, rng: random.Random) -> str:
    """The ask as a caller sends it: the instruction, and a text that names the person only."""
    return f"{INSTRUCTION}\n\nText: {rng.choice(ASKS).format(name=name)}"


def grounded_turn(
    ask: str,
    sources: list[tuple[str, str]],
    template: str | Template = DEFAULT_TEMPLATE,
) -> str:
    """The user turn the combined path sends: `sources` as (label, text), numbered in order,
    then `ask` as written (`retrieval.prompt.adapter_template` of `template`)."""
    given = [
        Source(n, f"s{n}", "", "records.md", "", label, text, 1.0, 1.0)
        for n, (label, text) in enumerate(sources, 1)
    ]
    turn = with_sources([{"role": "user", "content": ask}], given, adapter_template(template))
    return str(turn[-1]["content"])


def grounded_json_task(
    n: int,
    seed: int = 0,
    max_others: int = 2,
    template: str | Template = DEFAULT_TEMPLATE,
) -> list[dict[str, Any]]:
    """`n` chat examples for the combined path: the ask names a person, the sources hold that
    person's record and up to `max_others` records of other people (in random order), and the
    answer is the JSON object with the city and age from the person's record."""
    if not 0 <= max_others < POOL:
        raise ValueError(f"max_others must be 0..{POOL - 1}; got {max_others}")
    rng = random.Random(seed)
    pool = people(min(POOL, max(n, 1 + max_others)), seed)
    rows = []
    for _ in range(n):
        chosen = rng.sample(pool, 1 + rng.randint(0, max_others))
        given = [
            (rng.choice(LABELS).format(name=p["name"]), record(p, rng))
            for p in rng.sample(chosen, len(chosen))
        ]
        person = chosen[0]
        user = grounded_turn(grounded_ask(person["name"], rng), given, template)
        answer = {"role": "assistant", "content": json.dumps(person)}
        rows.append({"messages": [{"role": "user", "content": user}, answer]})
    return rows
