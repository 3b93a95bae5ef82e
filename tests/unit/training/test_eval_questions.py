"""Questions files and the general set: parsing (every bad line by number) and scoring."""

import json

import pytest

from training.errors import TrainingError
from training.evaluate import make_general_set
from training.evaluate.general import general_items, round_robin, score_general, shipped_set
from training.evaluate.items import load_questions, parse_item, score_answer


def _write(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_every_item_shape_parses(tmp_path) -> None:
    path = _write(
        tmp_path / "qa.jsonl",
        [
            {"id": "capital", "question": "Capital of France?", "answer": "Paris"},
            {"question": "Capital of Peru?", "any_of": ["Lima", "Lima, Peru"]},
            {"question": "Order as JSON", "json": {"sku": "A-1", "qty": 2}},
            {"question": "A number", "regex": r"^\s*\d+\s*$"},
            {"question": "Shout", "rule": "uppercase", "category": "style"},
            {
                "question": "And Spain?",
                "answer": "Madrid",
                "messages": [
                    {"role": "user", "content": "Capital of France?"},
                    {"role": "assistant", "content": "Paris."},
                ],
            },
            {
                "messages": [
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello"},
                ]
            },
            "",
        ],
    )
    items = load_questions(path)
    assert [i.id for i in items] == [
        "capital",
        "line-2",
        "line-3",
        "line-4",
        "line-5",
        "line-6",
        "line-7",
    ]
    assert items[4].category == "style" and items[0].category == "user"
    assert items[5].conversation()[-1] == {"role": "user", "content": "And Spain?"}
    assert len(items[5].conversation()) == 3
    assert (items[6].question, items[6].answer) == ("Hi", "Hello")  # a chat line reads as an item
    assert items[1].describe() == "Lima | Lima, Peru" and items[4].describe() == "rule uppercase"


def test_malformed_lines_are_all_reported_with_their_numbers(tmp_path) -> None:
    path = _write(
        tmp_path / "qa.jsonl",
        [
            {"question": "ok", "answer": "fine"},
            "{broken",
            {"question": "no answer"},
            {"question": "two", "answer": "a", "any_of": ["b"]},
            {"question": "bad regex", "regex": "(unclosed"},
            {"question": "bad rule", "rule": "sparkly"},
            {"question": "q", "answer": "a", "colour": "red"},
            {"question": "", "answer": "a"},
            {"question": "q", "rule": {"name": "max_words"}},
        ],
    )
    with pytest.raises(TrainingError) as err:
        load_questions(path)
    message = err.value.message
    assert err.value.code == "invalid_questions" and "8 bad lines" in message
    for expected in [
        "line 2: invalid JSON",
        "line 3: no expected answer",
        "line 4: give one of",
        "line 5: 'regex' does not compile",
        "line 6: unknown rule 'sparkly'",
        "line 7: unknown keys ['colour']",
        "line 8: 'question' must be a non-empty string",
        "line 9: rule 'max_words' needs 'n'",
    ]:
        assert expected in message, expected
    assert "line 1" not in message


def test_duplicate_ids_and_empty_files_are_errors(tmp_path) -> None:
    _write(
        tmp_path / "dup.jsonl",
        [{"id": 1, "question": "a", "answer": "b"}, {"id": "1", "question": "c", "answer": "d"}],
    )
    with pytest.raises(TrainingError, match=r"duplicate ids \['1'\]"):
        load_questions(tmp_path / "dup.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(TrainingError, match="has no questions"):
        load_questions(tmp_path / "empty.jsonl")
    with pytest.raises(TrainingError, match="does not exist"):
        load_questions(tmp_path / "missing.jsonl")


@pytest.mark.parametrize(
    ("item", "answer", "correct", "score"),
    [
        ({"answer": "Paris"}, "The capital of France is Paris.", True, 1.0),
        ({"answer": "Paris"}, "Parisian food is great", False, 0.0),  # whole words only
        ({"answer": "12"}, "7 + 5 = 12", True, 1.0),
        ({"answer": "12"}, "It is 112", False, 0.0),
        ({"answer": "New Delhi"}, "Delhi", False, 0.6667),  # partial credit: token F1
        ({"any_of": ["7", "seven"]}, "Seven days.", True, 1.0),
        ({"json": {"sku": "A-1", "qty": 2}}, '{"qty": 2, "sku": "A-1"}', True, 1.0),
        ({"json": {"sku": "A-1", "qty": 2}}, '{"sku": "A-1", "qty": 3}', False, 0.5),
        ({"json": {"sku": "A-1", "qty": 2}}, "sku A-1, qty 2", False, 0.0),
        ({"regex": r"^\W*42\W*$"}, " 42.", True, 1.0),
        ({"rule": "uppercase"}, "HELLO TEAM!", True, 1.0),
        ({"rule": "uppercase"}, "Hello team", False, 0.0),
        ({"rule": {"name": "max_words", "n": 3}}, "one two three four", False, 0.0),
        ({"rule": {"name": "number", "value": 5}}, "5.", True, 1.0),
        ({"rule": {"name": "lines", "n": 2}}, "apple\n\nbanana", True, 1.0),
        ({"rule": {"name": "json_object", "keys": ["a"]}}, '{"a": 1}', True, 1.0),
        # rule + reference: both must hold
        ({"any_of": ["yellow"], "rule": "one_word"}, "Yellow.", True, 1.0),
        ({"any_of": ["yellow"], "rule": "one_word"}, "They are yellow", False, 0.5),
    ],
)
def test_score_answer(item, answer, correct, score) -> None:
    result = score_answer(parse_item({"question": "q", **item}, "x"), answer)
    assert result["correct"] is correct and result["score"] == pytest.approx(score, abs=1e-4)


def test_shipped_general_set_is_checkable_and_reproducible() -> None:
    items, header = shipped_set()
    assert len(items) >= 250 and "No third-party data set" in header["provenance"]
    cats = {i.category for i in items}
    assert cats == {"arithmetic", "facts", "instructions", "format"}
    assert all(i.reference() is not None or i.rule or i.regex for i in items)
    # The file is exactly what the script in the repo writes.
    built = make_general_set.build()
    assert [i.to_dict() for i in items] == built["items"]


def test_a_limit_takes_items_from_every_category(tmp_path) -> None:
    items, _ = shipped_set()
    picked = round_robin(items, 8)
    assert {i.category for i in picked} == {"arithmetic", "facts", "instructions", "format"}
    _write(
        tmp_path / "mine.jsonl",
        [{"id": "facts-000", "question": "Our SLA?", "answer": "4h", "category": "policy"}],
    )
    chosen, sources = general_items(4, tmp_path / "mine.jsonl")
    assert (
        len(chosen) == 5 and chosen[-1].id == "user-facts-000" and chosen[-1].category == "policy"
    )
    assert sources[0]["version"] == 1 and sources[1]["items"] == 1


def test_general_scores_per_category_and_overall() -> None:
    items = [
        parse_item({"question": f"q{i}", "answer": "yes", "category": c}, f"i{i}")
        for i, c in enumerate(["a", "a", "b", "b"])
    ]
    summary, rows = score_general(items, ["yes", "yes", "yes", "no"], ["yes", "no", "yes", "yes"])
    assert summary["overall"] == {
        "items": 4,
        "base": 0.75,
        "adapter": 0.75,
        "drop": 0.0,
        "lost": 1,
        "gained": 1,
        "p_value": 0.75,
    }
    assert summary["categories"]["a"]["drop"] == 0.5 and summary["categories"]["b"]["drop"] == -0.5
    assert rows[1]["adapter_correct"] is False and rows[1]["expected"] == "yes"
