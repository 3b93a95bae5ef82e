"""Request body size limits, enforced while the body streams in (413 before it is buffered)."""

from __future__ import annotations

from typing import Any

from serve.errors import ServiceError
from serve.gateway.errors import error_response

UPLOAD_PATHS = ("/v1/adapters", "/v1/documents")


class BodyTooLarge(Exception):
    """Raised inside the app when the body passes its limit while streaming in."""


class BodyLimitMiddleware:
    """Pure ASGI middleware: JSON bodies up to `max_body`, uploads up to `max_upload` bytes."""

    def __init__(self, app: Any, max_body: int, max_upload: int) -> None:
        self.app = app
        self.max_body = max_body
        self.max_upload = max_upload

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        limit = self.max_upload if path.startswith(UPLOAD_PATHS) else self.max_body
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(limit, send)
            return
        seen = 0
        started = False

        async def limited_receive() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _too_large(limit, send)


async def _too_large(limit: int, send: Any) -> None:
    err = ServiceError(
        f"Request body is larger than the limit of {limit} bytes; send less "
        "(LORAPLEX_MAX_BODY_BYTES / LORAPLEX_MAX_UPLOAD_BYTES set the limits).",
        "request_too_large",
        "too_large",
    )
    await error_response(err)({"type": "http"}, None, send)  # type: ignore[arg-type]
