"""Tenant endpoints for documents: upload or records in, delete, and a retrieval debugger."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from serve.errors import ServiceError
from serve.gateway.deps import RetrievalDep, SettingsDep, TenantDep

router = APIRouter(tags=["documents"])


class RecordsBody(BaseModel):
    records: list[dict[str, Any]] = Field(min_length=1, description="Each needs a 'text'.")


class RetrieveBody(BaseModel):
    query: str = Field(min_length=1)
    top_k: int = Field(4, ge=1, le=50)
    where: dict[str, str | int | float | bool] | None = None
    mode: Literal["hybrid", "dense", "bm25"] = "hybrid"


# The body is read by hand (files or records), so FastAPI cannot describe it: say both here.
DOCUMENTS_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": RecordsBody.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "array", "items": {"type": "string", "format": "binary"}}
                    },
                    "required": ["file"],
                }
            },
        },
    }
}


@router.post("/v1/documents", status_code=201, openapi_extra=DOCUMENTS_OPENAPI)
async def add_documents(
    request: Request, retrieval: RetrievalDep, settings: SettingsDep, tenant: TenantDep
) -> dict[str, Any]:
    """Ingest files (multipart, field `file`, repeatable) or JSON `{"records": [...]}`.

    Re-sending an unchanged document changes nothing; a changed one replaces its old chunks, and
    a re-sent JSON/JSONL file drops the records it no longer holds. Every file is checked before
    any is written, so one bad file leaves the collection as it was.
    """
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        form = await request.form()
        files = [f for f in form.getlist("file") if isinstance(f, UploadFile)]
        if not files:
            raise ServiceError("send one or more files in the multipart field 'file'", "no_files")
        limit = settings.max_upload_bytes
        uploads = [
            (upload.filename or "upload.txt", await _read_limited(upload, limit))
            for upload in files
        ]
        report = await run_in_threadpool(retrieval.ingest_files, tenant.id, uploads)
        return report.to_dict()
    body_bytes = await request.body()
    if len(body_bytes) > settings.max_upload_bytes:
        raise ServiceError(
            f"the request body is {len(body_bytes)} bytes; the limit is "
            f"{settings.max_upload_bytes} (max_upload_bytes)",
            "request_too_large",
            "too_large",
        )
    try:
        body = RecordsBody.model_validate_json(body_bytes)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ServiceError(
            f'send multipart files or JSON {{"records": [{{"text": ...}}]}}: '
            f"{'.'.join(str(p) for p in err['loc'])} {err['msg']}",
            "invalid_request",
        ) from None
    report = await run_in_threadpool(retrieval.ingest_records, tenant.id, body.records)
    return report.to_dict()


async def _read_limited(upload: UploadFile, limit: int) -> bytes:
    """The upload's bytes, refused with a 413 as soon as it passes `limit`."""
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise ServiceError(
            f"{upload.filename or 'the upload'} is larger than {limit} bytes (max_upload_bytes)",
            "file_too_large",
            "too_large",
        )
    return data


@router.delete("/v1/documents/{doc_id:path}")
def delete_document(doc_id: str, retrieval: RetrievalDep, tenant: TenantDep) -> dict[str, Any]:
    """Remove a document's chunks (its id: the file name, or the record's id)."""
    removed = retrieval.delete_document(tenant.id, doc_id)
    if not removed:
        raise ServiceError(
            f"no document {doc_id!r} for this tenant", "document_not_found", "not_found"
        )
    return {"id": doc_id, "deleted": True, "chunks": removed}


@router.post("/v1/retrieve")
def retrieve(body: RetrieveBody, retrieval: RetrievalDep, tenant: TenantDep) -> dict[str, Any]:
    """What retrieval finds for a query: hits with their scores, and the strength summary."""
    return retrieval.search(tenant.id, body.query, body.top_k, body.where, body.mode).to_dict()
