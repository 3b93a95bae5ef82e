"""RetrievalService against a real embedded Chroma (see conftest.py)."""

from __future__ import annotations

import pytest

from retrieval import bm25
from retrieval.errors import RetrievalError

PRICES = (
    b'{"id": "k1", "text": "The kettle costs 40 euros."}\n'
    b'{"id": "t1", "text": "The toaster costs 25 euros."}\n'
    b'{"text": "The lamp costs 15 euros."}\n'
)


def test_reingesting_a_jsonl_file_replaces_all_its_records(service, stored) -> None:
    service.ingest_bytes("acme", "prices.jsonl", PRICES)
    service.ingest_bytes("acme", "notes.md", b"# Notes\n\nThe shop opens at nine.")
    assert len(stored()) == 4
    # t1 removed from the file, the id-less lamp record's price changed
    changed = PRICES.replace(b'{"id": "t1", "text": "The toaster costs 25 euros."}\n', b"")
    report = service.ingest_bytes("acme", "prices.jsonl", changed.replace(b"15", b"18"))
    assert (report.added, report.removed, report.unchanged) == (1, 2, 1)
    assert stored() == {
        "The kettle costs 40 euros.",
        "The lamp costs 18 euros.",
        "The shop opens at nine.",
    }
    hits = service.search("acme", "toaster", top_k=5, mode="bm25").hits
    assert hits == []  # the BM25 index followed the deletion


def test_deleting_a_records_file_by_name_removes_every_record(service, stored) -> None:
    service.ingest_bytes("acme", "prices.jsonl", PRICES)
    service.ingest_records("acme", [{"id": "h1", "text": "Opening hours: nine to five."}])
    assert service.delete_source("acme", "prices.jsonl") == 3
    assert stored() == {"Opening hours: nine to five."}
    service.ingest_bytes("acme", "prices.json", b'[{"id": "k1", "text": "Kettle: 40 euros."}]')
    assert service.delete_document("acme", "prices.json") == 1
    assert service.delete_document("acme", "h1") == 1 and stored() == set()


def test_records_sent_as_json_stay_separate_documents(service, stored) -> None:
    service.ingest_records("acme", [{"id": "a", "text": "Alpha."}, {"id": "b", "text": "Beta."}])
    # a second request with only one record leaves the other alone: records have no file
    service.ingest_records("acme", [{"id": "a", "text": "Alpha, revised."}])
    assert stored() == {"Alpha, revised.", "Beta."}
    assert service.delete_document("acme", "b") == 1 and stored() == {"Alpha, revised."}


def test_file_records_stored_without_their_file_are_claimed_on_reingest(service, stored) -> None:
    # Chunks written before files were recorded carry no `ingested_from`; re-ingesting the file
    # must tag them, or a later re-ingest could never remove them.
    service.ingest_bytes("acme", "prices.jsonl", PRICES)
    col = service.store.collection("acme", "hashed-words", create=False)
    got = col.get(include=["metadatas"])
    col.update(
        ids=got["ids"],
        metadatas=[{**m, "ingested_from": None} for m in got["metadatas"]],
    )
    service.ingest_bytes("acme", "prices.jsonl", PRICES)
    service.ingest_bytes(
        "acme", "prices.jsonl", b'{"id": "k1", "text": "The kettle costs 40 euros."}'
    )
    assert stored() == {"The kettle costs 40 euros."}


def test_drop_tenant_removes_collection_and_bm25_index(service, tmp_path, stored) -> None:
    service.ingest_bytes("acme", "prices.jsonl", PRICES)
    service.ingest_bytes("globex", "g.md", b"Globex sells kettles.")
    assert (tmp_path / "bm25" / "acme").is_dir()
    assert service.drop_tenant("acme") is True
    assert not (tmp_path / "bm25" / "acme").exists()
    assert service.search("acme", "kettle", mode="bm25").hits == []
    assert service.stats("acme")["chunks"] == 0
    # a tenant created again under the name starts empty; others are untouched
    service.ingest_bytes("acme", "new.md", b"Fresh start.")
    assert stored() == {"Fresh start."}
    assert stored("globex") == {"Globex sells kettles."}
    assert service.drop_tenant("nobody") is False


def test_a_bad_file_in_a_batch_writes_nothing(service, stored) -> None:
    service.ingest_bytes("acme", "keep.md", b"Kept.")
    files = [
        ("a.md", b"Alpha."),
        ("b.txt", b"Beta."),
        ("c.jsonl", b'{"text": "ok"}\n{oops}\n'),
    ]
    with pytest.raises(RetrievalError, match="c.jsonl line 2"):
        service.ingest_files("acme", files)
    assert stored() == {"Kept."}


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("heads.md", b"# Title\n\n## Section\n"),
        ("heads.html", b"<html><body><h1>Title</h1><h2>Section</h2></body></html>"),
    ],
)
def test_headings_only_is_refused_before_anything_is_written(service, name, data, stored) -> None:
    with pytest.raises(RetrievalError, match=f"{name} has no text") as exc:
        service.ingest_files("acme", [("ok.md", b"Fine."), (name, data)])
    assert exc.value.kind == "invalid"
    assert stored() == set()


def test_where_operators_are_a_400_not_a_chroma_error(service) -> None:
    service.ingest_records("acme", [{"text": "Kettle manual.", "lang": "en"}])
    for where in ({"$or": "x"}, {"lang": "en", "$and": [1]}, {"": "en"}):
        with pytest.raises(RetrievalError, match="not a metadata field name") as exc:
            service.search("acme", "kettle", where=where)
        assert exc.value.kind == "invalid"
    with pytest.raises(RetrievalError, match="finite"):
        service.search("acme", "kettle", where={"n": float("nan")})
    assert len(service.search("acme", "kettle", where={"lang": "en"}).hits) == 1


def test_bm25_save_survives_a_leftover_old_dir(service, tmp_path) -> None:
    service.ingest_records("acme", [{"id": "a", "text": "Kettle manual."}])
    (tmp_path / "bm25" / "acme.old" / "model").mkdir(parents=True)  # left by a crash
    service.ingest_records("acme", [{"id": "b", "text": "Toaster manual."}])
    saved = bm25.load(tmp_path / "bm25" / "acme")
    assert saved is not None and len(saved.ids) == 2
    assert not (tmp_path / "bm25" / "acme.old").exists()


def test_inserting_a_section_embeds_only_it(service) -> None:
    sections = [
        f"## {w.title()}\n\nThe {w} is {i * 7} metres long."
        for i, w in enumerate(["bridge", "tunnel", "tower", "canal"])
    ]
    service.ingest_bytes("acme", "site.md", "\n\n".join(sections).encode())
    col = service.store.collection("acme", "hashed-words", create=False)
    before = set(col.get()["ids"])
    new = "## Harbour\n\nThe harbour has 3 cranes."
    report = service.ingest_bytes("acme", "site.md", "\n\n".join([new, *sections]).encode())
    assert (report.added, report.removed) == (1, 0)  # one chunk embedded, none rewritten
    after = col.get(include=["metadatas", "documents"])
    assert before < set(after["ids"])  # the old chunks kept their ids
    position = {
        d: m["position"] for d, m in zip(after["documents"], after["metadatas"], strict=True)
    }
    assert position["The harbour has 3 cranes."] == 0
    assert position["The canal is 21 metres long."] == 4


def test_reads_of_whole_collections_go_page_by_page(service, stored, monkeypatch) -> None:
    # Chroma fails one get of more than ~32k rows with metadata; pages keep every read small.
    import retrieval.store as store_module

    monkeypatch.setattr(store_module, "GET_PAGE", 3)
    records = [{"id": f"r{i}", "text": f"Record {i} is about item {i}."} for i in range(8)]
    service.ingest_records("acme", records)
    assert service.stats("acme")["chunks"] == 8
    service.ingest_bytes(
        "acme", "list.jsonl", b'{"id": "a", "text": "A."}\n{"id": "b", "text": "B."}'
    )
    service.ingest_bytes("acme", "list.jsonl", b'{"id": "a", "text": "A."}')
    assert service.stats("acme") | {"version": ""} == {
        "tenant": "acme",
        "chunks": 9,
        "documents": 9,
        "embedding_model": "hashed-words",
        "version": "",
    }
    assert len(stored()) == 9
