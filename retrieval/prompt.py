"""Put retrieved chunks into the chat as numbered sources, and say which ones were used."""

from __future__ import annotations

from typing import Any

INSTRUCTION = (
    "Answer the user's question using only the numbered sources below. Cite the sources you "
    "use in square brackets, like [1]. If the sources do not contain the answer, say so."
)


def build_rag_messages(
    messages: list[dict[str, Any]], hits: list[Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Messages with a system message carrying the sources; citations for the hits used."""
    if not hits:
        return messages, []
    lines = [INSTRUCTION, ""]
    for number, hit in enumerate(hits, 1):
        lines.append(f"[{number}] ({hit.source}) {hit.text.strip()}")
    context = "\n".join(lines)
    out = [dict(m) for m in messages]
    if (
        out
        and out[0].get("role") in ("system", "developer")
        and isinstance(out[0].get("content"), str)
    ):
        out[0]["content"] = f"{out[0]['content']}\n\n{context}"
    else:
        out.insert(0, {"role": "system", "content": context})
    citations = [
        {"id": hit.id, "source": hit.source, "score": round(hit.score, 4), "number": number}
        for number, hit in enumerate(hits, 1)
    ]
    return out, citations
