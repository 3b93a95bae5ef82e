import io

import pytest
from pypdf.errors import DependencyError

from retrieval.errors import RetrievalError
from retrieval.loaders import load_bytes


def test_text_markdown_html() -> None:
    [doc] = load_bytes("notes/a.md", b"# Prices\n\nKettle: 40 euros.", 1000)
    assert doc.doc_id == doc.source == "notes/a.md" and doc.title == "Prices"
    [doc] = load_bytes(
        "p.html",
        b"<html><title>Shop</title><body><h1>Kettles</h1><p>40 euros</p>"
        b"<script>evil()</script></body></html>",
        1000,
    )
    assert doc.title == "Shop" and "# Kettles" in doc.text and "evil" not in doc.text


def test_records_json_and_jsonl() -> None:
    docs = load_bytes(
        "f.jsonl", b'{"id": "k1", "text": "kettle", "price": 40}\n\n{"text": "mug"}\n', 1000
    )
    assert [d.doc_id for d in docs][0] == "k1" and docs[0].metadata == {"price": 40}
    assert docs[0].source == "f.jsonl#k1"
    docs = load_bytes("f.json", b'[{"text": "a", "source": "s1"}]', 1000)
    assert docs[0].source == "s1"


@pytest.mark.parametrize(
    ("name", "data", "kind", "match"),
    [
        ("a.exe", b"x", "unsupported", "unsupported file type"),
        ("a.txt", b"", "invalid", "empty"),
        ("a.txt", b"   \n", "invalid", "empty"),
        ("a.txt", b"ab\x00cd", "unsupported", "binary"),
        ("a.txt", b"\xff\xfe\xfa", "unsupported", "UTF-8"),
        ("a.txt", b"x" * 2000, "too_large", "limit"),
        ("a.jsonl", b'{"text": "ok"}\n{"text": broken}\n', "invalid", "line 2"),
        ("a.jsonl", b'{"text": "ok"}\n{"txt": "no text"}\n', "invalid", "line 2: 'text'"),
        ("a.jsonl", b'{"text": "ok", "tags": ["a"]}\n', "invalid", "metadata field 'tags'"),
        ("a.jsonl", b'{"text": "ok", "doc_id": "x"}\n', "invalid", "reserved"),
        ("a.json", b'{"text": ', "invalid", "invalid JSON"),
        ("a.pdf", b"not a pdf at all", "invalid", "PDF"),
    ],
)
def test_bad_files_say_what_is_wrong(name, data, kind, match) -> None:
    with pytest.raises(RetrievalError, match=match) as exc:
        load_bytes(name, data, 1000)
    assert exc.value.kind == kind


def test_jsonl_lines_split_on_newlines_only() -> None:
    # U+2028 is legal unescaped inside a JSON string; str.splitlines() would split there
    data = '{"id": "a", "text": "one\u2028two"}\r\n{"text": "three"}\r\n'.encode()
    docs = load_bytes("f.jsonl", data, 1000)
    assert [d.text for d in docs] == ["one\u2028two", "three"]
    bad = '{"text": "one\u2028two"}\n{"text": "x\x85y"}\n{oops}\n'.encode()
    with pytest.raises(RetrievalError, match="f.jsonl line 3: invalid JSON"):
        load_bytes("f.jsonl", bad, 1000)


def _pdf(password: str = "") -> bytes:
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(72, 72)
    if password:
        writer.encrypt(password)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_encrypted_pdf_says_so() -> None:
    with pytest.raises(RetrievalError, match="e.pdf is encrypted") as exc:
        load_bytes("e.pdf", _pdf("secret"), 10_000)
    assert exc.value.kind == "unsupported" and exc.value.code == "encrypted_pdf"


@pytest.mark.parametrize(
    ("error", "kind", "match"),
    [
        (DependencyError("cryptography is required for AES"), "unsupported", "encrypted"),
        (IndexError("list index out of range"), "invalid", "not a readable PDF"),
        (TypeError("'NullObject' is not subscriptable"), "invalid", "not a readable PDF"),
        (RecursionError("maximum recursion depth exceeded"), "invalid", "not a readable PDF"),
    ],
)
def test_any_pdf_parser_failure_is_a_client_error(monkeypatch, error, kind, match) -> None:
    import pypdf

    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(pypdf, "PdfReader", broken)
    with pytest.raises(RetrievalError, match=match) as exc:
        load_bytes("x.pdf", _pdf(), 10_000)
    assert exc.value.kind == kind
