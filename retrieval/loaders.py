"""Turn files and records into documents: text, Markdown, HTML, PDF, JSON and JSONL."""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from retrieval.errors import RetrievalError

TEXT_TYPES = {".txt", ".text", ".md", ".markdown"}
HTML_TYPES = {".html", ".htm"}
RECORD_TYPES = {".json", ".jsonl"}
SUPPORTED = sorted(TEXT_TYPES | HTML_TYPES | RECORD_TYPES | {".pdf"})
RESERVED = {
    "doc_id",
    "source",
    "title",
    "position",
    "heading",
    "ingested_at",
    "ingested_from",
    "text",
}


@dataclass
class Document:
    """One logical document: re-ingesting the same doc_id replaces its chunks.

    `origin` names the file the document came from ('' for records sent as JSON). A JSON or
    JSONL file holds many documents; re-ingesting the file replaces all of them, so records
    removed from it vanish too (see `ingest.drop_unlisted`).
    """

    doc_id: str
    source: str
    title: str
    text: str
    metadata: dict[str, str | int | float | bool] = field(default_factory=dict)
    origin: str = ""


def _decode(name: str, data: bytes) -> str:
    if b"\x00" in data[:8192]:
        raise RetrievalError(
            f"{name} looks binary; send text, Markdown, HTML, PDF or JSON",
            "binary_file",
            "unsupported",
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise RetrievalError(f"{name} is not UTF-8 text", "binary_file", "unsupported") from None


def _html_to_text(html: str) -> tuple[str, str]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    for tag in soup(["script", "style", "nav", "footer"]):
        tag.decompose()
    title = soup.title.get_text(strip=True) if soup.title else ""
    for level in range(1, 7):  # keep section structure for the chunker
        for h in soup.find_all(f"h{level}"):
            h.replace_with(f"\n\n{'#' * level} {h.get_text(' ', strip=True)}\n\n")
    for p in soup.find_all(["p", "li", "tr", "div"]):
        p.insert_after("\n\n")
    return soup.get_text(), title


def _pdf_to_text(name: str, data: bytes) -> str:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError

    encrypted = RetrievalError(
        f"{name} is encrypted; send a copy without a password", "encrypted_pdf", "unsupported"
    )
    try:
        reader = PdfReader(io.BytesIO(data))
        # Many PDFs carry only an owner password ("no printing"); the empty user password opens
        # them. A real user password does not, and AES may need a crypto package we lack.
        if reader.is_encrypted and not reader.decrypt(""):
            raise encrypted
        return "\n\n".join(page.extract_text() or "" for page in reader.pages)
    except (FileNotDecryptedError, DependencyError):
        raise encrypted from None
    except RetrievalError:
        raise
    except Exception as exc:
        # pypdf raises whatever a damaged file provokes (IndexError, TypeError, RecursionError,
        # ...), not only its own errors; any of them means this upload cannot be read.
        raise RetrievalError(
            f"{name} is not a readable PDF ({type(exc).__name__}: {exc})", "invalid_pdf"
        ) from None


def _first_heading(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return ""


def record_to_document(record: Any, where: str, source_prefix: str = "") -> Document:
    """A JSON record `{"text", "id"?, "source"?, "title"?, ...scalars}` as a Document.

    `source_prefix`: the file the record came from (also its `origin`), '' for a bare record.
    """
    if not isinstance(record, dict):
        raise RetrievalError(f"{where}: a record must be a JSON object with a 'text' field")
    text = record.get("text")
    if not isinstance(text, str) or not text.strip():
        raise RetrievalError(f"{where}: 'text' must be a non-empty string")
    doc_id = str(record.get("id") or hashlib.sha256(text.encode()).hexdigest()[:16])
    metadata: dict[str, str | int | float | bool] = {}
    for key, value in record.items():
        if key in ("id", "text", "source", "title"):
            continue
        if key in RESERVED:
            raise RetrievalError(f"{where}: field {key!r} is reserved; rename it")
        if not isinstance(value, str | int | float | bool):
            raise RetrievalError(
                f"{where}: metadata field {key!r} must be a string, number or boolean"
            )
        metadata[key] = value
    return Document(
        doc_id=doc_id,
        source=str(
            record.get("source") or (f"{source_prefix}#{doc_id}" if source_prefix else doc_id)
        ),
        title=str(record.get("title") or ""),
        text=text,
        metadata=metadata,
        origin=source_prefix,
    )


def load_bytes(name: str, data: bytes, max_bytes: int) -> list[Document]:
    """Documents in one file (`name` gives the type and the source)."""
    suffix = PurePath(name).suffix.lower()
    if suffix not in SUPPORTED:
        raise RetrievalError(
            f"{name}: unsupported file type {suffix or '(none)'}; "
            f"supported: {', '.join(SUPPORTED)}",
            "unsupported_type",
            "unsupported",
        )
    if len(data) > max_bytes:
        raise RetrievalError(
            f"{name} is {len(data)} bytes; the limit is {max_bytes}", "file_too_large", "too_large"
        )
    if not data.strip():
        raise RetrievalError(f"{name} is empty", "empty_file")
    if suffix == ".pdf":
        text, title = _pdf_to_text(name, data), ""
    else:
        raw = _decode(name, data)
        if suffix in RECORD_TYPES:
            return _records(name, raw, suffix)
        text, title = _html_to_text(raw) if suffix in HTML_TYPES else (raw, "")
    if not text.strip():
        raise RetrievalError(f"{name} has no text to index", "empty_file")
    title = title or _first_heading(text) or PurePath(name).stem
    return [Document(name, name, title, text, origin=name)]


def _records(name: str, raw: str, suffix: str) -> list[Document]:
    if suffix == ".json":
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise RetrievalError(
                f"{name}: invalid JSON at line {exc.lineno}: {exc.msg}", "invalid_json"
            ) from None
        items = data if isinstance(data, list) else [data]
        docs = [record_to_document(r, f"{name} record {i + 1}", name) for i, r in enumerate(items)]
    else:
        docs = []
        # JSONL separates records by "\n" only (a "\r" before it is JSON whitespace): splitlines()
        # would also split inside strings holding U+2028 or U+0085, which JSON allows unescaped.
        for lineno, line in enumerate(raw.split("\n"), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RetrievalError(
                    f"{name} line {lineno}: invalid JSON: {exc.msg}", "invalid_jsonl"
                ) from None
            docs.append(record_to_document(record, f"{name} line {lineno}", name))
    if not docs:
        raise RetrievalError(f"{name} holds no records", "empty_file")
    return docs
