"""The one table that turns error kinds into HTTP: status codes and OpenAI-style bodies.

Every error a caller can cause becomes `{"error": {"message", "type", "code", "param"}}` with a
4xx status; a dependency that is down is a 503 with `Retry-After`; anything else is a 500 whose
body says nothing of the internals (the log has the traceback).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from adapters.errors import AdapterError
from retrieval.errors import RetrievalError
from serve.database import database_unavailable
from serve.errors import ServiceError, kind_of
from training.errors import TrainingError

log = logging.getLogger("loraplex.gateway")

# kind -> (HTTP status, OpenAI error type)
KIND_HTTP: dict[str, tuple[int, str]] = {
    "invalid": (400, "invalid_request_error"),
    "unauthorized": (401, "authentication_error"),
    "forbidden": (403, "permission_error"),
    "not_found": (404, "invalid_request_error"),
    "conflict": (409, "conflict_error"),
    "too_large": (413, "invalid_request_error"),
    "unsupported": (415, "invalid_request_error"),
    "rate_limited": (429, "rate_limit_error"),
    "unavailable": (503, "service_unavailable_error"),
    "timeout": (504, "timeout_error"),
    "internal": (500, "api_error"),
}
# The error classes that carry a kind: the services' and each library's.
KINDED: tuple[type[Exception], ...] = (ServiceError, AdapterError, RetrievalError, TrainingError)
# Plain HTTP errors raised by the framework itself (unknown path, wrong method).
STATUS_KIND = {404: "not_found", 405: "invalid", 413: "too_large", 415: "unsupported"}
INTERNAL = ServiceError(
    "Internal error in the gateway; the gateway's log has the details.",
    "internal_error",
    "internal",
)


class ErrorDetail(BaseModel):
    """What went wrong and what to change (OpenAI's error object)."""

    message: str
    type: str
    code: str | None = None
    param: str | None = None


class ErrorBody(BaseModel):
    """Every error response: `{"error": {"message", "type", "code", "param"}}`."""

    error: ErrorDetail


def documented_errors() -> dict[int | str, dict[str, Any]]:
    """The error statuses any route may answer, for the OpenAPI document: every kind a caller
    or a dependency can cause (500, our own fault, is deliberately not promised)."""
    out: dict[int | str, dict[str, Any]] = {}
    for kind, (status, type_) in KIND_HTTP.items():
        if kind != "internal":
            out[status] = {"model": ErrorBody, "description": f"{type_} ({kind})"}
    out[408] = {"model": ErrorBody, "description": "the request body came too slowly"}
    return out


def error_body(exc: BaseException) -> dict[str, Any]:
    """The OpenAI-style body for a service or library error."""
    kind = kind_of(exc) or "internal"
    return {
        "error": {
            "message": str(getattr(exc, "message", None) or exc),
            "type": KIND_HTTP[kind][1],
            "code": getattr(exc, "code", None),
            "param": getattr(exc, "param", None),
        }
    }


def status_of(exc: BaseException) -> int:
    """The HTTP status for a service or library error (500 for anything without a kind)."""
    return KIND_HTTP[kind_of(exc) or "internal"][0]


def error_response(exc: BaseException) -> JSONResponse:
    """The whole HTTP answer for an error: status, body and `Retry-After` where it applies."""
    if kind_of(exc) is None:
        exc = INTERNAL
    headers = {}
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return JSONResponse(error_body(exc), status_code=status_of(exc), headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception through the table above."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(exc.errors(), prefix=("body", "query", "path")))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = STATUS_KIND.get(exc.status_code, "invalid")
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(ServiceError(str(exc.detail), code, kind))  # type: ignore[arg-type]

    async def _kinded(_: Request, exc: Exception) -> JSONResponse:
        return error_response(exc)

    for cls in KINDED:
        app.add_exception_handler(cls, _kinded)

    async def _database(_: Request, exc: Exception) -> JSONResponse:
        # Locked, down or unreachable: the caller can retry; never a 500.
        log.warning("database unavailable: %s", exc)
        return error_response(database_unavailable(exc))

    app.add_exception_handler(OperationalError, _database)

    # Starlette hands `Exception` handlers to its outermost middleware, which answers and then
    # re-raises: only errors nobody anticipated go there.
    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(exc)


def validation_error(errors: Any, prefix: tuple[str, ...] = ()) -> ServiceError:
    """A 400 naming the first invalid field of a pydantic validation failure."""
    first = errors[0] if errors else {}
    loc = ".".join(str(p) for p in first.get("loc", ()) if p not in prefix)
    return ServiceError(
        f"Invalid '{loc or 'request'}': {first.get('msg', 'invalid request')}",
        "invalid_request",
        param=loc or None,
    )
