"""After retrieval and after the answer: is the question covered, what does the answer cite,
and how much of it do the sources support. Deterministic and local: no model calls.

Coverage (`coverage`), before calling the model: the documents do not cover a question when
the question names something (a code such as SKU-4471, or a capitalised name such as "Zorvik")
that no hit mentions (retrieval then found the nearest thing, not the thing asked about, and a
small model answers from it anyway), or when the best hit's relevance is under a floor (lower
when the question's names were all found).

Citations (`cited_sources`): a source counts as cited when the answer carries its `[n]` marker,
or when a span of the answer occurs in it (at least `min_words` words in a row, or a shorter
span holding a number or code, such as "7.9 kg"). Each citation quotes the source's span.

Grounding (`grounding`): the share of the answer's facts that occur in the sources. Facts are
(1) numbers (37.50, 09:30, 2026; "37.5" matches "37.50", "9:30" matches "09:30"), (2) codes (a
letter and a digit in one token: SKU-4471), (3) capitalised terms that do not start a sentence
(names: Zorvik, Chile), and (4) key phrases: two adjacent words of three or more letters that
are not stopwords. Numbers, codes and names must occur in the sources (case aside) as they are;
a phrase is supported when each of its words (compared on a crude stem: a plural or tense
ending off, then five letters, so "costs" meets "cost" and "weighs" "weight") occurs in the
sources or the question. A fact the question holds too is an echo,
not a claim, and is not counted. Sources are searched with their headings and titles. An answer
with no facts scores 1.0 (it claims nothing the sources could contradict).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from retrieval.search import identifiers, whole_word

NOT_COVERED = (
    "The documents I can search do not cover this question, so I cannot answer it from them."
)
# Below this best-hit relevance (MiniLM cosine similarity; 1.0 = an exact code match) the
# documents rarely answer the question. On bench/rag_quality.py's shop corpus every question
# the documents do not answer scored under 0.4 (or named something no document mentions) and
# one answerable question in 125 did (0.32). A question whose names all occur in the hits
# needs less: 0.3.
MIN_RELEVANCE = 0.4
MIN_RELEVANCE_NAMED = 0.3

STOPWORDS = frozenset(
    [
        "a",
        "about",
        "above",
        "after",
        "again",
        "all",
        "also",
        "am",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "doing",
        "down",
        "during",
        "each",
        "few",
        "for",
        "from",
        "further",
        "had",
        "has",
        "have",
        "having",
        "he",
        "her",
        "here",
        "hers",
        "him",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "itself",
        "just",
        "me",
        "more",
        "most",
        "my",
        "no",
        "nor",
        "not",
        "now",
        "of",
        "off",
        "on",
        "once",
        "only",
        "or",
        "other",
        "our",
        "out",
        "over",
        "own",
        "same",
        "she",
        "should",
        "so",
        "some",
        "such",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "to",
        "too",
        "under",
        "until",
        "up",
        "very",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "yes",
        "please",
        "thanks",
        "thank",
        "answer",
        "question",
        "source",
        "sources",
    ]
)
TOKEN_RE = re.compile(r"[A-Za-z0-9][\w.:'-]*[A-Za-z0-9]|[A-Za-z0-9]")
NUMBER_RE = re.compile(r"(?<![\w.])\d+(?:[.,:]\d+)*(?![\w])")
NAME_RE = re.compile(r"\b[A-Z][a-z]+(?:[A-Z][a-z]+)*\b")
MARKER_RE = re.compile(r"\[(\d+(?:\s*[,;]\s*\d+)*)\]")
SENTENCE_START_RE = re.compile(r"(?:^|[.!?:;]\s+|\n\s*(?:[-*]\s+)?)$")


# -- coverage ---------------------------------------------------------------------------------
@dataclass
class Coverage:
    """Whether the hits cover a question; `reason` says why not; `missing` are the names and
    codes of the question that no hit mentions."""

    covered: bool
    reason: str
    top: float
    missing: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return {**self.__dict__, "missing": list(self.missing)}


def _haystack(hit: Any) -> str:
    meta = getattr(hit, "metadata", {}) or {}
    parts = [hit.text, str(meta.get("heading") or ""), str(getattr(hit, "title", "") or "")]
    return "\n".join(parts).lower()


def key_terms(text: str) -> list[str]:
    """Codes and capitalised names in `text` (not sentence-initial words, not stopwords)."""
    out = sorted(identifiers(text))
    for match in NAME_RE.finditer(text):
        word = match[0]
        if word.lower() in STOPWORDS or SENTENCE_START_RE.search(text[: match.start()]):
            continue
        if word.lower() not in out:
            out.append(word.lower())
    return out


def coverage(
    query: str,
    hits: Sequence[Any],
    min_relevance: float = MIN_RELEVANCE,
    min_relevance_named: float = MIN_RELEVANCE_NAMED,
    check_terms: bool = True,
) -> Coverage:
    """Do the hits cover `query`? No when there are none, when a code or name in the query
    occurs in no hit (`check_terms`), or when the best relevance is under `min_relevance`
    (`min_relevance_named` when the query names something and the hits mention all of it: a
    verbatim name is evidence the embedding does not see)."""
    if not hits:
        return Coverage(False, "no documents matched", 0.0)
    top = max(float(getattr(h, "relevance", 0.0) or 0.0) for h in hits)
    terms = key_terms(query) if check_terms else []
    if terms:
        text = "\n".join(_haystack(h) for h in hits)
        missing = [t for t in terms if not _mentions(text, t)]
        if missing:
            return Coverage(False, f"no document mentions {', '.join(missing)}", top, missing)
    floor = min_relevance_named if terms else min_relevance
    if top < floor:
        return Coverage(False, f"best relevance {top:.2f} is under {floor:.2f}", top)
    return Coverage(True, "", top)


def _mentions(haystack: str, term: str) -> bool:
    """Whether `haystack` (lower-cased) holds `term` as a word, or its singular ("Fridays")."""
    term = term.lower()
    forms = {term}
    if len(term) > 3 and not any(c.isdigit() for c in term):
        forms |= {term.removesuffix("'s"), term.removesuffix("s"), term.removesuffix("es")}
    return any(whole_word(form).search(haystack) is not None for form in forms)


def mentions(hit: Any, term: str) -> bool:
    """Whether a hit's text, heading or title holds `term` (see `key_terms`)."""
    return _mentions(_haystack(hit), term)


# -- citations --------------------------------------------------------------------------------
@dataclass
class Citation:
    """A source the answer uses: by its `[n]` marker (`how="marker"`) or by quoting it
    (`how="quote"`); `quote` is the source's text for the matching span."""

    number: int
    id: str
    source: str
    heading: str
    score: float
    quote: str
    how: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (the response's `loraplex.citations`)."""
        return dict(self.__dict__)


def _tokens(text: str) -> list[tuple[str, int, int]]:
    return [(m[0].lower().rstrip(".:"), m.start(), m.end()) for m in TOKEN_RE.finditer(text)]


def _is_fact(word: str) -> bool:
    return any(c.isdigit() for c in word)


def longest_common_span(answer: str, text: str) -> tuple[int, str, bool]:
    """(words, the span as `text` has it, whether it holds a number or code) of the longest run
    of words the answer and `text` share (case and punctuation aside); a shorter run holding a
    number or code wins over a longer one without, as a fact is what a citation is for."""
    a = [t[0] for t in _tokens(answer)]
    b = _tokens(text)
    bw = [t[0] for t in b]
    best: tuple[int, int, int] = (0, 0, 0)  # (holds a fact, length, end in b)
    run = [0] * (len(bw) + 1)
    factual = [False] * (len(bw) + 1)
    for i in range(1, len(a) + 1):
        new_run = [0] * (len(bw) + 1)
        new_factual = [False] * (len(bw) + 1)
        for j in range(1, len(bw) + 1):
            if a[i - 1] == bw[j - 1]:
                new_run[j] = run[j - 1] + 1
                new_factual[j] = factual[j - 1] or _is_fact(bw[j - 1])
                best = max(best, (int(new_factual[j]), new_run[j], j))
        run, factual = new_run, new_factual
    fact, length, end = best
    if not length:
        return 0, "", False
    return length, text[b[end - length][1] : b[end - 1][2]], bool(fact)


def cited_sources(answer: str, sources: Sequence[Any], min_words: int = 4) -> list[Citation]:
    """The sources `answer` uses, in source order (see the module docstring)."""
    markers = {int(n) for group in MARKER_RE.findall(answer) for n in re.split(r"[,;]", group)}
    out: list[Citation] = []
    for src in sources:
        words, quote, fact = longest_common_span(answer, src.text)
        quoted = words >= min_words or (fact and words >= 1)
        if src.number in markers or quoted:
            out.append(
                Citation(
                    number=src.number,
                    id=src.id,
                    source=src.source,
                    heading=src.heading,
                    score=round(float(src.score), 4),
                    quote=quote if quoted else "",
                    how="marker" if src.number in markers else "quote",
                )
            )
    return out


# -- grounding --------------------------------------------------------------------------------
@dataclass
class Grounding:
    """How much of an answer the sources support: `score` in [0, 1], and each fact checked as
    (kind, text, found)."""

    score: float
    facts: list[tuple[str, str, bool]] = field(default_factory=list)

    @property
    def unsupported(self) -> list[str]:
        """The facts no source holds."""
        return [text for _, text, found in self.facts if not found]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return {
            "score": self.score,
            "unsupported": self.unsupported,
            "facts": [list(f) for f in self.facts],
        }


def _normal_number(text: str) -> str:
    text = re.sub(r",(?=\d{3}(?!\d))", "", text).replace(",", ".")  # 1,000 -> 1000; 2,5 -> 2.5
    if ":" in text:  # a time: 09:30 == 9:30
        return ":".join(p.lstrip("0") or "0" for p in text.split(":"))
    if "." in text:
        whole, _, frac = text.partition(".")
        frac = frac.rstrip("0")
        whole = whole.lstrip("0") or "0"
        return f"{whole}.{frac}" if frac else whole
    return text.lstrip("0") or "0"


def _stem(word: str) -> str:
    """A crude stem: a plural or tense ending off, then the first five letters."""
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    return word[:5]


def facts(text: str) -> list[tuple[str, str]]:
    """(kind, fact) for each code, number, name and key phrase in `text`."""
    out: list[tuple[str, str]] = []
    codes = identifiers(text)
    out += [("code", code) for code in sorted(codes)]
    for match in NUMBER_RE.finditer(text):
        if not any(match[0] in c for c in codes):
            out.append(("number", _normal_number(match[0])))
    out += [("name", term) for term in key_terms(text) if term not in codes]
    words = [w for w, _, _ in _tokens(text)]
    for x, y in zip(words, words[1:], strict=False):
        if all(len(w) >= 3 and w not in STOPWORDS and not _is_fact(w) for w in (x, y)):
            out.append(("phrase", f"{x} {y}"))
    seen: set[tuple[str, str]] = set()
    unique = []
    for fact in out:
        if fact not in seen:
            seen.add(fact)
            unique.append(fact)
    return unique


def grounding(answer: str, sources: Sequence[Any], question: str = "") -> Grounding:
    """The share of the answer's facts found in the sources (see the module docstring)."""
    texts = [_haystack(s) for s in sources]
    haystack = "\n".join(texts)
    numbers = {_normal_number(n) for t in texts for n in NUMBER_RE.findall(t)}
    stems = {_stem(w) for t in texts for w, _, _ in _tokens(t)}
    asked = {_stem(w) for w, _, _ in _tokens(question)}
    echoes = set(facts(question)) if question else set()
    checked = []
    for kind, fact in facts(answer):
        if (kind, fact) in echoes:
            continue
        if kind == "phrase":
            words = [_stem(w) for w in fact.split()]
            if all(w in asked for w in words):
                continue  # the question's own words, rearranged
            found = all(w in stems or w in asked for w in words)
        elif kind == "number":
            found = fact in numbers
        else:
            found = _mentions(haystack, fact)
        checked.append((kind, fact, found))
    if not checked:
        return Grounding(1.0, [])
    return Grounding(round(sum(f[2] for f in checked) / len(checked), 4), checked)
