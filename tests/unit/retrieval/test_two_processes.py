"""Two processes on one embedded Chroma path: this test process holds a RetrievalService and
searches (as the gateway does) while other processes ingest through their own (as
`loraplex ingest` does). Every committed write must be found at once, never cause an error, and
an edited fact must replace the old one in both legs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from retrieval.service import RetrievalService

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]

CHILD = """
import json, sys
from pathlib import Path
sys.path[:0] = [{repo!r}, {here!r}]
from conftest import HashedWords
from retrieval.service import RetrievalService
root = Path({root!r})
svc = RetrievalService(bm25_dir=root / "bm25", chroma_path=root / "chroma", embedder=HashedWords())
op, args = sys.argv[1], json.loads(sys.argv[2])
if op == "ingest":
    print(json.dumps(svc.ingest_bytes("acme", args[0], args[1].encode()).to_dict()))
elif op == "delete":
    print(json.dumps(svc.delete_document("acme", args[0])))
else:
    print(json.dumps([h.text for h in svc.search("acme", args[0], top_k=5).hits]))
"""


@pytest.fixture
def other(tmp_path):
    """Run one operation in a separate process on the same paths; returns its JSON output."""
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(repo=str(REPO), here=str(HERE), root=str(tmp_path)))

    def run(op: str, *args: str):
        out = subprocess.run(
            [sys.executable, str(script), op, json.dumps(list(args))],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    return run


def texts(service: RetrievalService, query: str, mode: str = "hybrid") -> list[str]:
    return [h.text for h in service.search("acme", query, top_k=5, mode=mode).hits]


def test_writes_from_another_process_are_found_at_once(service, other) -> None:
    gateway = service  # on tmp_path/chroma and tmp_path/bm25, as the other processes
    other("ingest", "a.md", "The kettle costs 40 euros.")
    assert texts(gateway, "kettle price") == ["The kettle costs 40 euros."]

    # The second file: before the fix, the dense look-up of the new chunk failed
    # ("Error finding id") because this process's client never saw its vector.
    other("ingest", "b.md", "The toaster costs 25 euros.")
    for mode in ("hybrid", "dense", "bm25"):
        assert texts(gateway, "toaster price", mode)[0] == "The toaster costs 25 euros.", mode

    # An edited fact: the new one is found, the old one never, in any mode.
    other("ingest", "a.md", "The kettle costs 55 euros.")
    for mode in ("hybrid", "dense", "bm25"):
        found = texts(gateway, "kettle price", mode)
        assert found[0] == "The kettle costs 55 euros.", mode
        assert "The kettle costs 40 euros." not in found, mode

    assert other("delete", "b.md") == 1
    assert all("toaster" not in t for t in texts(gateway, "toaster price"))

    # And the other way round: this process writes, a fresh process reads everything.
    gateway.ingest_bytes("acme", "c.md", b"The lamp costs 15 euros.")
    assert set(other("search", "lamp kettle price")) == {
        "The lamp costs 15 euros.",
        "The kettle costs 55 euros.",
    }
    reopens, _ = gateway.store.reopen_stats
    assert reopens == 3  # one per foreign write it then read; none for its own write


def test_a_writer_catches_up_before_writing(service, other) -> None:
    gateway = service
    gateway.ingest_bytes("acme", "a.md", b"The kettle costs 40 euros.")
    other("ingest", "b.md", "The toaster costs 25 euros.")
    # This process writes without searching first: its BM25 index must take in b.md too.
    gateway.ingest_bytes("acme", "c.md", b"The lamp costs 15 euros.")
    index = gateway._lexical["acme"]
    col = gateway.store.collection("acme", "hashed-words", create=False)
    assert set(index.ids) == set(col.get(include=[])["ids"])
    assert len(index) == 3
    assert texts(gateway, "toaster")[0] == "The toaster costs 25 euros."
