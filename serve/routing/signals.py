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
from retrieval.search import SearchResult, contains, identifiers

# Questions about prices, dates, policies, codes: what documents answer and weights do not.
FACT_RE = re.compile(
    r"\b(price[sd]?|pricing|cost[s]?|how much|fee[s]?|charge[sd]?|discount|tax|rate[s]?|"
    r"date[s]?|when|deadline|hours|opening|how long|how many|how often|until|expire[sd]?|"
    r"policy|policies|rule[s]?|allowed|limit[s]?|minimum|maximum|requirement[s]?|"
    r"refund[s]?|warranty|guarantee|code[s]?|sku|extension|address|phone|email address|"
    r"form|port|server|stock|delivery|shipping)\b",
    re.IGNORECASE,
)
# An explicit output format or transformation: what adapters are typically trained to produce.
FORMAT_RE = re.compile(
    r"\b(json|yaml|csv|xml|table|bullet(?:s| points?)?|list|format(?:ted)?|fields?|schema|"
    r"keys?|markdown|template|structured?|extract|parse|rewrite|reword|rephrase|polish|"
    r"summari[sz]e|classify|categori[sz]e|label|triage|convert|turn (?:this|these|it))\b",
    re.IGNORECASE,
)
# Speaking to or about the organisation ("your returns", "can I", "our server"): questions
# about the tenant's own facts; general-knowledge questions are mostly impersonal.
PERSONAL_RE = re.compile(r"\b(i|i'm|i've|my|me|we|our|us|you|your)\b", re.IGNORECASE)
# General-knowledge openings: definitions, explanations, history.
GENERIC_RE = re.compile(
    r"^\s*(what(?: is|'s| are)(?: an?| the)? (?:difference|meaning)|what is an? |explain|"
    r"how do(?:es)? .* work|why do(?:es)?|why is|who (?:invented|founded|wrote|painted)|"
    r"tell me a|write an? (?:poem|haiku|limerick|story))",
    re.IGNORECASE,
)
# The text a task works on: quoted, or after a colon ("Extract the order: two mugs to Leeds").
QUOTED_RE = re.compile(r"'[^']{3,}'|\"[^\"]{3,}\"|\u201c[^\u201d]{3,}\u201d")
QUESTION_RE = re.compile(r"^\s*(what|when|where|which|who|how|is|are|does|do|can|could)\b", re.I)


@dataclass
class TaskMatch:
    """How well a query matches each adapter's exemplar prompts (cosine similarity)."""

    best: AdapterVersion | None = None
    similarity: float = 0.0  # the best adapter's closest exemplar
    margin: float = 0.0  # the best adapter's match minus the next adapter's
    match: float = 0.0  # the best adapter's match: mean similarity of its closest half
    per_adapter: dict[str, float] = field(default_factory=dict)  # name -> match


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
    payload: bool = False  # the request carries text to work on (quoted, or after a colon)
    instruction_dense: float | None = None  # the ask without its payload vs the documents
    fact_cues: int = 0
    format_cues: int = 0
    personal: int = 0
    generic: bool = False
    question: bool = False
    words: int = 0
    turns: int = 1

    def features(self) -> dict[str, float]:
        """The named feature vector decision models are fitted on."""
        facts = min(self.fact_cues, 3) / 3
        strength = max(self.retrieval_dense, self.retrieval_exact)
        # Without a payload the whole request is the ask.
        ask = self.retrieval_dense if self.instruction_dense is None else self.instruction_dense
        return {
            "task_sim": self.task.similarity,
            "task_margin": self.task.margin,
            "task_match": self.task.match,
            "retrieval_top": self.retrieval_top,
            "retrieval_dense": self.retrieval_dense,
            "retrieval_exact": self.retrieval_exact,
            "retrieval_margin": self.retrieval_margin,
            "instruction_retrieval": ask,
            "payload": float(self.payload),
            "fact_cues": facts,
            "format_cues": min(self.format_cues, 3) / 3,
            "personal": min(self.personal, 3) / 3,
            "generic": float(self.generic),
            "question": float(self.question),
            "log_words": math.log1p(self.words),
            "turns": math.log(max(self.turns, 1)),
            # Interactions: "the adapter's task AND a document fact" is the combined path.
            "task_x_retrieval": self.task.similarity * strength,
            "task_x_facts": self.task.similarity * facts,
            "retrieval_x_facts": strength * facts,
            "task_x_instruction": self.task.similarity * ask,
        }

    def scores(self) -> dict[str, float]:
        """The signals as the response's `loraplex.scores` (rounded, JSON-ready)."""
        out = {
            "adapter_similarity": self.task.similarity,
            "adapter_match": self.task.match,
            "adapter_margin": self.task.margin,
            "retrieval_top": self.retrieval_top,
            "retrieval_dense": self.retrieval_dense,
            "retrieval_exact": self.retrieval_exact,
            "retrieval_margin": self.retrieval_margin,
            "retrieval_fused_top": self.retrieval_fused,
            "instruction_retrieval": self.features()["instruction_retrieval"],
            "fact_cues": float(self.fact_cues),
            "format_cues": float(self.format_cues),
            "personal": float(self.personal),
            "generic": float(self.generic),
            "words": float(self.words),
            "turns": float(self.turns),
        }
        return {k: round(v, 4) for k, v in out.items()}


def split_payload(query: str) -> tuple[str, str]:
    """(the ask, the text it works on): quoted spans are payload; without quotes, what follows
    the first colon when it runs to four words or more. No payload: ("query", "")."""
    quoted = QUOTED_RE.findall(query)
    if quoted:
        return " ".join(QUOTED_RE.sub(" ", query).split()), " ".join(quoted)
    head, colon, tail = query.partition(":")
    if colon and len(tail.split()) >= 4 and head.strip():
        return head.strip(), tail.strip()
    return query, ""


def text_cues(query: str, turns: int = 1) -> dict[str, Any]:
    """Fact-seeking and format cues, question form, length and turn count of a query."""
    return {
        "fact_cues": len(FACT_RE.findall(query)),
        "format_cues": len(FORMAT_RE.findall(query)),
        "personal": len(PERSONAL_RE.findall(query)),
        "generic": GENERIC_RE.match(query) is not None,
        "question": query.rstrip().endswith("?") or QUESTION_RE.match(query) is not None,
        "payload": bool(split_payload(query)[1]),
        "words": len(query.split()),
        "turns": max(turns, 1),
    }


def retrieval_signals(query: str, result: SearchResult | None) -> dict[str, float]:
    """Strength of a search result: best relevance and dense score, identifier hit, margin."""
    if result is None or not result.hits:
        return {}
    idents = identifiers(query)
    exact = any(contains(h.text, i) for h in result.hits for i in idents)
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
    """Per adapter, how well `query_vec` matches its exemplars; the best adapter, its margin.

    An adapter's match is the mean similarity of its closest half of exemplars: one lucky
    exemplar picks the wrong adapter more often than half of them do (on bench/router.py's
    set, 88% right adapters with the single closest exemplar, 94% with the closest half).

    `vectors` maps each adapter's served name to its exemplar embeddings; `exclude` names
    exemplar positions to ignore per served name (calibration leaves a labelled prompt's own
    exemplar out, or it would learn from a trivial 1.0).
    """
    import numpy as np

    q = np.asarray(query_vec, dtype=np.float32)
    per: list[tuple[float, float, AdapterVersion]] = []  # (match, closest, adapter)
    for av in adapters:
        rows = vectors.get(av.served_name) or []
        skip = set((exclude or {}).get(av.served_name, []))
        kept = [v for i, v in enumerate(rows) if i not in skip]
        if not kept:
            continue
        sims = np.sort(np.asarray(kept, dtype=np.float32) @ q)[::-1]
        half = sims[: max(1, math.ceil(len(sims) / 2))]
        per.append((float(half.mean()), float(sims[0]), av))
    if not per:
        return TaskMatch()
    per.sort(key=lambda x: (-x[0], x[2].name))
    match, closest, best = per[0]
    return TaskMatch(
        best=best,
        similarity=closest,
        margin=match - per[1][0] if len(per) > 1 else match,
        match=match,
        per_adapter={av.name: round(m, 4) for m, _, av in per},
    )
