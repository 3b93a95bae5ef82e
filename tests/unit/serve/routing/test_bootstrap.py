"""The starter golden set: adapter exemplars, document questions, general and combined prompts."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from serve.errors import ServiceError
from serve.routing.bootstrap import bootstrap_examples, dataset_prompts, topic

DOCS = [
    "SKU-4471 is the Borealis steel kettle, priced at 39 euros. It carries a 2-year warranty.",
    "Returns policy\n\nItems can be returned within 30 days of delivery with the receipt.",
    "The Leeds store opens Monday to Saturday from 9 am to 7 pm.",
]


def test_topics_from_sentences() -> None:
    assert topic("SKU-4471 is the Borealis steel kettle, priced at 39 euros.") == "SKU-4471"
    assert topic("The Leeds store opens Monday to Saturday from 9 am to 7 pm.") == "the Leeds store"
    assert topic("Hello there") is None


def test_starter_set_has_all_four_paths(fakes) -> None:
    orders = fakes.av("orders", [f"Extract the order {i} as JSON" for i in range(6)])
    out = bootstrap_examples([orders], DOCS, per_path=5, seed=1)
    by = {p: [e for e in out if e.route == p] for p in ("prompt", "rag", "adapter", "combined")}
    assert [len(by[p]) for p in by] == [5, 3, 5, 5]
    assert all(e.adapter == "orders" for e in by["adapter"] + by["combined"])
    assert all(e.prompt in orders.exemplars for e in by["adapter"])
    assert any("SKU-4471" in e.prompt for e in by["rag"])
    for e in by["combined"]:  # an exemplar plus a document question, never judged by itself
        assert len(e.leave_out) == 1 and e.leave_out[0] in e.prompt
    assert len({e.prompt for e in out}) == len(out)
    assert bootstrap_examples([], [], per_path=5) and {
        e.route for e in bootstrap_examples([], [])
    } == {"prompt"}


def test_held_out_dataset_prompts_must_be_the_adapters_dataset(fakes, tmp_path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"dataset_digest": "abc123"}))
    (tmp_path / "test.jsonl").write_text(
        json.dumps({"messages": [{"role": "user", "content": "Extract: one mug"},
                                 {"role": "assistant", "content": "{}"}]}) + "\n"
    )  # fmt: skip
    (tmp_path / "validation.jsonl").write_text(json.dumps({"prompt": "Extract: two lamps"}) + "\n")
    orders = replace(fakes.av("orders", ["Extract the order"]), dataset_digest="abc123")
    assert dataset_prompts(tmp_path, orders) == ["Extract: one mug", "Extract: two lamps"]
    out = bootstrap_examples([orders], [], datasets={"orders": tmp_path}, per_path=10)
    assert {e.prompt for e in out if e.route == "adapter"} == {
        "Extract the order", "Extract: one mug", "Extract: two lamps"
    }  # fmt: skip
    with pytest.raises(ServiceError) as exc:
        dataset_prompts(tmp_path, replace(orders, dataset_digest="fff999"))
    assert exc.value.code == "dataset_mismatch"
