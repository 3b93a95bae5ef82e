"""Per-path tables and best paths for router calibration."""

import json

import pytest

from training.errors import TrainingError
from training.evaluate.items import parse_item
from training.evaluate.paths import best_path, build_path_table, write_path_table

ITEMS = [
    parse_item({"id": "q1", "question": "Capital of France?", "answer": "Paris"}, "a"),
    parse_item({"id": "q2", "question": "Our refund window?", "answer": "30 days"}, "b"),
    parse_item({"id": "q3", "question": "Order JSON", "json": {"sku": "A-1"}}, "c"),
]


def test_ties_go_to_the_cheapest_path() -> None:
    assert best_path({"combined": 1.0, "adapter": 1.0, "rag": 1.0, "prompt": 1.0}) == "prompt"
    assert best_path({"combined": 1.0, "adapter": 1.0, "rag": 0.5}) == "adapter"
    assert best_path({"combined": 0.9, "rag": 0.8}) == "combined"
    assert best_path({"adapter": 0.0, "rag": 0.0}) == "rag"


def test_table_scores_every_path_and_picks_the_best(tmp_path) -> None:
    answers = {
        "prompt": ["Paris.", "I don't know.", "sku A-1"],
        "rag": ["Paris", "Refunds within 30 days.", None],  # not run for q3
        "adapter": ["Lyon", "14 days", '{"sku": "A-1"}'],
        "combined": ["Paris", "30 days", '{"sku": "A-1"}'],
    }
    grounded = {"rag": [0.9, 0.8, None], "combined": [0.7, 0.9, 0.1]}
    table = build_path_table(ITEMS, answers, grounded)
    assert table["questions"] == 3
    assert [r["best"] for r in table["rows"]] == ["prompt", "rag", "adapter"]
    rag = table["paths"]["rag"]
    assert rag == {
        "answered": 2,
        "accuracy": 1.0,
        "mean_score": 1.0,
        "best": 1,
        "grounded_mean": 0.85,
    }
    assert table["paths"]["prompt"]["accuracy"] == pytest.approx(1 / 3, abs=1e-4)
    assert table["paths"]["combined"]["best"] == 0  # as good as others, never cheapest
    assert "rag" not in table["rows"][2]["scores"]
    files = write_path_table(table, tmp_path / "out")
    lines = [json.loads(x) for x in files["best_paths"].read_text().splitlines()]
    assert lines[1] == {
        "prompt": "Our refund window?",
        "route": "rag",
        "id": "q2",
        "scores": {"prompt": 0.0, "rag": 1.0, "adapter": 0.5, "combined": 1.0},
    }
    assert json.loads(files["per_path"].read_text())["paths"]["adapter"]["best"] == 1


def test_bad_tables_are_refused() -> None:
    with pytest.raises(TrainingError, match="keyed by paths in"):
        build_path_table(ITEMS, {"finetune": ["a", "b", "c"]})
    with pytest.raises(TrainingError, match="has 2 values for 3 questions"):
        build_path_table(ITEMS, {"prompt": ["a", "b"]})
    with pytest.raises(TrainingError, match="grounding given for paths without answers"):
        build_path_table(ITEMS, {"prompt": ["a", "b", "c"]}, {"rag": [1, 1, 1]})
