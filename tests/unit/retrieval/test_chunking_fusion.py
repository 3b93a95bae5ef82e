import pytest

from retrieval import bm25
from retrieval.chunking import chunk_id, chunk_text, count_tokens, sections
from retrieval.fusion import normalised, rrf

DOC = """# Kettles

The blue kettle costs 40 euros.

It boils a litre in three minutes.

## Warranty

Two years, parts and labour.

# Toasters

The red toaster has four slots.
"""


def test_sections_follow_headings() -> None:
    got = sections(DOC)
    assert [h for h, _ in got] == ["Kettles", "Kettles > Warranty", "Toasters"]
    assert got[0][1] == ["The blue kettle costs 40 euros.", "It boils a litre in three minutes."]


def test_chunks_respect_sections_and_size() -> None:
    chunks = chunk_text(DOC, max_tokens=50, overlap=5)
    assert [c.heading for c in chunks] == ["Kettles", "Kettles > Warranty", "Toasters"]
    assert "40 euros" in chunks[0].text and "three minutes" in chunks[0].text
    long = " ".join(f"word{i}" for i in range(500))
    windows = chunk_text(long, max_tokens=100, overlap=20)
    assert len(windows) > 5 and all(count_tokens(c.text) <= 100 for c in windows)
    first, second = windows[0].text.split(), windows[1].text.split()
    assert first[-15:] == second[:15]  # consecutive windows overlap


def test_paragraph_packing_carries_overlap() -> None:
    paras = "\n\n".join(f"Paragraph {i} says fact number {i} clearly." for i in range(20))
    chunks = chunk_text(paras, max_tokens=30, overlap=4)
    assert len(chunks) > 3
    for prev, nxt in zip(chunks, chunks[1:], strict=False):
        assert nxt.text.split()[:4] == prev.text.split()[-4:]


def test_overlap_must_be_smaller() -> None:
    with pytest.raises(ValueError):
        chunk_text("x", max_tokens=10, overlap=10)


def test_chunk_ids_are_stable_and_content_addressed() -> None:
    assert chunk_id("a.md", "", "x") == chunk_id("a.md", "", "x")
    assert (
        len(
            {
                chunk_id("a.md", "", "x"),
                chunk_id("a.md", "", "y"),
                chunk_id("b.md", "", "x"),
                chunk_id("a.md", "H", "x"),
                chunk_id("a.md", "", "x", 1),
            }
        )
        == 5
    )


def test_rrf_maths() -> None:
    scores = rrf([["a", "b", "c"], ["b", "a"]], k=60)
    assert scores["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert scores["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert scores["c"] == pytest.approx(1 / 63)
    assert normalised(2 / 61, legs=2) == pytest.approx(1.0)
    assert 0 < normalised(scores["c"], legs=2) < 0.5


def test_bm25_round_trip(tmp_path) -> None:
    ids = ["a", "b", "c"]
    texts = ["SKU-4471 blue kettle", "SKU-1234 red toaster", "weather report"]
    metas = [{"cat": "kitchen"}, {"cat": "kitchen"}, {"cat": "news"}]
    index = bm25.build(ids, texts, metas, version="v1")
    bm25.save(index, tmp_path / "t")
    loaded = bm25.load(tmp_path / "t")
    assert loaded is not None and loaded.version == "v1"
    assert [i for i, _ in loaded.search("SKU-4471", 3)][0] == "a"
    assert loaded.search("toaster", 3, where={"cat": "news"}) == []
    assert loaded.search("zzz-unknown", 3) == []
    (tmp_path / "t" / "meta.json").write_text("{broken")
    assert bm25.load(tmp_path / "t") is None


def test_sibling_headings_do_not_nest() -> None:
    text = "## A\n\nx\n\n## B\n\ny\n\n# C\n\nz\n\n### D\n\nw\n\n## E\n\nv"
    assert [h for h, _ in sections(text)] == ["A", "B", "C", "C > D", "C > E"]
