"""Errors as values inside, OpenAI-style HTTP bodies at the edge.

Every error a caller can cause becomes `{"error": {"message", "type", "code", "param"}}` with a 4xx
status. The libraries (`adapters`, `retrieval`, `training`) raise their own exceptions that carry
`status_code`, `code` and `message`; `to_api_error` maps those too, without importing them.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable_error",
    504: "timeout_error",
}


class ApiError(Exception):
    """An error with an HTTP status and an OpenAI-style body."""

    def __init__(
        self,
        status_code: int,
        message: str,
        code: str | None = None,
        *,
        param: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.code = code
        self.param = param
        self.type = type or _TYPES.get(status_code, "api_error")
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "code": self.code,
                "param": self.param,
            }
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status_code, headers=self.headers)


# What each kind of error the libraries raise means over HTTP.
KIND_STATUS = {
    "invalid": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "conflict": 409,
    "too_large": 413,
    "unsupported": 415,
    "rate_limited": 429,
    "internal": 500,
    "unavailable": 503,
    "timeout": 504,
}


def to_api_error(exc: BaseException) -> ApiError | None:
    """Map a library exception that carries `kind`/`code`/`message` to an ApiError."""
    if isinstance(exc, ApiError):
        return exc
    status = KIND_STATUS.get(getattr(exc, "kind", None) or "")
    if status is None:
        status = getattr(exc, "status_code", None)
    if isinstance(status, int) and 400 <= status < 600:
        return ApiError(
            status,
            str(getattr(exc, "message", None) or exc),
            getattr(exc, "code", None),
            headers=getattr(exc, "headers", None),
        )
    return None


def model_not_found(model: str) -> ApiError:
    return ApiError(
        404,
        f"The model '{model}' does not exist or you do not have access to it. "
        "GET /v1/models lists the models you can use.",
        "model_not_found",
        param="model",
    )


def engine_unavailable(detail: str, retry_after: int = 5) -> ApiError:
    return ApiError(
        503,
        f"The model server is not available right now ({detail}); retry shortly.",
        "engine_unavailable",
        headers={"Retry-After": str(retry_after)},
    )
