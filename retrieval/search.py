"""Hybrid search over one tenant's collection: dense (Chroma) + lexical (BM25), fused with RRF.

Fusion. Each leg ranks its candidates (ties share a rank) and reciprocal rank fusion adds
1 / (60 + rank) over the legs. The lexical leg votes with tolerance: BM25 scores within 10% of
each other share a rank, and in hybrid mode matches under 10% of the best BM25 score do not vote
at all (see `fusion.py`). In hybrid mode a third ranking joins when the query holds identifiers
(a letter and a digit in one token, like SKU-4471) or rare names (a capitalised word that at
most `max(3, 0.5%)` of the chunks hold, like a customer's or a product's name): candidates
containing them verbatim (heading or text), most first.
Embeddings blur such tokens (a made-up name means little to MiniLM), and without this ranking
an exact match that only BM25 ranks first ties with the dense leg's favourite, which matched the
query's other words (bench/retrieval.py and bench/combined.py measure the difference).

Scores returned per hit:
- `score`: the fused score divided by the best one possible with the rankings that took part
  (first in each: n / (k + 1)), so in [0, 1]; 1.0 means first everywhere. In `dense` or `bm25`
  mode there is one ranking and the same formula applies. It orders hits but says nothing about
  how good the best one is: some chunk is always first.
- `dense`: cosine similarity of query and chunk embeddings (also filled for chunks only BM25
  found, from their stored vectors); `bm25`: the raw BM25 score (None where BM25 did not match).
- `relevance`: how well the chunk answers, in [0, 1]: its dense cosine similarity, or 1.0 when
  it contains an identifier or a rare name from the query verbatim.

`strength` summarises relevance for the router: `top` (best relevance), `margin` (best minus
second best) and `fused_top` (the first hit's `score`). Relevance, not the fused score, because
the router must tell "something matches" from "nothing does", and rank-based scores cannot.
In `bm25` mode there are no dense similarities, so relevance only reflects identifiers.

Both legs must know a chunk for it to be returned: a dense candidate the BM25 index does not hold,
or a BM25 candidate whose vector Chroma cannot find, is skipped (another process may be midway
through a write; see `service.py`). The chunk's text and metadata come from the BM25 index.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any

from retrieval.bm25 import STOPWORDS, LexicalIndex, lexical_text
from retrieval.embeddings import Embedder
from retrieval.errors import RetrievalError
from retrieval.fusion import LEXICAL_FLOOR, LEXICAL_TIE, RRF_K, normalised, ranks, rrf
from retrieval.store import chroma_where

log = logging.getLogger(__name__)
MODES = ("hybrid", "dense", "bm25")
MAX_TOP_K = 50
IDENTIFIER_RE = re.compile(r"(?<![\w-])(?=[\w-]*[A-Za-z])(?=[\w-]*\d)[A-Za-z0-9][\w-]*[A-Za-z0-9]")
# A capitalised word of three or more letters (names of people, products, places).
NAME_RE = re.compile(r"(?<![\w-])[^\W\d_][^\W\d_]{2,}(?![\w-])")
# A name is rare, and as telling as an identifier, when at most this many chunks hold it.
RARE_MIN = 3
RARE_SHARE = 0.005


@dataclass
class Hit:
    """One retrieved chunk with its scores (see the module docstring for what each means)."""

    id: str
    doc_id: str
    source: str
    title: str
    text: str
    score: float
    relevance: float
    dense: float | None = None
    bm25: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return {**self.__dict__, "metadata": dict(self.metadata)}


@dataclass
class SearchResult:
    """Hits best first, and the strength summary the router judges retrieval by."""

    hits: list[Hit]
    strength: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return {"hits": [h.to_dict() for h in self.hits], "strength": dict(self.strength)}


EMPTY = {"top": 0.0, "margin": 0.0, "fused_top": 0.0}


def check_request(top_k: int, where: dict[str, Any] | None, mode: str) -> None:
    """Refuse a bad mode, top_k or filter with a message that says what to send."""
    if mode not in MODES:
        raise RetrievalError(
            f"mode must be one of {', '.join(MODES)}; got {mode!r}", "invalid_mode"
        )
    if not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
        raise RetrievalError(
            f"top_k must be between 1 and {MAX_TOP_K}; got {top_k}", "invalid_top_k"
        )
    if where is not None:
        check_where(where)


def check_where(where: Any) -> None:
    """Refuse a filter Chroma would reject: only `{field: plain value}` equality is offered."""
    example = 'like {"lang": "en"}'
    if not isinstance(where, dict):
        raise RetrievalError(
            f"where must map metadata fields to plain values, {example}", "invalid_filter"
        )
    for key, value in where.items():
        # Chroma reads keys starting with $ as operators ($and, $or, ...), and fails on them.
        if not isinstance(key, str) or not key or key.startswith("$"):
            raise RetrievalError(
                f"where: {key!r} is not a metadata field name; operators such as $or are not "
                f"supported, only equality on fields, {example}",
                "invalid_filter",
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise RetrievalError(
                f"where: {key!r} must be a finite number; got {value}", "invalid_filter"
            )
        if not isinstance(value, str | int | float | bool):
            raise RetrievalError(
                f"where: {key!r} must map to a plain value (string, number or boolean), "
                f"{example}; got {type(value).__name__}",
                "invalid_filter",
            )


def identifiers(query: str) -> set[str]:
    """Identifier-like tokens in a query (a letter and a digit in one token), lower-cased."""
    return {m.lower() for m in IDENTIFIER_RE.findall(query) if len(m) >= 3}


def rare_names(query: str, lexical: LexicalIndex) -> set[str]:
    """Capitalised words of `query`, lower-cased, that few chunks of `lexical` hold (at least
    one, at most `RARE_MIN` or `RARE_SHARE` of them): candidates for a name the dense leg
    cannot place (`search_collection` keeps those the chunks write capitalised, see `_named`)."""
    limit = max(RARE_MIN, int(len(lexical) * RARE_SHARE))
    words = {w.lower() for w in NAME_RE.findall(query) if w[0].isupper()}
    return {w for w in words - STOPWORDS if 0 < lexical.document_frequency(w) <= limit}


def whole_word(word: str, flags: int = 0) -> re.Pattern[str]:
    """`word` standing alone: not part of a longer word, code or hyphenated name."""
    return re.compile(rf"(?<![\w-]){re.escape(word)}(?![\w-])", flags)


def _named(word: str, texts: list[str]) -> bool:
    """Whether `word` is written capitalised wherever `texts` hold it: a name ("Orlia"), not a
    common word that opened the query's sentence ("Can I pay ..." against "you can pay")."""
    pattern = whole_word(word, re.IGNORECASE)
    found = [m.group() for text in texts for m in pattern.finditer(text)]
    return bool(found) and all(w[0].isupper() for w in found)


def contains(text: str, ident: str) -> bool:
    """Whether `text` holds `ident` (lower-cased) as a whole word, in any case."""
    return whole_word(ident).search(text.lower()) is not None


def search_collection(
    col: Any,
    lexical: LexicalIndex,
    embedder: Embedder,
    query: str,
    top_k: int = 4,
    where: dict[str, Any] | None = None,
    mode: str = "hybrid",
    k: int = RRF_K,
    identifier_leg: bool = True,
) -> SearchResult:
    """Top-k chunks of `col` for `query`; `lexical` is the collection's BM25 index, at its
    current version.

    `identifier_leg=False` fuses dense and BM25 only (plain two-way RRF), for comparison.
    """
    check_request(top_k, where, mode)
    count = len(lexical)
    if not count or not query.strip():
        return SearchResult([], dict(EMPTY))
    pool = max(top_k * 5, 20)  # candidates per leg: fusion can lift a leg's 20th to the top
    query_vec: list[float] | None = None
    dense: dict[str, float] = {}
    records: dict[str, tuple[str, dict[str, Any]]] = {}
    if mode in ("hybrid", "dense"):
        query_vec = embedder.embed([query])[0]
        res = col.query(
            query_embeddings=[query_vec],
            n_results=min(pool, count),
            where=chroma_where(where),
            include=["distances"],
        )
        for cid, dist in zip(res["ids"][0], res["distances"][0], strict=True):
            held = lexical.record(cid)
            if held is None:  # not (or no longer) in the BM25 index: skipped, see above
                continue
            dense[cid] = 1.0 - float(dist)  # cosine space: distance = 1 - similarity
            records[cid] = held
    lexical_scores: dict[str, float] = {}
    if mode in ("hybrid", "bm25"):
        lexical_scores = dict(lexical.search(query, pool, where, include=list(dense)))
        for cid in lexical_scores:
            if cid not in records and (held := lexical.record(cid)) is not None:
                records[cid] = held
    texts = {cid: lexical_text(text, meta) for cid, (text, meta) in records.items()}
    candidates = list(texts.values())
    names = {n for n in rare_names(query, lexical) if _named(n, candidates)}
    idents = identifiers(query) | names
    exact = {
        cid: float(n)
        for cid, text in texts.items()
        if (n := sum(contains(text, i) for i in idents))
    }
    # The floor keeps weak lexical matches from outvoting the dense leg; in bm25 mode there is
    # no other leg, and dropping them would return fewer than top_k real matches.
    floor = LEXICAL_FLOOR * max(lexical_scores.values(), default=0.0) if mode == "hybrid" else 0.0
    lexical_votes = {c: v for c, v in lexical_scores.items() if v >= floor}
    rankings = [ranks(dense), ranks(lexical_votes, LEXICAL_TIE)]
    legs = 1 if mode != "hybrid" else 2
    if mode == "hybrid" and idents and identifier_leg:
        rankings.append(ranks(exact))
        legs += 1
    fused = rrf([r for r in rankings if r], k=k)
    order = sorted(fused, key=lambda c: (-fused[c], c))
    chosen = order[:top_k]
    if query_vec is not None:
        # Chunks only BM25 found get their cosine similarity from their stored vectors; one
        # whose vector Chroma cannot find is skipped and the next in line takes its place.
        rest = order[top_k:]
        missing = _fill_dense(col, query_vec, [c for c in chosen if c not in dense], dense)
        while missing:
            chosen = [c for c in chosen if c not in missing]
            extra, rest = rest[: top_k - len(chosen)], rest[top_k - len(chosen) :]
            chosen += extra
            missing = _fill_dense(col, query_vec, [c for c in extra if c not in dense], dense)
    hits = []
    for cid in chosen:
        text, meta = records[cid]
        hits.append(
            Hit(
                id=cid,
                doc_id=str(meta.get("doc_id", "")),
                source=str(meta.get("source", "")),
                title=str(meta.get("title", "")),
                text=text,
                score=round(min(1.0, normalised(fused[cid], legs, k)), 4),
                relevance=round(max(dense.get(cid, 0.0), 1.0 if cid in exact else 0.0, 0.0), 4),
                dense=round(dense[cid], 4) if cid in dense else None,
                bm25=round(lexical_scores[cid], 4) if cid in lexical_scores else None,
                metadata={k: v for k, v in meta.items() if k not in ("doc_id", "source", "title")},
            )
        )
    return SearchResult(hits, strength(hits))


def strength(hits: list[Hit]) -> dict[str, float]:
    """Best relevance, its margin over the second best, and the first hit's fused score."""
    if not hits:
        return dict(EMPTY)
    best = sorted((h.relevance for h in hits), reverse=True)
    margin = best[0] - best[1] if len(best) > 1 else best[0]
    return {"top": round(best[0], 4), "margin": round(margin, 4), "fused_top": hits[0].score}


def _fill_dense(
    col: Any, query_vec: list[float], ids: list[str], dense: dict[str, float]
) -> list[str]:
    """Add the cosine similarity of `ids` to `dense` from their stored vectors; returns the ids
    Chroma has no vector for."""
    if not ids:
        return []
    try:
        got = col.get(ids=ids, include=["embeddings"])
        vectors = dict(zip(got["ids"], got["embeddings"], strict=True))
    except Exception as exc:  # noqa: BLE001 - "Error finding id" for one id fails them all
        log.info("vector look-up failed (%s); retrying id by id", exc)
        vectors = {}
        for cid in ids:
            try:
                one = col.get(ids=[cid], include=["embeddings"])
            except Exception:  # noqa: BLE001, S112 - a vector this client cannot find: skipped
                continue
            if one["ids"]:
                vectors[cid] = one["embeddings"][0]
    q = math.sqrt(sum(a * a for a in query_vec)) or 1.0
    for cid, vec in vectors.items():
        norm = math.sqrt(sum(float(b) * float(b) for b in vec)) or 1.0
        dense[cid] = sum(a * float(b) for a, b in zip(query_vec, vec, strict=True)) / (q * norm)
    return [cid for cid in ids if cid not in vectors]
