"""Task metrics: each a separate number, on hand-made answers."""

import pytest

from training.errors import TrainingError
from training.evaluate.metrics import (
    detect_task,
    exact_match,
    parse_json,
    predicted_label,
    rouge_l,
    score_example,
    token_f1,
)

PERSON = '{"name": "Ana", "city": "Oslo", "age": 30}'
SCHEMA = {
    "type": "object",
    "required": ["name", "city", "age"],
    "properties": {"age": {"type": "integer", "minimum": 0}},
}


def test_exact_match_ignores_case_punctuation_articles_and_json_spacing() -> None:
    assert exact_match("The Paris.", "paris") == 1.0
    assert exact_match(PERSON, '{"age":30,"city":"Oslo","name":"Ana"}') == 1.0
    assert exact_match("Paris", "Paris, France") == 0.0


def test_token_f1_and_rouge_l_give_partial_credit() -> None:
    assert token_f1("the cat sat", "cat sat down") == pytest.approx(0.8)
    assert token_f1("cat", "") == 0.0 and token_f1("", "") == 1.0
    assert rouge_l("the cat sat on the mat", "the cat sat on the mat") == 1.0
    assert rouge_l("the cat sat", "the cat sat down") == pytest.approx(6 / 7)
    # JSON keys and values count as words: one right pair of two.
    assert token_f1('{"x":1}', '{"x": 1, "y": 2}') == pytest.approx(2 / 3)


def test_json_validity_key_match_and_schema_match_are_separate_numbers() -> None:
    task = detect_task([PERSON, '{"name": "Bo", "city": "Rome", "age": 41}'], SCHEMA)
    assert task.json and task.metrics()[-3:] == ["json_valid", "key_match", "schema_match"]
    cases = {
        PERSON: (1, 1, 1),
        '{"name": "Ana", "city": "Oslo", "age": "thirty"}': (1, 1, 0),  # keys right, type wrong
        '{"name": "Ana", "city": "Oslo", "age": 30, "x": 1}': (1, 0, 1),  # extra key, schema ok
        '["Ana", "Oslo"]': (1, 0, 0),  # valid JSON, not an object
        "Ana lives in Oslo.": (0, 0, 0),
        f"```json\n{PERSON}\n```": (1, 1, 1),  # a whole-answer fence is unwrapped
    }
    for answer, (valid, keys, schema) in cases.items():
        s = score_example(task, PERSON, answer)
        assert (s["json_valid"], s["key_match"], s["schema_match"]) == (valid, keys, schema), answer


def test_label_tasks_are_detected_from_few_distinct_answers() -> None:
    labels = detect_task(["positive", "negative", "Positive", "neutral", "negative", "positive."])
    assert labels.labels == ["negative", "neutral", "positive"]
    assert "label_accuracy" in labels.metrics()
    assert not detect_task([f"Answer number {i}." for i in range(10)]).labels  # all distinct
    assert not detect_task(["yes", "no"]).labels  # too few examples to call it a label set
    assert not detect_task([PERSON] * 6).labels  # JSON answers are not labels
    assert predicted_label("It is Positive.", labels.labels) == "positive"
    assert predicted_label("positive or negative", labels.labels) is None  # two labels: no answer
    scores = score_example(labels, "negative", "The sentiment is negative")
    assert scores["label_accuracy"] == 1.0 and scores["exact_match"] == 0.0


def test_free_text_gets_text_metrics_only() -> None:
    task = detect_task(["Reset the router, then wait.", "Call support.", "Check the cable."])
    assert task.metrics() == ["exact_match", "token_f1", "rouge_l"]


def test_an_invalid_schema_is_a_clear_error() -> None:
    with pytest.raises(TrainingError, match=r"invalid JSON Schema at properties/age") as err:
        detect_task([PERSON], {"type": "object", "properties": {"age": {"type": "integr"}}})
    assert err.value.code == "invalid_schema"
    with pytest.raises(TrainingError, match="must be an object"):
        detect_task([PERSON], ["not", "a", "schema"])


def test_parse_json_rejects_trailing_prose() -> None:
    assert parse_json(f"{PERSON} Hope this helps!")[0] is False
    assert parse_json(" 42 ") == (True, 42)
