"""Reciprocal rank fusion (Cormack et al., 2009): score(d) = sum over rankings of 1 / (k + rank).

Ties share a rank (competition ranking: 1, 2, 2, 4). A lexical leg often scores many chunks
nearly identically: they match the same query words and differ only by BM25's length
normalisation (a few percent). Ranking them 2, 3, ..., 50 by that noise would invent an order
that then outvotes the dense leg, so the lexical leg is ranked with a tolerance (`LEXICAL_TIE`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

RRF_K = 60
# BM25 scores within 10% of the top score of each other tie: length normalisation moves scores
# by a few percent, matching one more query word by far more.
LEXICAL_TIE = 0.1
# In hybrid mode, BM25 matches scoring under 10% of the best one matched only common words ("sku"
# in every product code) and are left out of the fusion: they are not evidence, and there are
# many. In bm25 mode they are all there is, so they stay.
LEXICAL_FLOOR = 0.1


def ranks(scores: Mapping[str, float], tolerance: float = 0.0) -> dict[str, int]:
    """Rank from 1 by descending score. An item scoring within `tolerance` x the top score of
    the first item of its group shares that item's rank (0: only equal scores tie)."""
    ordered = sorted(scores, key=lambda item: -scores[item])
    if not ordered:
        return {}
    slack = max(tolerance * abs(scores[ordered[0]]), 1e-9)
    out: dict[str, int] = {}
    anchor = scores[ordered[0]]
    rank = 1
    for position, item in enumerate(ordered, 1):
        if anchor - scores[item] > slack:
            rank, anchor = position, scores[item]
        out[item] = rank
    return out


def rrf(rankings: Sequence[Sequence[str] | Mapping[str, int]], k: int = RRF_K) -> dict[str, float]:
    """Fused scores of every id in `rankings`: each a list of ids best first (ranks from 1),
    or a mapping of id to rank (see `ranks`)."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        if not isinstance(ranking, Mapping):
            ranking = {item: rank for rank, item in enumerate(ranking, 1)}
        for item, rank in ranking.items():
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return scores


def normalised(score: float, legs: int, k: int = RRF_K) -> float:
    """A fused score divided by the best possible one (first in every ranking): in (0, 1]."""
    return score / (legs / (k + 1))
