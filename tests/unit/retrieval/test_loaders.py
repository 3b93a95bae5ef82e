import io

import pytest
from pypdf.errors import DependencyError

from retrieval.errors import RetrievalError
from retrieval.loaders import load_bytes


def test_text_markdown_html() -> None:
    [doc] = load_bytes("notes/a.md", b"# Prices\n\nKettle: 40 euros.", 1000)
    assert doc.doc_id == doc.source == "notes/a.md" and doc.title == "Prices"
    [doc] = load_bytes("p.html", b"<html><title>Shop</title><body><h1>Kettles</h1><p>40 euros</p>"
                       b"<script>evil()</script></body></html>", 1000)  # fmt: skip
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
    ("name", "data", "status", "match"),
    [
        ("a.exe", b"x", 415, "unsupported file type"),
        ("a.txt", b"", 400, "empty"),
        ("a.txt", b"   \n", 400, "empty"),
        ("a.txt", b"ab\x00cd", 415, "binary"),
        ("a.txt", b"\xff\xfe\xfa", 415, "UTF-8"),
        ("a.txt", b"x" * 2000, 413, "limit"),
        ("a.jsonl", b'{"text": "ok"}\n{"text": broken}\n', 400, "line 2"),
        ("a.jsonl", b'{"text": "ok"}\n{"txt": "no text"}\n', 400, "line 2: 'text'"),
        ("a.jsonl", b'{"text": "ok", "tags": ["a"]}\n', 400, "metadata field 'tags'"),
        ("a.jsonl", b'{"text": "ok", "doc_id": "x"}\n', 400, "reserved"),
        ("a.json", b'{"text": ', 400, "invalid JSON"),
        ("a.pdf", b"not a pdf at all", 400, "PDF"),
    ],
)
def test_bad_files_say_what_is_wrong(name, data, status, match) -> None:
    with pytest.raises(RetrievalError, match=match) as exc:
        load_bytes(name, data, 1000)
    assert exc.value.status_code == status


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
    assert exc.value.status_code == 415 and exc.value.code == "encrypted_pdf"


@pytest.mark.parametrize(
    ("error", "status", "match"),
    [
        (DependencyError("cryptography is required for AES"), 415, "encrypted"),
        (IndexError("list index out of range"), 400, "not a readable PDF"),
        (TypeError("'NullObject' is not subscriptable"), 400, "not a readable PDF"),
        (RecursionError("maximum recursion depth exceeded"), 400, "not a readable PDF"),
    ],
)
def test_any_pdf_parser_failure_is_a_client_error(monkeypatch, error, status, match) -> None:
    import pypdf

    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(pypdf, "PdfReader", broken)
    with pytest.raises(RetrievalError, match=match) as exc:
        load_bytes("x.pdf", _pdf(), 10_000)
    assert exc.value.status_code == status
