"""The retrieval query for a conversation: the last user turn, plus what it refers back to.

"And how much does it weigh?" retrieves nothing useful alone. A last turn that leans on earlier
ones (a pronoun such as it/they/that, an opening such as "and"/"what about", or too few content
words to name a subject) gets the earlier user turns prepended, newest first, until the query
holds enough content words, together with the names and codes of the assistant's last answer
(it may have named the product the user now calls "it"). A self-contained last turn is used as
it is, so earlier topics never pull retrieval away from a new question.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from retrieval.grounding import STOPWORDS, key_terms

WORD_RE = re.compile(r"[A-Za-z0-9][\w'-]*")
REFERRING = frozenset(
    [
        "it",
        "its",
        "it's",
        "they",
        "them",
        "their",
        "theirs",
        "this",
        "that",
        "these",
        "those",
        "he",
        "him",
        "his",
        "she",
        "her",
        "one",
        "ones",
        "there",
        "same",
        "such",
        "former",
        "latter",
        "other",
    ]
)
OPENINGS = ("and ", "also ", "what about", "how about", "and what", "and how", "or ", "but ")
# Content words (not stopwords, not referring words) a query needs to stand on its own.
MIN_CONTENT = 3


def _text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def content_words(text: str) -> list[str]:
    """Words of `text` that can carry a subject (no stopwords, no pronouns)."""
    words = [w.lower() for w in WORD_RE.findall(text)]
    return [w for w in words if w not in STOPWORDS and w not in REFERRING]


def needs_context(text: str) -> bool:
    """Whether a user turn leans on earlier turns (see the module docstring)."""
    lowered = text.strip().lower()
    words = {w.lower() for w in WORD_RE.findall(lowered)}
    return (
        bool(words & REFERRING)
        or lowered.startswith(OPENINGS)
        or len(content_words(text)) < MIN_CONTENT
    )


def conversation_query(messages: Sequence[dict[str, Any]], max_turns: int = 3) -> str:
    """The text to search with for the conversation's last user turn (see the module
    docstring); at most `max_turns` earlier user turns are added."""
    users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    if not users:
        return ""
    last = users[-1]
    query = _text(messages[last]).strip()
    if not needs_context(query):
        return query
    parts = [query]
    # Names and codes the assistant's latest answer introduced ("That is the Zorvik kettle.").
    replies = [m for m in messages[:last] if m.get("role") == "assistant"]
    if replies:
        terms = [t for t in key_terms(_text(replies[-1])) if t not in query.lower()]
        if terms:
            parts.append(" ".join(terms))
    added = 0
    for i in reversed(users[:-1]):
        if added == max_turns:
            break
        earlier = _text(messages[i]).strip()
        if earlier:
            parts.append(earlier)
            added += 1
        if len(content_words(" ".join(parts))) >= MIN_CONTENT + len(content_words(query)):
            break
    return " ".join(parts)
