"""The incremental BM25 index: bm25s's scores, equal to a rebuild after any series of writes."""

from __future__ import annotations

import random

import bm25s
import numpy as np
import pytest

from retrieval import bm25

WORDS = [
    "kettle",
    "toaster",
    "lamp",
    "red",
    "blue",
    "green",
    "steel",
    "oak",
    "glass",
    "costs",
    "euros",
    "ships",
    "days",
    "warranty",
    "price",
    "code",
    "sku",
    "order",
    "return",
    "shipping",
    "free",
    "store",
    "opens",
    "closes",
    "monday",
]


def corpus(n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    texts = [" ".join(rng.choices(WORDS, k=rng.randint(3, 25))) + f" SKU-{i}" for i in range(n)]
    return [f"c{seed}-{i}" for i in range(n)], texts


def scores(index: bm25.LexicalIndex, query: str) -> dict[str, float]:
    return dict(index.search(query, 10_000))


def test_scores_match_bm25s() -> None:
    ids, texts = corpus(300, seed=1)
    ours = bm25.build(ids, texts, [{} for _ in ids], "v1")
    theirs = bm25s.BM25()
    theirs.index(
        bm25s.tokenize(texts, stopwords="en", return_ids=False, show_progress=False),
        show_progress=False,
    )
    for query in ("red kettle", "price of the steel lamp", "sku-17 costs", "free shipping days"):
        tokens = [t for t in bm25.tokenize(query) if t in theirs.vocab_dict]
        expected = theirs.get_scores(tokens)
        got = np.zeros(len(ids))
        for cid, score in ours.search(query, len(ids)):
            got[ids.index(cid)] = score
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-6), query


def test_incremental_writes_equal_a_rebuild() -> None:
    rng = random.Random(3)
    live: dict[str, str] = {}
    index = bm25.LexicalIndex("v0")
    for step in range(40):
        ids, texts = corpus(rng.randint(1, 60), seed=100 + step)
        index.add(ids, texts)
        live.update(zip(ids, texts, strict=True))
        if step % 3 == 2:  # delete a random third, and replace a few under the same id
            gone = rng.sample(sorted(live), len(live) // 3)
            index.remove(gone)
            for cid in gone:
                del live[cid]
            again = rng.sample(sorted(live), min(5, len(live)))
            index.add(again, [live[c] for c in again])
    assert set(index.ids) == set(live) and len(index) == len(live)
    rebuilt = bm25.build(list(live), list(live.values()), [{} for _ in live], "v1")
    for query in ("red kettle", "steel lamp warranty", "sku-7 code", "monday opens"):
        ours, theirs = scores(index, query), scores(rebuilt, query)
        assert ours.keys() == theirs.keys(), query
        for cid, value in theirs.items():
            assert ours[cid] == pytest.approx(value, rel=1e-9), query


def test_deleted_rows_are_swept_and_records_follow(monkeypatch) -> None:
    monkeypatch.setattr(bm25, "SWEEP_MIN", 5)
    index = bm25.build(
        ["a", "b", "c"],
        ["red kettle", "blue lamp", "red lamp"],
        [{"cat": "k"}, {"cat": "l"}, {"cat": "l"}],
        "v1",
    )
    index.add([f"x{i}" for i in range(10)], ["filler words"] * 10)
    index.remove([f"x{i}" for i in range(10)])
    assert len(index._ids) == 3  # swept: 10 of 13 rows were dead
    assert [c for c, _ in index.search("red", 5)] in (["a", "c"], ["c", "a"])
    assert [c for c, _ in index.search("lamp", 5, where={"cat": "k"})] == []
    index.update_metadata({"a": {"position": 4}})
    assert index.record("a") == ("red kettle", {"cat": "k", "position": 4})
    assert index.record("x1") is None and "x1" not in index


def test_headings_are_indexed_with_the_text() -> None:
    index = bm25.build(
        ["a", "b"],
        ["It weighs 2 kg.", "It weighs 3 kg."],
        [{"heading": "Catalogue > Zorvik kettle"}, {"heading": "Other"}],
        "v1",
    )
    assert index.search("zorvik", 5)[0][0] == "a"
    assert index.record("a") == ("It weighs 2 kg.", {"heading": "Catalogue > Zorvik kettle"})


def test_save_load_and_catch_up(tmp_path) -> None:
    ids, texts = corpus(50, seed=9)
    index = bm25.build(ids, texts, [{"n": i} for i in range(50)], "v1")
    index.remove(ids[:5])
    index.save(tmp_path / "t")
    loaded = bm25.load(tmp_path / "t")
    assert loaded is not None and loaded.version == "v1" and set(loaded.ids) == set(ids[5:])
    assert scores(loaded, "red kettle") == pytest.approx(scores(index, "red kettle"))

    class Col:  # what Chroma holds now: two chunks gone, one new
        held = {c: (t, {"n": 0}) for c, t in zip(ids[7:], texts[7:], strict=True)}
        held["new"] = ("brand new green kettle", {"n": 99})

        def get(self, ids=None, include=()):
            wanted = list(self.held) if ids is None else [i for i in ids if i in self.held]
            return {
                "ids": wanted,
                "documents": [self.held[i][0] for i in wanted],
                "metadatas": [self.held[i][1] for i in wanted],
            }

    assert bm25.catch_up(loaded, Col(), "v2") == (1, 2)
    assert loaded.version == "v2" and set(loaded.ids) == set(Col.held)
    assert loaded.search("brand", 3)[0][0] == "new"
    (tmp_path / "t" / "meta.json").write_text('{"version": "v1", "ids": []}')  # older layout
    assert bm25.load(tmp_path / "t") is None
