"""What the router measures about a request: task match, retrieval strength, cues, shape.

All local and cheap: one query embedding (shared with retrieval through the embedder's cache),
one hybrid search, dot products with the adapters' exemplar embeddings, and a few regular
expressions. `Signals.features()` is the fixed, named vector a decision model reads; models
store the names they were fitted on, so a feature added later never shifts an older model.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from adapters.registry import AdapterVersion
from retrieval.search import SearchResult, identifiers

# Questions about prices, dates, policies, codes: what documents answer and weights do not.
FACT_RE = re.compile(
    r"\b(price[sd]?|cost[s]?|how much|fee[s]?|charge[sd]?|discount|tax|rate[s]?|date[s]?|when|"
    r"deadline|hours?|open(?:ing)?|clos(?:e|ing)|days?|weeks?|policy|policies|rule[s]?|allowed|"
    r"return[s]?|refund[s]?|warranty|guarantee|code[s]?|sku|number|phone|email|address|"
    r"where|ship(?:ping|s)?|deliver(?:y|ed)?|stock|limit[s]?|minimum|maximum|how long|how many|"
    r"which|version|model|spec(?:s|ification)?|require[sd]?|requirement[s]?)\b",
    re.IGNORECASE,
)
# An explicit output format: what adapters are typically trained to produce.
FORMAT_RE = re.compile(
    r"\b(json|yaml|csv|xml|table|bullet(?:s| points?)?|list|format(?:ted)?|fields?|schema|"
    r"keys?|markdown|template|one line|structured|extract|rewrite|summari[sz]e|classify|"
    r"categori[sz]e|label)\b",
    re.IGNORECASE,
)
QUESTION_RE = re.compile(r"^\s*(what|when|where|which|who|how|is|are|does|do|can|could)\b", re.I)


@dataclass
class TaskMatch:
    """How well a query matches each adapter's exemplar prompts (cosine similarity)."""

    best: AdapterVersion | None = None
    similarity: float = 0.0  # the best adapter's best exemplar
    margin: float = 0.0  # best adapter minus the next one (the best itself when alone)
    top3: float = 0.0  # mean of the best adapter's three closest exemplars
    per_adapter: dict[str, float] = field(default_factory=dict)  # name -> best similarity


@dataclass
class Signals:
    """Everything a decision is made from, for one request."""

    task: TaskMatch = field(default_factory=TaskMatch)
    retrieval: SearchResult | None = None
    retrieval_top: float = 0.0  # best relevance (dense, or 1.0 for an identifier hit)
    retrieval_dense: float = 0.0  # best dense cosine similarity
    retrieval_exact: float = 0.0  # 1.0 when an identifier in the query appears in a hit
    retrieval_margin: float = 0.0  # best relevance minus the second
    retrieval_fused: float = 0.0  # the first hit's fused score
    fact_cues: int = 0
    format_cues: int = 0
    question: bool = False
    words: int = 0
    turns: int = 1

    def features(self) -> dict[str, float]:
        """The named feature vector decision models are fitted on."""
        facts = min(self.fact_cues, 3) / 3
        strength = max(self.retrieval_dense, self.retrieval_exact)
        return {
            "task_sim": self.task.similarity,
            "task_margin": self.task.margin,
            "task_top3": self.task.top3,
            "retrieval_top": self.retrieval_top,
            "retrieval_dense": self.retrieval_dense,
            "retrieval_exact": self.retrieval_exact,
            "retrieval_margin": self.retrieval_margin,
            "fact_cues": facts,
            "format_cues": min(self.format_cues, 3) / 3,
            "question": float(self.question),
            "log_words": math.log1p(self.words),
            "turns": math.log(max(self.turns, 1)),
            # Interactions: "the adapter's task AND a document fact" is the combined path.
            "task_x_retrieval": self.task.similarity * strength,
            "task_x_facts": self.task.similarity * facts,
            "retrieval_x_facts": strength * facts,
        }

    def scores(self) -> dict[str, float]:
        """The signals as the response's `loraplex.scores` (rounded, JSON-ready)."""
        out = {
            "adapter_similarity": self.task.similarity,
            "adapter_margin": self.task.margin,
            "retrieval_top": self.retrieval_top,
            "retrieval_dense": self.retrieval_dense,
            "retrieval_exact": self.retrieval_exact,
            "retrieval_margin": self.retrieval_margin,
            "retrieval_fused_top": self.retrieval_fused,
            "fact_cues": float(self.fact_cues),
            "format_cues": float(self.format_cues),
            "words": float(self.words),
            "turns": float(self.turns),
        }
        return {k: round(v, 4) for k, v in out.items()}


def text_cues(query: str, turns: int = 1) -> dict[str, Any]:
    """Fact-seeking and format cues, question form, length and turn count of a query."""
    return {
        "fact_cues": len(FACT_RE.findall(query)),
        "format_cues": len(FORMAT_RE.findall(query)),
        "question": query.rstrip().endswith("?") or QUESTION_RE.match(query) is not None,
        "words": len(query.split()),
        "turns": max(turns, 1),
    }


def retrieval_signals(query: str, result: SearchResult | None) -> dict[str, float]:
    """Strength of a search result: best relevance and dense score, identifier hit, margin."""
    if result is None or not result.hits:
        return {}
    idents = identifiers(query)
    exact = any(
        re.search(rf"(?<![\w-]){re.escape(i)}(?![\w-])", h.text.lower())
        for h in result.hits
        for i in idents
    )
    strength = result.strength
    return {
        "retrieval_top": float(strength.get("top", 0.0)),
        "retrieval_dense": max((h.dense or 0.0) for h in result.hits),
        "retrieval_exact": 1.0 if exact else 0.0,
        "retrieval_margin": float(strength.get("margin", 0.0)),
        "retrieval_fused": float(strength.get("fused_top", 0.0)),
    }


def task_match(
    query_vec: list[float],
    adapters: list[AdapterVersion],
    vectors: dict[str, list[list[float]]],
    exclude: dict[str, list[int]] | None = None,
) -> TaskMatch:
    """Best exemplar similarity per adapter, the best adapter and its margin over the next.

    `vectors` maps each adapter's served name to its exemplar embeddings; `exclude` names
    exemplar positions to ignore per served name (calibration leaves a labelled prompt's own
    exemplar out, or it would learn from a trivial 1.0).
    """
    import numpy as np

    q = np.asarray(query_vec, dtype=np.float32)
    per: list[tuple[float, float, AdapterVersion]] = []
    for av in adapters:
        rows = vectors.get(av.served_name) or []
        skip = set((exclude or {}).get(av.served_name, []))
        kept = [v for i, v in enumerate(rows) if i not in skip]
        if not kept:
            continue
        sims = np.sort(np.asarray(kept, dtype=np.float32) @ q)[::-1]
        per.append((float(sims[0]), float(sims[:3].mean()), av))
    if not per:
        return TaskMatch()
    per.sort(key=lambda x: (-x[0], x[2].name))
    best_sim, top3, best = per[0]
    margin = best_sim - per[1][0] if len(per) > 1 else best_sim
    return TaskMatch(
        best=best,
        similarity=best_sim,
        margin=margin,
        top3=top3,
        per_adapter={av.name: round(s, 4) for s, _, av in per},
    )
