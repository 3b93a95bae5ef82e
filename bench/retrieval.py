"""Retrieval quality and speed: dense vs BM25 vs hybrid on a generated, labelled corpus.

Generates N product-fact chunks (each with a unique code like SKU-104471 and a unique
brand/colour/material/kind combination) and a labelled query set: exact-code questions, and
paraphrases that name the brand but describe colour, material and kind in other words (so
lexical overlap is small). Ingests them into an embedded Chroma collection, then reports ingest
chunks/s, query p50/p95, recall@5 and MRR@10 for dense, BM25 and hybrid side by side, plus
"hybrid-rrf2": plain two-way RRF without the identifier ranking, to show what that ranking adds.

    .venv/bin/python bench/retrieval.py                    # 10,000 chunks, 300 queries
    .venv/bin/python bench/retrieval.py --n-chunks 2000    # quicker

Results: bench/results/retrieval.json
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import pct, print_table, write_result  # noqa: E402

from retrieval.search import search_collection  # noqa: E402
from retrieval.service import RetrievalService  # noqa: E402

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


def corpus(n: int, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    combos = [(b, c, m, k) for b in BRANDS for c in COLOURS for m in MATERIALS for k in KINDS]
    rng.shuffle(combos)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n-chunks", type=int, default=10_000)
    ap.add_argument("--n-queries", type=int, default=300)
    args = ap.parse_args()
    items = corpus(args.n_chunks)
    labelled = queries(items, min(args.n_queries, len(items)))
    with tempfile.TemporaryDirectory() as tmp:
        svc = RetrievalService(bm25_dir=Path(tmp) / "bm25", chroma_path=Path(tmp) / "chroma")
        svc.embedder.embed(["warm up"])
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
        f"retrieval over {len(items)} chunks, {len(labelled)} labelled queries "
        f"(ingest {rate} chunks/s)",
        ["mode", "p50 ms", "p95 ms", "recall@5", "r@5 codes", "r@5 paraphrase", "MRR@10"],
        rows,
    )
    path = write_result(
        "retrieval",
        {
            "n_chunks": len(items),
            "n_queries": len(labelled),
            "ingest_chunks_per_s": rate,
            "results": results,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
