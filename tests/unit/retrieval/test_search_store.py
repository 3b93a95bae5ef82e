"""Search scoring, request checks, store naming and ingest helpers, without Chroma."""

from __future__ import annotations

import pytest

from retrieval import bm25
from retrieval.errors import RetrievalError
from retrieval.fusion import normalised, rrf
from retrieval.ingest import IngestReport, expand_paths, load_paths
from retrieval.search import (
    Hit,
    check_request,
    identifiers,
    rare_names,
    search_collection,
    strength,
)
from retrieval.store import ChromaStore, check_tenant, chroma_where, collection_name


class FakeCollection:
    """Just enough of a Chroma collection for `search_collection`: exact cosine search."""

    def __init__(self, ids, texts, vectors, metas) -> None:
        self.rows = {i: (t, v, m) for i, t, v, m in zip(ids, texts, vectors, metas, strict=True)}

    def count(self) -> int:
        return len(self.rows)

    def query(self, query_embeddings, n_results, where, include):
        q = query_embeddings[0]
        ok = [
            (i, r) for i, r in self.rows.items() if not where or r[2].get("lang") == where["lang"]
        ]
        scored = sorted(ok, key=lambda ir: -sum(a * b for a, b in zip(q, ir[1][1], strict=True)))
        top = scored[:n_results]
        return {
            "ids": [[i for i, _ in top]],
            "documents": [[r[0] for _, r in top]],
            "metadatas": [[r[2] for _, r in top]],
            "distances": [[1 - sum(a * b for a, b in zip(q, r[1], strict=True)) for _, r in top]],
        }

    def get(self, ids, include):
        return {"ids": ids, "embeddings": [self.rows[i][1] for i in ids]}


class OneHot:
    """Embeds by keyword: dense search here knows colours, not codes."""

    name = "one-hot"
    dim = 3
    words = ("red", "blue", "green")

    def embed(self, texts):
        out = []
        for t in texts:
            v = [1.0 if w in t.lower() else 0.0 for w in self.words]
            n = sum(x * x for x in v) ** 0.5 or 1.0
            out.append([x / n for x in v])
        return out


def make_col():
    texts = ["SKU-4471 is a red kettle.", "SKU-1234 is a red toaster.", "A blue lamp, SKU-9999."]
    ids = ["a", "b", "c"]
    metas = [{"doc_id": i, "source": f"{i}.md", "lang": "en"} for i in ids]
    col = FakeCollection(ids, texts, OneHot().embed(texts), metas)
    index = bm25.build(ids, texts, metas, "v1")
    return col, index


def test_hybrid_scores_are_normalised_and_exact_codes_win() -> None:
    col, index = make_col()
    result = search_collection(col, index, OneHot(), "price of the red SKU-1234", top_k=3)
    assert [h.id for h in result.hits][0] == "b"
    top = result.hits[0]
    # dense ranks b first or second (tied with a), BM25 and the identifier leg rank it first
    assert 0 < top.score <= 1 and all(0 <= h.score <= 1 for h in result.hits)
    assert top.relevance == 1.0 and top.bm25 is not None and top.bm25 > 0
    assert top.dense == pytest.approx(1.0)
    assert result.strength["top"] == 1.0 and result.strength["fused_top"] == top.score
    dense_only = search_collection(col, index, OneHot(), "SKU-1234", top_k=3, mode="dense")
    assert all(h.bm25 is None for h in dense_only.hits)


def test_bm25_mode_and_filters_and_empty_query() -> None:
    col, index = make_col()
    hits = search_collection(col, index, OneHot(), "blue lamp", top_k=2, mode="bm25").hits
    assert hits[0].id == "c" and hits[0].dense is None and hits[0].score == pytest.approx(1.0)
    none = search_collection(col, index, OneHot(), "red", top_k=2, where={"lang": "de"})
    assert none.hits == [] and none.strength["top"] == 0.0
    assert search_collection(col, index, OneHot(), "   ").hits == []


def test_bm25_mode_keeps_weak_matches_that_hybrid_leaves_out_of_fusion() -> None:
    # "sku" is in every chunk, so chunks matching only it score far under 10% of the kettle's
    texts = ["SKU-1 the kettle."] + [f"SKU-{i} item number {i}." for i in range(2, 10)]
    ids = [f"d{i}" for i in range(1, 10)]
    metas = [{"doc_id": i, "source": f"{i}.md"} for i in ids]
    col = FakeCollection(ids, texts, OneHot().embed(texts), metas)
    index = bm25.build(ids, texts, metas, "v1")
    scores = dict(index.search("sku kettle", 10))
    assert scores["d2"] < 0.1 * scores["d1"]
    hits = search_collection(col, index, OneHot(), "sku kettle", top_k=3, mode="bm25").hits
    assert len(hits) == 3 and hits[0].id == "d1" and all(h.bm25 for h in hits)
    # In hybrid mode the floor stays: the weak chunks get only the dense leg's vote (all tie
    # there, as no colour is named), half the best possible score.
    hybrid = search_collection(col, index, OneHot(), "sku kettle", top_k=9).hits
    assert hybrid[0].id == "d1"
    assert {h.score for h in hybrid[1:]} == {0.5}


def test_identifiers_need_a_letter_and_a_digit() -> None:
    assert identifiers("How much is SKU-4471, and E1234?") == {"sku-4471", "e1234"}
    assert identifiers("ships in 3-5 days for 2024, size A4") == set()


def accounts():
    """Account records: one names the person asked about, the others hold the query's other
    words ("age", "city"). The dense leg (keywords only) ranks the others first."""
    texts = [f"Person{i}: age {20 + i}, city Red Town." for i in range(8)]
    texts.append("Orlia (27) moved to Basel last spring.")
    texts.append("Red Town accounts: you can pay by card.")
    ids = [f"p{i}" for i in range(10)]
    metas = [
        {"doc_id": "accounts", "source": "accounts.md", "heading": f"Account {i}"} for i in ids
    ]
    col = FakeCollection(ids, texts, OneHot().embed(texts), metas)
    return col, bm25.build(ids, texts, metas, "v1")


def test_a_rare_name_in_the_query_ranks_the_chunk_that_holds_it_first() -> None:
    col, index = accounts()
    query = "The name, city and age as red JSON. Text: Orlia, from our files."
    assert rare_names(query, index) == {"orlia"}  # "Text", "JSON": no chunk holds them
    hits = search_collection(col, index, OneHot(), query, top_k=3).hits
    assert hits[0].text.startswith("Orlia") and hits[0].relevance == 1.0
    # Without the name ranking the name's chunk ties with the dense leg's favourite and loses.
    plain = search_collection(col, index, OneHot(), query, top_k=3, identifier_leg=False).hits
    assert not plain[0].text.startswith("Orlia")
    # A name many chunks hold is not rare; lower-case words are not names.
    assert rare_names("Red Town", index) == set()
    assert rare_names("orlia and basel", index) == set()
    assert index.document_frequency("orlia") == 1 and index.document_frequency("nope") == 0
    # A rare word that opened the question but is a common word in the chunks is not a name.
    assert rare_names("Can I pay by card?", index) == {"can"}
    asked = search_collection(col, index, OneHot(), "Can I pay by card?", top_k=3).hits
    assert all(h.relevance < 1.0 for h in asked)


def test_strength_top_and_margin() -> None:
    def hit(rel: float, score: float) -> Hit:
        return Hit("i", "d", "s", "t", "x", score=score, relevance=rel)

    assert strength([hit(0.8, 1.0), hit(0.5, 0.6)]) == {
        "top": 0.8,
        "margin": pytest.approx(0.3),
        "fused_top": 1.0,
    }
    assert strength([hit(0.4, 0.9)])["margin"] == 0.4
    assert strength([]) == {"top": 0.0, "margin": 0.0, "fused_top": 0.0}


def test_rrf_normalised_three_legs() -> None:
    scores = rrf([["a", "b"], ["a"], ["b", "a"]], k=60)
    assert normalised(scores["a"], legs=3) == pytest.approx((2 / 61 + 1 / 62) / (3 / 61))
    assert normalised(3 / 61, legs=3) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("top_k", "where", "mode", "match"),
    [
        (4, None, "fuzzy", "mode must be one of"),
        (0, None, "hybrid", "top_k must be between 1 and 50"),
        (51, None, "hybrid", "top_k"),
        (4, {"tags": ["a"]}, "hybrid", "'tags' must map to a plain value"),
        (4, "lang=en", "hybrid", "plain values"),
        (4, {"$or": "x"}, "hybrid", "'\\$or' is not a metadata field name"),
        (4, {"lang": "en", "$and": []}, "hybrid", "operators such as \\$or are not supported"),
        (4, {"": "x"}, "hybrid", "not a metadata field name"),
        (4, {"n": float("inf")}, "hybrid", "'n' must be a finite number"),
    ],
)
def test_bad_search_requests(top_k, where, mode, match) -> None:
    with pytest.raises(RetrievalError, match=match) as exc:
        check_request(top_k, where, mode)
    assert exc.value.kind == "invalid"


def test_tenant_names_become_safe_collection_names() -> None:
    assert collection_name("acme-1") == "lpx_acme-1_docs"
    for bad in ("", "../etc", "a b", "x" * 64, "-lead", "a/b"):
        with pytest.raises(RetrievalError, match="tenant") as exc:
            check_tenant(bad)
        assert exc.value.kind == "invalid"


def test_chroma_where_and_store_modes() -> None:
    assert chroma_where(None) is None
    assert chroma_where({"lang": "en"}) == {"lang": "en"}
    assert chroma_where({"lang": "en", "v": 2}) == {"$and": [{"lang": "en"}, {"v": 2}]}
    with pytest.raises(ValueError, match="exactly one"):
        ChromaStore()


def test_ingest_report_merge() -> None:
    a = IngestReport(1, 3, 0, 0, ["x"])
    b = IngestReport(2, 0, 1, 1, ["y", "z"])
    assert a.merge(b).to_dict() == {
        "documents": 3,
        "added": 3,
        "removed": 1,
        "unchanged": 1,
        "doc_ids": ["x", "y", "z"],
    }


def test_paths_skip_hidden_and_check_size_before_reading(tmp_path) -> None:
    (tmp_path / "docs" / ".git").mkdir(parents=True)
    (tmp_path / "docs" / ".git" / "HEAD.txt").write_text("ref")
    (tmp_path / "docs" / "a.md").write_text("# A\n\nAlpha.")
    (tmp_path / "docs" / "b.txt").write_text("Beta.")
    assert [p.name for p in expand_paths([tmp_path / "docs"])] == ["a.md", "b.txt"]
    docs = load_paths([tmp_path / "docs"], 1000)
    assert [d.title for d in docs] == ["A", "b"]
    (tmp_path / "big.txt").write_text("x" * 5000)
    with pytest.raises(RetrievalError, match="limit is 1000") as exc:
        load_paths([tmp_path / "big.txt"], 1000)
    assert exc.value.kind == "too_large"
    with pytest.raises(RetrievalError, match="does not exist") as exc:
        expand_paths([tmp_path / "missing.md"])
    assert exc.value.kind == "not_found"


def test_ties_share_a_rank_in_fusion() -> None:
    from retrieval.fusion import ranks

    assert ranks({"a": 3.0, "b": 1.5, "c": 1.5, "d": 0.2}) == {"a": 1, "b": 2, "c": 2, "d": 4}
    near = {"a": 10.0, "b": 9.5, "c": 9.1, "d": 8.9, "e": 2.0}
    assert ranks(near, tolerance=0.1) == {"a": 1, "b": 1, "c": 1, "d": 4, "e": 5}
    fused = rrf([ranks({"x": 2.0, "y": 2.0, "z": 2.0}), ["z", "y", "x"]])
    assert fused["z"] > fused["y"] > fused["x"]  # the tied leg leaves the order to the other
    assert fused["x"] == pytest.approx(1 / 61 + 1 / 63)


class HalfWritten(FakeCollection):
    """A collection seen mid-write from another process: Chroma's dense side lacks `no_vector`
    (the "Error finding id" case), and still returns `gone`, which the BM25 index dropped."""

    def __init__(self, *args, no_vector: str, gone: str) -> None:
        super().__init__(*args)
        self.no_vector, self.gone = no_vector, gone

    def query(self, query_embeddings, n_results, where, include):
        res = super().query(query_embeddings, n_results, where, include)
        keep = [j for j, i in enumerate(res["ids"][0]) if i != self.no_vector]
        return {key: [[rows[0][j] for j in keep]] for key, rows in res.items()}

    def get(self, ids, include):
        if self.no_vector in ids:
            raise RuntimeError("Error executing plan: Internal error: Error finding id")
        return super().get(ids, include)


def test_a_chunk_only_one_leg_knows_is_skipped_not_an_error() -> None:
    texts = [
        "SKU-4471 is a red kettle.",
        "SKU-1234 is a red toaster.",
        "A blue lamp, SKU-9999.",
        "The old red kettle price.",
    ]
    ids = ["a", "b", "c", "old"]
    metas = [{"doc_id": i, "source": f"{i}.md", "lang": "en"} for i in ids]
    col = HalfWritten(ids, texts, OneHot().embed(texts), metas, no_vector="c", gone="old")
    index = bm25.build(ids[:3], texts[:3], metas[:3], "v2")  # "old" was deleted
    # c (BM25's best: "blue lamp SKU-9999") has no vector; "old" is no longer in the BM25 index
    hits = search_collection(col, index, OneHot(), "blue lamp SKU-9999 old kettle", top_k=4).hits
    assert [h.id for h in hits] == ["a", "b"]
    dense = search_collection(col, index, OneHot(), "red", top_k=4, mode="dense").hits
    assert [h.id for h in dense] in (["a", "b"], ["b", "a"])
