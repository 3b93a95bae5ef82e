"""Split documents into overlapping chunks that respect headings and paragraphs.

Token counts use a simple word/punctuation tokenizer rather than the embedding model's
WordPiece: it is fast, model-independent (so chunk ids stay stable if the embedding model
changes) and close enough for sizing (MiniLM's 256-token window fits 200 of these comfortably).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

TOKEN_RE = re.compile(r"\w+|[^\w\s]")
HEADING_RE = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


@dataclass(frozen=True)
class Chunk:
    """A piece of a document: its text, the heading path above it, its place in the document."""

    text: str
    heading: str
    position: int


def count_tokens(text: str) -> int:
    """Words and punctuation marks in `text` (the unit `max_tokens` is counted in)."""
    return len(TOKEN_RE.findall(text))


def chunk_id(source: str, heading: str, text: str, occurrence: int = 0) -> str:
    """Stable id from source and content (heading path and text), not place: a paragraph
    inserted above leaves the ids, and so the embeddings, of everything below unchanged.
    `occurrence` tells apart identical chunks in one document (0 for the first)."""
    key = f"{source}\x00{heading}\x00{text}\x00{occurrence}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def chunk_ids(source: str, chunks: list[Chunk]) -> list[str]:
    """The ids of a document's chunks, in order (repeated chunks numbered by occurrence)."""
    seen: dict[tuple[str, str], int] = {}
    out = []
    for c in chunks:
        n = seen.get((c.heading, c.text), 0)
        seen[(c.heading, c.text)] = n + 1
        out.append(chunk_id(source, c.heading, c.text, n))
    return out


def sections(text: str) -> list[tuple[str, list[str]]]:
    """(heading path, paragraphs) per Markdown section; text before any heading has ''."""
    out: list[tuple[str, list[str]]] = []
    trail: list[tuple[int, str]] = []  # (level, title) of the open headings
    heading, paras, buf = "", [], []  # type: ignore[var-annotated]

    def flush_para() -> None:
        if buf:
            paras.append("\n".join(buf).strip())
            buf.clear()

    for line in text.splitlines():
        match = HEADING_RE.match(line)
        if match:
            flush_para()
            if paras:
                out.append((heading, list(paras)))
                paras.clear()
            level = len(match[1])
            # A heading closes every open one at its level or deeper (siblings do not nest,
            # and a document may start at ## without a #).
            while trail and trail[-1][0] >= level:
                trail.pop()
            trail.append((level, match[2].strip()))
            heading = " > ".join(title for _, title in trail)
        elif not line.strip():
            flush_para()
        else:
            buf.append(line)
    flush_para()
    if paras:
        out.append((heading, paras))
    return out


def _windows(tokens: list[str], size: int, overlap: int) -> list[list[str]]:
    step = max(1, size - overlap)
    return [tokens[i : i + size] for i in range(0, max(1, len(tokens) - overlap), step)]


def chunk_text(text: str, max_tokens: int = 200, overlap: int = 40) -> list[Chunk]:
    """Pack paragraphs into chunks of at most `max_tokens`; long paragraphs are windowed with
    `overlap` tokens, and consecutive chunks of a section share their boundary paragraph
    tail so a fact split across chunks is found from either side."""
    if overlap >= max_tokens:
        raise ValueError("overlap must be smaller than max_tokens")
    chunks: list[Chunk] = []
    for heading, paras in sections(text):
        current: list[str] = []
        size = 0
        for para in paras:
            n = count_tokens(para)
            if n > max_tokens:
                if current:
                    chunks.append(Chunk("\n\n".join(current), heading, len(chunks)))
                    current, size = [], 0
                words = para.split()
                for window in _windows(words, max_tokens * 3 // 4, overlap * 3 // 4):
                    chunks.append(Chunk(" ".join(window), heading, len(chunks)))
                continue
            if size + n > max_tokens and current:
                chunks.append(Chunk("\n\n".join(current), heading, len(chunks)))
                tail = current[-1].split()[-overlap:] if overlap else []
                current = [" ".join(tail)] if tail else []
                size = len(tail)
            current.append(para)
            size += n
        if current:
            chunks.append(Chunk("\n\n".join(current), heading, len(chunks)))
    return chunks
