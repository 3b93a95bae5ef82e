"""Retrieval quality and speed: dense vs BM25 vs hybrid on a generated, labelled corpus.

Generates N product-fact chunks (each with a unique code like SKU-104471 and a unique
brand/colour/material/kind combination) and a labelled query set: exact-code questions, and
paraphrases that name the brand but describe colour, material and kind in other words (so
lexical overlap is small). Ingests them into an embedded Chroma collection, then reports query
p50/p95, recall@5 and MRR@10 for dense, BM25 and hybrid side by side, plus "hybrid-rrf2": plain
two-way RRF without the identifier ranking, to show what that ranking adds.

Also, in the same run:
- ingest chunks/s, before (PyTorch embedding, as before ONNX) and after (the default backend),
  on the first --ingest-sample chunks each, then the whole corpus with the default;
- the cost of one more write at N chunks: what the BM25 index took before (a full rebuild from
  a scan of the collection) and now (an in-place update);
- what a reader pays after another process wrote: catching its BM25 index up (an id diff) and
  reopening its embedded Chroma client (with the first query after, which reloads the index);
- memory: the process's RSS growth over the ingest (resident, so an estimate).

    .venv/bin/python bench/retrieval.py                     # 10,000 chunks, 300 queries
    .venv/bin/python bench/retrieval.py --chunks 100000     # the 100k figures (an hour or so)
    .venv/bin/python bench/retrieval.py --chunks 2000       # quicker

Up to 40,000 chunks the corpus is exactly the 10k benchmark's (its first N); beyond, more brands
supply new combinations. Results: bench/results/retrieval.json (retrieval-N.json for N != 10k).
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import pct, print_table, write_result  # noqa: E402

from retrieval import bm25  # noqa: E402
from retrieval.embeddings import SentenceTransformerEmbedder  # noqa: E402
from retrieval.search import search_collection  # noqa: E402
from retrieval.service import RetrievalService  # noqa: E402
from retrieval.store import get_all, version  # noqa: E402

BRANDS = [
    "Acme",
    "Borealis",
    "Cobalt",
    "Dunmore",
    "Elstree",
    "Fjord",
    "Garnet",
    "Halcyon",
    "Ironwood",
    "Juniper",
    "Kestrel",
    "Larkspur",
    "Meridian",
    "Northwind",
    "Oakhurst",
    "Pinnacle",
    "Quill",
    "Redwood",
    "Sterling",
    "Tamarind",
]
COLOURS = ["red", "blue", "green", "black", "white", "yellow", "grey", "orange", "purple", "teal"]
MATERIALS = [
    "steel",
    "ceramic",
    "glass",
    "oak",
    "bamboo",
    "copper",
    "plastic",
    "linen",
    "wool",
    "stone",
]
KINDS = [
    "kettle",
    "toaster",
    "lamp",
    "chair",
    "desk",
    "mug",
    "teapot",
    "blanket",
    "clock",
    "shelf",
    "vase",
    "rug",
    "fan",
    "stool",
    "bowl",
    "jug",
    "mirror",
    "basket",
    "bench",
    "tray",
]
SYNONYMS = {
    "kettle": "water boiler",
    "toaster": "bread toaster",
    "lamp": "light",
    "chair": "seat",
    "desk": "work table",
    "mug": "cup",
    "teapot": "tea pot",
    "blanket": "throw",
    "clock": "timepiece",
    "shelf": "bookshelf",
    "vase": "flower vase",
    "rug": "carpet",
    "fan": "cooling fan",
    "stool": "bar stool",
    "bowl": "dish",
    "jug": "pitcher",
    "mirror": "looking glass",
    "basket": "hamper",
    "bench": "garden bench",
    "tray": "serving tray",
}


COLOUR_WORDS = {
    "red": "crimson",
    "blue": "navy",
    "green": "emerald",
    "black": "jet",
    "white": "snow",
    "yellow": "golden",
    "grey": "slate",
    "orange": "tangerine",
    "purple": "violet",
    "teal": "turquoise",
}
MATERIAL_WORDS = {
    "steel": "metal",
    "ceramic": "porcelain",
    "glass": "crystal",
    "oak": "hardwood",
    "bamboo": "cane",
    "copper": "bronze-coloured metal",
    "plastic": "polymer",
    "linen": "flax fabric",
    "wool": "fleece",
    "stone": "granite",
}


# Brands for corpora beyond the 40,000 combinations of the first twenty.
MORE_BRANDS = [
    "Albury",
    "Brackwater",
    "Corrin",
    "Dalesford",
    "Emberly",
    "Farrow",
    "Glenmoor",
    "Hartwell",
    "Islay",
    "Jessop",
    "Kelston",
    "Lowther",
    "Marlow",
    "Netherby",
    "Orrin",
    "Penrose",
    "Quarry",
    "Rossall",
    "Selwyn",
    "Thorne",
    "Ulverby",
    "Vantry",
    "Wexley",
    "Yarrow",
    "Zennor",
    "Ashby",
    "Bexley",
    "Carrow",
    "Dunstan",
    "Elmsworth",
]


def corpus(n: int, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    combos = [(b, c, m, k) for b in BRANDS for c in COLOURS for m in MATERIALS for k in KINDS]
    rng.shuffle(combos)
    if n > len(combos):
        more = [
            (b, c, m, k) for b in MORE_BRANDS for c in COLOURS for m in MATERIALS for k in KINDS
        ]
        random.Random(seed + 1).shuffle(more)
        combos += more
    if n > len(combos):
        raise SystemExit(f"at most {len(combos)} chunks")
    items = []
    for i, (brand, colour, material, kind) in enumerate(combos[:n]):
        code = f"SKU-{100000 + i}"
        price, days = rng.randint(5, 500), rng.randint(1, 14)
        items.append(
            {
                "id": code,
                "source": f"catalog/{code}.md",
                "code": code,
                "brand": brand,
                "colour": colour,
                "material": material,
                "kind": kind,
                "text": f"{code}: the {brand} {colour} {material} {kind} costs {price} euros and ships "
                f"in {days} days. Stock is checked daily.",
            }
        )
    return items


def queries(items: list[dict], n: int, seed: int = 11) -> list[tuple[str, str, str]]:
    rng = random.Random(seed)
    picks = rng.sample(items, n)
    out = []
    for i, it in enumerate(picks):
        if i % 2 == 0:
            out.append(("exact code", f"What is the price of {it['code']}?", it["id"]))
        else:
            out.append(
                (
                    "paraphrase",
                    f"How much is {it['brand']}'s "
                    f"{MATERIAL_WORDS[it['material']]} {SYNONYMS[it['kind']]} in "
                    f"{COLOUR_WORDS[it['colour']]}?",
                    it["id"],
                )
            )
    return out


def rss_mb() -> float:
    """The process's resident memory now, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ingest_rate(root: Path, items: list[dict], backend: str) -> float:
    """Chunks/s ingesting `items` into a fresh store with the given embedding backend."""
    embedder = SentenceTransformerEmbedder(backend=backend)
    embedder.embed(["warm up"])
    svc = RetrievalService(bm25_dir=root / "bm25", chroma_path=root / "chroma", embedder=embedder)
    started = time.perf_counter()
    svc.ingest_records("bench", items)
    return len(items) / (time.perf_counter() - started)


def timed(fn, repeat: int = 5) -> float:
    """Median milliseconds of `fn()` over `repeat` calls."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return round(pct(times, 50), 1)


def write_costs(svc: RetrievalService, items: list[dict]) -> dict[str, float]:
    """One more write at this size: the BM25 work before (full rebuild) and now (in place),
    and the whole ingest of one record now; plus a reader's catch-up and reopen costs."""
    col = svc.store.collection("bench", svc.embedder.name, create=False)

    def full_rebuild() -> None:
        # As before, but paged: one get of 100k rows fails ("too many SQL variables").
        data = get_all(col, ["documents", "metadatas"])
        bm25.build(data["ids"], data["documents"], data["metadatas"], version(col))

    counter = iter(range(10**9))

    def one_record() -> None:
        n = next(counter)
        svc.ingest_records("bench", [{"id": f"extra-{n}", "text": f"Extra note {n}: ships today."}])

    index = svc._lexical["bench"]

    def catch_up_one() -> None:
        # A reader that lacks one chunk another process wrote: diff ids, fetch that one.
        victim = index.ids[-1]
        held = index.record(victim)
        index.remove([victim])
        bm25.catch_up(index, col, index.version)
        assert held is not None and victim in index

    def reopen_and_query() -> None:
        svc.store.reopen()
        svc.search("bench", "What is the price of SKU-100007?", top_k=4)

    return {
        "bm25_full_rebuild_ms": timed(full_rebuild, 3),
        "ingest_one_record_ms": timed(one_record, 5),
        "reader_catch_up_ms": timed(catch_up_one, 5),
        "reopen_plus_first_query_ms": timed(reopen_and_query, 3),
        "query_ms": timed(lambda: svc.search("bench", "What is the price of SKU-100007?"), 9),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--chunks", "--n-chunks", dest="n_chunks", type=int, default=10_000)
    ap.add_argument("--n-queries", type=int, default=300)
    ap.add_argument(
        "--ingest-sample",
        type=int,
        default=2000,
        help="chunks ingested before/after for the ingest rate comparison",
    )
    args = ap.parse_args()
    items = corpus(args.n_chunks)
    labelled = queries(items, min(args.n_queries, len(items)))
    sample = items[: min(args.ingest_sample, len(items))]
    with tempfile.TemporaryDirectory() as tmp:
        svc = RetrievalService(bm25_dir=Path(tmp) / "bm25", chroma_path=Path(tmp) / "chroma")
        svc.embedder.embed(["warm up"])
        rss_start = rss_mb()
        started = time.perf_counter()
        svc.ingest_records("bench", items)
        ingest_s = time.perf_counter() - started
        col = svc.store.collection("bench", svc.embedder.name, create=False)

        def run(query: str, mode: str) -> list:
            if mode == "hybrid-rrf2":
                return search_collection(
                    col,
                    svc._lexical_for("bench", col),
                    svc.embedder,
                    query,
                    10,
                    None,
                    "hybrid",
                    identifier_leg=False,
                ).hits
            return svc.search("bench", query, top_k=10, mode=mode).hits

        modes = ("dense", "bm25", "hybrid-rrf2", "hybrid")
        for mode in modes:
            run("warm up", mode)
        rss_loaded = rss_mb()
        results: dict[str, dict] = {}
        for mode in modes:
            lat, rec5, rr = [], {"all": [], "exact code": [], "paraphrase": []}, []
            for kind, q, want in labelled:
                t = time.perf_counter()
                hits = run(q, mode)
                lat.append((time.perf_counter() - t) * 1000)
                ids = [h.doc_id for h in hits]
                hit5 = float(want in ids[:5])
                rec5["all"].append(hit5)
                rec5[kind].append(hit5)
                rr.append(1.0 / (ids.index(want) + 1) if want in ids else 0.0)
            results[mode] = {
                "p50_ms": round(pct(lat, 50), 2),
                "p95_ms": round(pct(lat, 95), 2),
                "recall@5": round(sum(rec5["all"]) / len(rec5["all"]), 3),
                "recall@5_exact_code": round(sum(rec5["exact code"]) / len(rec5["exact code"]), 3),
                "recall@5_paraphrase": round(sum(rec5["paraphrase"]) / len(rec5["paraphrase"]), 3),
                "mrr@10": round(sum(rr) / len(rr), 3),
            }
        costs = write_costs(svc, items)
        reopens = svc.store.reopen_stats
        # Alternated, twice each, so that load from other work on the machine hits both alike.
        rates: dict[str, list[float]] = {"torch": [], "auto": []}
        for round_ in range(2):
            for backend in ("torch", "auto"):
                rates[backend].append(
                    ingest_rate(Path(tmp) / f"{backend}{round_}", sample, backend)
                )
        before, after = (sum(rates[b]) / 2 for b in ("torch", "auto"))
    rows = [
        [
            m,
            r["p50_ms"],
            r["p95_ms"],
            r["recall@5"],
            r["recall@5_exact_code"],
            r["recall@5_paraphrase"],
            r["mrr@10"],
        ]
        for m, r in results.items()
    ]
    rate = round(len(items) / ingest_s, 1)
    print_table(
        f"retrieval over {len(items)} chunks, {len(labelled)} labelled queries",
        ["mode", "p50 ms", "p95 ms", "recall@5", "r@5 codes", "r@5 paraphrase", "MRR@10"],
        rows,
    )
    memory = {
        "rss_before_ingest_mb": round(rss_start, 1),
        "rss_loaded_mb": round(rss_loaded, 1),
        "rss_growth_mb": round(rss_loaded - rss_start, 1),
    }
    print_table(
        f"ingest and writes at {len(items)} chunks",
        ["measure", "before", "now"],
        [
            [f"ingest chunks/s ({len(sample)} chunks)", round(before, 1), round(after, 1)],
            [f"ingest chunks/s (all {len(items)})", "", rate],
            ["BM25 work per write (ms)", costs["bm25_full_rebuild_ms"], "in place"],
            ["ingest one record (ms)", "", costs["ingest_one_record_ms"]],
            [
                "reader catch-up after a foreign write (ms)",
                "full rebuild",
                costs["reader_catch_up_ms"],
            ],
            ["reopen + first query (ms)", "", costs["reopen_plus_first_query_ms"]],
            ["RSS growth over the ingest (MB)", "", memory["rss_growth_mb"]],
        ],
    )
    name = "retrieval" if len(items) == 10_000 else f"retrieval-{len(items)}"
    path = write_result(
        name,
        {
            "n_chunks": len(items),
            "n_queries": len(labelled),
            "ingest_chunks_per_s": rate,
            "ingest_sample": len(sample),
            "ingest_chunks_per_s_before": round(before, 1),
            "ingest_chunks_per_s_after": round(after, 1),
            "write_costs": costs,
            "reopens": reopens[0],
            "memory": memory,
            "results": results,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
