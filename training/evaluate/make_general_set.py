"""Write the general-ability set (general_set.json) that every evaluation scores for forgetting.

    python -m training.evaluate.make_general_set          # rewrites training/evaluate/general_set.json

Short questions a small instruction model mostly gets right, each with a checker that needs no
judge model: arithmetic (seeded random operands), well-known facts (written here by hand),
instruction following (answer in uppercase / one word / at most N words / starting with a word)
and output format (a number only, a JSON object with given keys, N lines). Nothing comes from a
third-party data set. Deterministic: the same script writes the same file.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("general_set.json")
VERSION = 1

CAPITALS = [
    ("France", "Paris"),
    ("Japan", "Tokyo"),
    ("Italy", "Rome"),
    ("Spain", "Madrid"),
    ("Germany", "Berlin"),
    ("Egypt", "Cairo"),
    ("Russia", "Moscow"),
    ("China", "Beijing"),
    ("the United Kingdom", "London"),
    ("Greece", "Athens"),
    ("Portugal", "Lisbon"),
    ("Norway", "Oslo"),
    ("Sweden", "Stockholm"),
    ("Finland", "Helsinki"),
    ("Ireland", "Dublin"),
    ("Austria", "Vienna"),
    ("Poland", "Warsaw"),
    ("Hungary", "Budapest"),
    ("Canada", "Ottawa"),
    ("Mexico", "Mexico City"),
    ("Argentina", "Buenos Aires"),
    ("Peru", "Lima"),
    ("Kenya", "Nairobi"),
    ("Thailand", "Bangkok"),
    ("South Korea", "Seoul"),
    ("India", "New Delhi"),
    ("Australia", "Canberra"),
    ("Denmark", "Copenhagen"),
    ("Belgium", "Brussels"),
    ("the Netherlands", "Amsterdam"),
    ("Turkey", "Ankara"),
    ("Cuba", "Havana"),
    ("Chile", "Santiago"),
    ("Colombia", "Bogota"),
    ("Vietnam", "Hanoi"),
    ("Indonesia", "Jakarta"),
    ("Iran", "Tehran"),
    ("Czechia", "Prague"),
    ("Switzerland", "Bern"),
    ("Brazil", "Brasilia"),
]

# (question, accepted answers): facts stable for decades, one short answer each.
FACTS = [
    ("How many days are there in a week?", ["7", "seven"]),
    ("How many months are there in a year?", ["12", "twelve"]),
    ("How many hours are there in a day?", ["24", "twenty-four", "twenty four"]),
    ("How many minutes are there in an hour?", ["60", "sixty"]),
    ("How many legs does a spider have?", ["8", "eight"]),
    ("How many legs does an insect have?", ["6", "six"]),
    ("How many continents are there on Earth?", ["7", "seven"]),
    ("What is the largest planet in our solar system?", ["Jupiter"]),
    ("Which planet is known as the Red Planet?", ["Mars"]),
    ("Which planet is closest to the Sun?", ["Mercury"]),
    ("What star is at the center of our solar system?", ["Sun"]),
    ("What is the largest ocean on Earth?", ["Pacific"]),
    ("What is the chemical symbol for water?", ["H2O"]),
    ("What is the chemical symbol for gold?", ["Au"]),
    ("What is the chemical symbol for iron?", ["Fe"]),
    ("What gas do plants absorb from the air for photosynthesis?", ["carbon dioxide", "CO2"]),
    ("What gas do humans need to breathe to live?", ["oxygen"]),
    ("At what temperature in Celsius does water freeze?", ["0", "zero"]),
    ("At what temperature in Celsius does water boil at sea level?", ["100", "one hundred"]),
    ("Who wrote the play Romeo and Juliet?", ["Shakespeare"]),
    ("Who painted the Mona Lisa?", ["Leonardo da Vinci", "da Vinci", "Leonardo"]),
    ("Who developed the theory of relativity?", ["Einstein"]),
    ("What color is the sky on a clear day?", ["blue"]),
    ("What color are ripe bananas?", ["yellow"]),
    ("What color is grass?", ["green"]),
    ("What is the opposite of hot?", ["cold"]),
    ("What is the opposite of up?", ["down"]),
    ("What is the opposite of day?", ["night"]),
    ("What do bees make?", ["honey"]),
    ("What animal is known as the king of the jungle?", ["lion"]),
    ("What is the largest mammal in the world?", ["blue whale", "whale"]),
    ("What is the tallest animal in the world?", ["giraffe"]),
    ("What is the fastest land animal?", ["cheetah"]),
    ("What is the longest river in Africa?", ["Nile"]),
    ("What is the highest mountain in the world?", ["Everest"]),
    ("What is the largest desert in Africa?", ["Sahara"]),
    ("Which language is spoken in Brazil?", ["Portuguese"]),
    ("Which language is mainly spoken in Mexico?", ["Spanish"]),
    ("What is the currency of Japan?", ["yen"]),
    ("What is the currency of the United States?", ["dollar"]),
    ("How many sides does a triangle have?", ["3", "three"]),
    ("How many sides does a hexagon have?", ["6", "six"]),
    ("How many degrees are in a right angle?", ["90", "ninety"]),
    ("What is the square root of 81?", ["9", "nine"]),
    ("What is the boiling point of water in Fahrenheit?", ["212"]),
    ("What organ pumps blood through the human body?", ["heart"]),
    ("How many bones are in the adult human body?", ["206"]),
    ("What is the hardest natural substance?", ["diamond"]),
    ("What is the main ingredient of guacamole?", ["avocado"]),
    ("In which country are the pyramids of Giza?", ["Egypt"]),
]

WORDS = [
    "apple",
    "river",
    "mountain",
    "garden",
    "window",
    "rocket",
    "pencil",
    "castle",
    "forest",
    "bridge",
    "candle",
    "planet",
    "dragon",
    "violin",
    "harbor",
]
TOPICS = [
    "the ocean",
    "coffee",
    "winter",
    "a good book",
    "the moon",
    "bicycles",
    "rain",
    "music",
    "the city at night",
    "breakfast",
    "friendship",
    "mountains",
    "cats",
    "the summer",
    "trains",
]
COLORS = ["red", "blue", "green", "yellow", "purple"]
FRUITS = ["apple", "banana", "cherry", "grape", "lemon", "mango", "orange", "pear"]


def arithmetic(rng: random.Random) -> list[dict[str, Any]]:
    """Sums, differences (never negative), products and exact quotients; the number only."""
    items = []
    for i in range(70):
        kind = i % 4
        if kind == 0:
            a, b = rng.randint(2, 60), rng.randint(2, 60)
            text, result = f"{a} + {b}", a + b
        elif kind == 1:
            a, b = rng.randint(20, 99), rng.randint(1, 19)
            text, result = f"{a} - {b}", a - b
        elif kind == 2:
            a, b = rng.randint(2, 12), rng.randint(2, 12)
            text, result = f"{a} times {b}", a * b
        else:
            b, result = rng.randint(2, 10), rng.randint(2, 12)
            text = f"{b * result} divided by {b}"
        items.append(
            {"question": f"What is {text}? Reply with the number only.", "answer": str(result)}
        )
    for i in range(10):
        have, more = rng.randint(2, 9), rng.randint(2, 9)
        fruit = FRUITS[i % len(FRUITS)]
        items.append(
            {
                "question": f"Sam has {have} {fruit}s and buys {more} more. How many "
                f"{fruit}s does Sam have now? Reply with the number only.",
                "answer": str(have + more),
            }
        )
    return items


def facts() -> list[dict[str, Any]]:
    """Capitals and general knowledge, answered briefly."""
    items: list[dict[str, Any]] = [
        {"question": f"What is the capital of {country}? Answer briefly.", "answer": city}
        for country, city in CAPITALS
    ]
    items += [{"question": f"{q} Answer briefly.", "any_of": answers} for q, answers in FACTS]
    return items


def instructions(rng: random.Random) -> list[dict[str, Any]]:
    """Instructions about the shape of the reply: case, length, first word."""
    items: list[dict[str, Any]] = []
    for topic in TOPICS:
        items.append(
            {
                "question": f"Write one short sentence about {topic}. Reply in uppercase "
                "letters only.",
                "rule": "uppercase",
            }
        )
        items.append(
            {
                "question": f"Write one short sentence about {topic}, all in lowercase letters.",
                "rule": "lowercase",
            }
        )
        items.append(
            {
                "question": f"Describe {topic} in at most five words.",
                "rule": {"name": "max_words", "n": 5},
            }
        )
    for q, answers in rng.sample(FACTS, 15):
        items.append(
            {"question": f"Answer in one word only. {q}", "any_of": answers, "rule": "one_word"}
        )
    for word in WORDS[:10]:
        items.append(
            {
                "question": f'Start your reply with the word "Yes". Is {word} an English word?',
                "rule": {"name": "starts_with", "text": "yes"},
            }
        )
    return items


def formats(rng: random.Random) -> list[dict[str, Any]]:
    """Output formats a program would parse: a bare number, a JSON object, N lines."""
    items: list[dict[str, Any]] = []
    for word in WORDS:
        items.append(
            {
                "question": f'How many letters are in the word "{word}"? Reply with '
                "just the number.",
                "rule": {"name": "number", "value": len(word)},
            }
        )
    for i in range(15):
        fruit, color = FRUITS[i % len(FRUITS)], COLORS[i % len(COLORS)]
        items.append(
            {
                "question": f'Return only a JSON object with the keys "fruit" and '
                f'"color" for a {color} {fruit}. No other text.',
                "json": {"fruit": fruit, "color": color},
            }
        )
    for i in range(15):
        n = 2 + i % 3
        items.append(
            {
                "question": f"List {n} kinds of {rng.choice(['fruit', 'animal', 'color', 'tree'])}"
                f", one per line, with no other text.",
                "rule": {"name": "lines", "n": n},
            }
        )
    for word in WORDS[:15]:
        items.append(
            {
                "question": f'Repeat the word "{word}" exactly, with nothing else.',
                "regex": rf"^\W*{word}\W*$",
            }
        )
    return items


def build() -> dict[str, Any]:
    """The whole set, with ids and categories, and where it came from."""
    rng = random.Random(0)
    groups = {
        "arithmetic": arithmetic(rng),
        "facts": facts(),
        "instructions": instructions(rng),
        "format": formats(rng),
    }
    items = []
    for category, rows in groups.items():
        for i, row in enumerate(rows):
            items.append({"id": f"{category}-{i:03d}", "category": category, **row})
    return {
        "name": "loraplex-general",
        "version": VERSION,
        "provenance": "Written for loraplex by training/evaluate/make_general_set.py: hand-written "
        "facts and templates, arithmetic operands drawn with random.Random(0). No third-party "
        "data set; regenerate with `python -m training.evaluate.make_general_set`.",
        "categories": {k: len(v) for k, v in groups.items()},
        "items": items,
    }


if __name__ == "__main__":
    data = build()
    # One item a line: a change to the set reads as a change to its lines in a diff.
    head = json.dumps({k: v for k, v in data.items() if k != "items"}, indent=1)[:-2]
    lines = ",\n  ".join(json.dumps(item, ensure_ascii=False) for item in data["items"])
    OUT.write_text(f'{head},\n "items": [\n  {lines}\n ]\n}}\n')
    print(f"wrote {OUT}: {len(data['items'])} items, {data['categories']}")
