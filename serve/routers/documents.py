"""Tenant endpoints for documents: upload or records in, delete, and a retrieval debugger."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from retrieval.embeddings import SentenceTransformerEmbedder
from retrieval.service import RetrievalService
from serve.deps import StateDep, TenantDep
from serve.errors import ApiError
from serve.settings import Settings

router = APIRouter(tags=["documents"])


def build(settings: Settings, vllm_urls: list[str]) -> RetrievalService:
    """The retrieval service: embedded Chroma under data_dir unless a server URL is set."""
    embedder = SentenceTransformerEmbedder(settings.embedding_model)
    return RetrievalService(
        bm25_dir=settings.data_dir / "bm25",
        chroma_path=None if settings.chroma_url else settings.chroma_dir,
        chroma_url=settings.chroma_url,
        embedder=embedder,
        max_file_bytes=settings.max_upload_bytes,
    )


class RecordsBody(BaseModel):
    records: list[dict[str, Any]] = Field(min_length=1, description="Each needs a 'text'.")


class RetrieveBody(BaseModel):
    query: str = Field(min_length=1)
    top_k: int = Field(4, ge=1, le=50)
    where: dict[str, str | int | float | bool] | None = None
    mode: str = Field("hybrid", pattern="^(hybrid|dense|bm25)$")


def _service(state: Any) -> RetrievalService:
    if state.retrieval is None:
        raise ApiError(503, "retrieval is not configured on this gateway", "no_retrieval")
    service: RetrievalService = state.retrieval
    return service


@router.post("/v1/documents", status_code=201)
async def add_documents(request: Request, state: StateDep, tenant: TenantDep) -> dict[str, Any]:
    """Ingest files (multipart, field `file`, repeatable) or JSON `{"records": [...]}`.

    Re-sending an unchanged document changes nothing; a changed one replaces its old chunks, and
    a re-sent JSON/JSONL file drops the records it no longer holds. Every file is checked before
    any is written, so one bad file leaves the collection as it was.
    """
    service = _service(state)
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        form = await request.form()
        files = [f for f in form.getlist("file") if isinstance(f, UploadFile)]
        if not files:
            raise ApiError(400, "send one or more files in the multipart field 'file'", "no_files")
        limit = state.settings.max_upload_bytes
        uploads = [
            (upload.filename or "upload.txt", await _read_limited(upload, limit))
            for upload in files
        ]
        report = await run_in_threadpool(service.ingest_files, tenant.name, uploads)
        return report.to_dict()
    body_bytes = await request.body()
    if len(body_bytes) > state.settings.max_upload_bytes:
        raise ApiError(
            413,
            f"the request body is {len(body_bytes)} bytes; the limit is "
            f"{state.settings.max_upload_bytes} (max_upload_bytes)",
            "request_too_large",
        )
    try:
        body = RecordsBody.model_validate_json(body_bytes)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ApiError(
            400,
            f'send multipart files or JSON {{"records": [{{"text": ...}}]}}: '
            f"{'.'.join(str(p) for p in err['loc'])} {err['msg']}",
            "invalid_request",
        ) from None
    return (await run_in_threadpool(service.ingest_records, tenant.name, body.records)).to_dict()


async def _read_limited(upload: UploadFile, limit: int) -> bytes:
    """The upload's bytes, refused with a 413 as soon as it passes `limit`."""
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise ApiError(
            413,
            f"{upload.filename or 'the upload'} is larger than {limit} bytes (max_upload_bytes)",
            "file_too_large",
        )
    return data


@router.delete("/v1/documents/{doc_id:path}")
async def delete_document(doc_id: str, state: StateDep, tenant: TenantDep) -> dict[str, Any]:
    """Remove a document's chunks (its id: the file name, or the record's id)."""
    removed = await run_in_threadpool(_service(state).delete_document, tenant.name, doc_id)
    if not removed:
        raise ApiError(404, f"no document {doc_id!r} for this tenant", "document_not_found")
    return {"id": doc_id, "deleted": True, "chunks": removed}


@router.post("/v1/retrieve")
async def retrieve(body: RetrieveBody, state: StateDep, tenant: TenantDep) -> dict[str, Any]:
    """What retrieval finds for a query: hits with their scores, and the strength summary."""
    result = await run_in_threadpool(
        _service(state).search, tenant.name, body.query, body.top_k, body.where, body.mode
    )
    return result.to_dict()
