"""Retrieval against real Chroma (embedded and server mode) and the real vLLM via the gateway."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from retrieval.embeddings import SentenceTransformerEmbedder
from retrieval.errors import RetrievalError
from retrieval.service import RetrievalService

COLOURS = ["red", "blue", "green", "black", "white"]
KINDS = ["kettle", "toaster", "lamp", "chair", "desk", "mug"]


def catalog() -> list[dict]:
    """30 products that differ only in colour, kind, code and numbers."""
    items = [(c, k) for c in COLOURS for k in KINDS]
    return [
        {"id": f"p{i}", "source": f"catalog/p{i}.md",
         "text": f"Product SKU-{4400 + i}: the {c} {k} costs {10 + i} euros and ships in {i % 5 + 1} days."}
        for i, (c, k) in enumerate(items)
    ]  # fmt: skip


@pytest.fixture(scope="module")
def embedder() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder()


@pytest.fixture
def service(tmp_path, embedder) -> RetrievalService:
    return RetrievalService(
        bm25_dir=tmp_path / "bm25", chroma_path=tmp_path / "chroma", embedder=embedder
    )


def top(service, tenant, query, mode="hybrid", k=3):
    return [h.doc_id for h in service.search(tenant, query, top_k=k, mode=mode).hits]


def test_exact_codes_need_the_lexical_leg(service) -> None:
    service.ingest_records("acme", catalog())
    codes = [4403, 4417, 4422, 4429]
    missed_by_dense = 0
    for code in codes:
        want = f"p{code - 4400}"
        assert top(service, "acme", f"How much does SKU-{code} cost?")[0] == want
        missed_by_dense += want not in top(
            service, "acme", f"How much does SKU-{code} cost?", "dense"
        )
    assert missed_by_dense >= 1, "dense retrieval alone should miss at least one exact code"
    assert top(service, "acme", "what does the green lamp cost", "dense")[0] == "p14"
    result = service.search("acme", "How much does SKU-4417 cost?", top_k=3)
    assert result.hits[0].relevance == 1.0 and result.strength["top"] == 1.0
    assert 0 < result.hits[0].score <= 1.0
    weak = service.search("acme", "what is the weather in Paris", top_k=3)
    assert weak.strength["top"] < 0.5


def test_reingest_updates_and_deletes(service) -> None:
    first = service.ingest_records("acme", catalog())
    assert first.added == 30
    again = service.ingest_records("acme", catalog())
    assert again.unchanged == 30 and again.added == 0
    changed = catalog()[17]
    changed["text"] = changed["text"].replace("27 euros", "99 euros")
    report = service.ingest_records("acme", [changed])
    assert (report.added, report.removed) == (1, 1)
    hit = service.search("acme", "SKU-4417 price", top_k=1).hits[0]
    assert "99 euros" in hit.text and "27 euros" not in hit.text
    assert service.delete_document("acme", "p17") == 1
    assert "p17" not in top(service, "acme", "SKU-4417", k=5)
    assert service.stats("acme")["chunks"] == 29


def test_files_and_filters(service, tmp_path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "returns.md").write_text("# Returns\n\nItems can be returned within 30 days.\n")
    (docs / "shipping.html").write_text("<h1>Shipping</h1><p>Orders ship from Rotterdam.</p>")
    report = service.ingest_paths("acme", [docs])
    assert report.documents == 2
    hits = service.search("acme", "where do orders ship from", top_k=1).hits
    assert hits[0].source.endswith("shipping.html") and "Rotterdam" in hits[0].text
    service.ingest_records("acme", [{"text": "Kettle manual: descale monthly.", "lang": "en"},
                                    {"text": "Wasserkocher: monatlich entkalken.", "lang": "de"}])  # fmt: skip
    only_de = service.search("acme", "kettle descale", top_k=3, where={"lang": "de"}).hits
    assert [h.metadata["lang"] for h in only_de] == ["de"]


def test_tenants_are_isolated(service) -> None:
    service.ingest_records("acme", catalog())
    assert service.search("globex", "SKU-4417").hits == []
    service.ingest_records(
        "globex", [{"id": "g", "text": "Globex secret: SKU-4417 is discontinued."}]
    )
    assert all(
        h.doc_id != "g" for h in service.search("acme", "SKU-4417 discontinued", top_k=10).hits
    )
    assert all(h.doc_id == "g" for h in service.search("globex", "SKU-4417", top_k=10).hits)


def test_embedding_model_is_recorded_and_checked(tmp_path, embedder) -> None:
    kwargs = dict(bm25_dir=tmp_path / "bm25", chroma_path=tmp_path / "chroma")
    RetrievalService(embedder=embedder, **kwargs).ingest_records("acme", catalog()[:2])

    class Other:
        name = "other-model"

        def embed(self, texts):
            return embedder.embed(texts)

    with pytest.raises(RetrievalError, match="embedded with 'all-MiniLM-L6-v2'") as exc:
        RetrievalService(embedder=Other(), **kwargs).search("acme", "kettle")
    assert exc.value.kind == "conflict"


def test_onnx_embeddings_equal_sentence_transformers(embedder) -> None:
    texts = ["Product SKU-4417: the red lamp costs 27 euros.", "Opening hours", "x " * 400]
    torch = SentenceTransformerEmbedder(backend="torch")
    assert embedder.embed(texts[:1]) and embedder.active == "onnx"
    for got, want in zip(embedder.embed(texts), torch.embed(texts), strict=True):
        assert max(abs(a - b) for a, b in zip(got, want, strict=True)) < 1e-4
    assert embedder.name == torch.name == "all-MiniLM-L6-v2"  # the same model to a collection


def test_bm25_index_is_rebuilt_when_damaged(service, tmp_path) -> None:
    service.ingest_records("acme", catalog())
    shutil.rmtree(tmp_path / "bm25" / "acme")
    service._lexical.clear()
    assert top(service, "acme", "SKU-4417", "bm25")[0] == "p17"


def test_failed_ingest_leaves_chroma_and_bm25_in_step(service, embedder, monkeypatch) -> None:
    import retrieval.service as service_module

    service.ingest_records("acme", catalog()[:5])
    calls = {"n": 0}

    class Flaky:
        name = embedder.name
        dim = 384

        def embed(self, texts):
            calls["n"] += 1
            if calls["n"] == 2:
                raise RuntimeError("embedding worker died")
            return embedder.embed(texts)

    monkeypatch.setattr(service_module, "INGEST_BATCH", 10)
    service.embedder = Flaky()
    with pytest.raises(RuntimeError, match="worker died"):
        service.ingest_records("acme", catalog())  # the first batch lands, the second fails
    col = service.store.collection("acme", embedder.name, create=False)
    in_chroma = set(col.get(include=[])["ids"])
    index = service._lexical_for("acme", col)
    assert len(in_chroma) == 10  # p0-p4 were there already; batch 1 added p5-p9
    assert set(index.ids) == in_chroma
    service.embedder = embedder
    report = service.ingest_records("acme", catalog())  # a retry completes the job
    assert (report.unchanged, report.added) == (10, 20)
    assert set(service._lexical_for("acme", col).ids) == set(col.get(include=[])["ids"])


def test_delete_by_source_stats_and_bad_tenant(service, embedder) -> None:
    assert embedder.dim == 384
    service.ingest_records("acme", catalog()[:3])
    stats = service.stats("acme")
    assert (stats["chunks"], stats["documents"], stats["embedding_model"]) == (
        3,
        3,
        "all-MiniLM-L6-v2",
    )
    assert service.delete_source("acme", "catalog/p1.md") == 1
    assert service.delete_source("acme", "catalog/p1.md") == 0
    assert "p1" not in top(service, "acme", "SKU-4401", "bm25")
    with pytest.raises(RetrievalError, match="tenant '../x' is invalid") as exc:
        service.search("../x", "kettle")
    assert exc.value.kind == "invalid"


@pytest.fixture
def chroma_server(tmp_path):
    port = _free_port()
    chroma = Path(sys.executable).parent / "chroma"
    proc = subprocess.Popen([str(chroma), "run", "--path", str(tmp_path / "server"), "--host",
                             "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/api/v2/heartbeat", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            pytest.fail("chroma server did not start")
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_mode(chroma_server, tmp_path, embedder) -> None:
    one = RetrievalService(bm25_dir=tmp_path / "r1", chroma_url=chroma_server, embedder=embedder)
    two = RetrievalService(bm25_dir=tmp_path / "r2", chroma_url=chroma_server, embedder=embedder)
    one.ingest_records("acme", catalog())
    # A second gateway replica sees the same collection; its BM25 index follows the version.
    assert top(two, "acme", "How much does SKU-4422 cost?")[0] == "p22"
    one.delete_document("acme", "p22")
    assert "p22" not in top(two, "acme", "SKU-4422", k=5)


def test_unreachable_server_is_a_503(tmp_path, embedder) -> None:
    dead = RetrievalService(bm25_dir=tmp_path / "b", chroma_url=f"http://127.0.0.1:{_free_port()}",
                            embedder=embedder)  # fmt: skip
    with pytest.raises(RetrievalError) as exc:
        dead.search("acme", "kettle")
    assert exc.value.kind == "unavailable"


FACT = "The Zorblax 3000 drone has a maximum flight time of 47 minutes."


def test_rag_chat_through_the_gateway_cites_its_source(stack) -> None:
    key = stack.make_tenant("rag-acme")
    auth = {"Authorization": f"Bearer {key}"}
    client = stack.openai(key)
    question = [
        {"role": "user", "content": "What is the maximum flight time of the Zorblax 3000 drone?"}
    ]
    with httpx.Client(base_url=stack.gateway_url, headers=auth, timeout=120) as http:
        records = [{"id": "zorblax", "source": "drones/zorblax.md", "text": FACT},
                   {"id": "kettle", "source": "kitchen/kettle.md", "text": "The kettle holds 1.7 litres."}]  # fmt: skip
        resp = http.post("/v1/documents", json={"records": records})
        assert resp.status_code == 201 and resp.json()["added"] == 2
        found = http.post(
            "/v1/retrieve", json={"query": "Zorblax 3000 flight time", "top_k": 2}
        ).json()
        assert found["hits"][0]["source"] == "drones/zorblax.md"

        answer = client.chat.completions.create(
            model="auto", messages=question, temperature=0, max_tokens=40,
            extra_body={"loraplex": {"route": "rag"}},
        )  # fmt: skip
        extra = answer.model_extra["loraplex"]
        assert extra["route"] == "rag" and extra["citations"][0]["source"] == "drones/zorblax.md"
        assert "47" in answer.choices[0].message.content

        auto = client.chat.completions.create(
            model="auto", messages=question, temperature=0, max_tokens=40
        )
        assert auto.model_extra["loraplex"]["route"] == "rag"  # strong match: the router picks rag

        updated = [{**records[0], "text": FACT.replace("47", "52")}]
        assert http.post("/v1/documents", json={"records": updated}).json()["removed"] == 1
        answer = client.chat.completions.create(
            model="auto", messages=question, temperature=0, max_tokens=40,
            extra_body={"loraplex": {"route": "rag"}},
        )  # fmt: skip
        assert "52" in answer.choices[0].message.content

        assert http.delete("/v1/documents/zorblax").status_code == 200
        hits = http.post("/v1/retrieve", json={"query": "Zorblax 3000 flight time"}).json()["hits"]
        assert all(h["doc_id"] != "zorblax" for h in hits)
        assert http.delete("/v1/documents/zorblax").status_code == 404

        bad = http.post(
            "/v1/documents", files={"file": ("a.exe", b"MZ\x00\x00", "application/octet-stream")}
        )
        assert bad.status_code == 415 and bad.json()["error"]["code"] == "unsupported_type"
        bad = http.post(
            "/v1/documents", files={"file": ("a.jsonl", b'{"text": "ok"}\n{oops}\n', "text/plain")}
        )
        assert bad.status_code == 400 and "line 2" in bad.json()["error"]["message"]
        assert http.post("/v1/documents", json={"records": []}).status_code == 400
        upload = http.post(
            "/v1/documents",
            files={"file": ("guide.md", b"# Guide\n\nPress the red button.", "text/markdown")},
        )
        assert upload.status_code == 201 and upload.json()["doc_ids"] == ["guide.md"]
    other = httpx.post(f"{stack.gateway_url}/v1/retrieve", json={"query": "red button"},
                       headers={"Authorization": f"Bearer {stack.make_tenant('rag-other')}"})  # fmt: skip
    assert other.status_code == 200 and other.json()["hits"] == []
