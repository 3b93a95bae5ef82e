"""Request body limits, enforced while the body streams in: its size (413 before it is
buffered), the time the client takes to send it (408: a body sent slowly must not hold a
request open forever), and text that is not text (400: bytes that are not UTF-8, or a lone
UTF-16 surrogate escape such as `"\\ud800"`, which is valid JSON but breaks the tokenizers,
the database and Chroma further in)."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from starlette.responses import JSONResponse

from serve.errors import ServiceError
from serve.gateway.errors import error_body, error_response

UPLOAD_PATHS = ("/v1/adapters", "/v1/documents")
# A `\uD800`-`\uDFFF` escape: the only way a lone surrogate gets into parsed JSON. Bodies
# without one (nearly all) are not parsed here at all.
SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


class BodyTooLarge(Exception):
    """Raised inside the app when the body passes its limit while streaming in."""


class BodyTooSlow(Exception):
    """Raised inside the app when the body has not arrived within its time limit."""


class BodyLimitMiddleware:
    """Pure ASGI middleware: JSON bodies up to `max_body`, uploads up to `max_upload` bytes,
    each in at most `body_timeout_s` seconds from the first read; JSON bodies with lone
    surrogates refused."""

    def __init__(
        self, app: Any, max_body: int, max_upload: int, body_timeout_s: float = 30.0
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.max_upload = max_upload
        self.body_timeout_s = body_timeout_s

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
        complete = False
        deadline: float | None = None
        started = False
        loop = asyncio.get_running_loop()

        async def limited_receive() -> dict[str, Any]:
            nonlocal seen, complete, deadline
            if complete:
                # After the body, the app only waits for the client to disconnect (streams
                # do, for as long as they run): no deadline there.
                message: dict[str, Any] = await receive()
                return message
            if deadline is None:
                deadline = loop.time() + self.body_timeout_s
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.0))
            except TimeoutError:
                raise BodyTooSlow from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge
                complete = not message.get("more_body", False)
            return message

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            if headers.get(b"content-type", b"").startswith(b"multipart/"):
                # Uploads stream through (to a file, never whole in memory), limits applied.
                await self.app(scope, limited_receive, tracking_send)
                return
            # Any other body is read whole here, within the limits, before the app sees it:
            # a refusal is then always a clean answer (the chat route reads JSON whatever
            # the content type, and FastAPI would turn an error raised while it reads a
            # body into a vague 400 of its own).
            messages = await _read_body(limited_receive)
            _check_text(b"".join(m.get("body", b"") for m in messages))
        except BodyTooLarge:
            if not started:
                await _too_large(limit, send)
            return
        except BodyTooSlow:
            if not started:
                await _too_slow(self.body_timeout_s, send)
            return
        except BadText as exc:
            await error_response(exc.error)({"type": "http"}, None, send)  # type: ignore[arg-type]
            return

        async def replay() -> dict[str, Any]:
            if messages:
                return messages.pop(0)
            message: dict[str, Any] = await limited_receive()
            return message

        await self.app(scope, replay, tracking_send)


async def _read_body(receive: Any) -> list[dict[str, Any]]:
    """Every message of the request body (a disconnect ends it early)."""
    messages = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message.get("more_body", False):
            return messages


class BadText(Exception):
    """A body holds text that is not valid Unicode (carries the 400 to answer with)."""

    def __init__(self, error: ServiceError) -> None:
        super().__init__(error.message)
        self.error = error


def lone_surrogate(value: Any, where: str = "") -> str | None:
    """The JSON path of the first string in `value` holding a lone UTF-16 surrogate, or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where or "body"
        return None
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = lone_surrogate(key, where) if isinstance(key, str) else None
        found = found or lone_surrogate(item, f"{where}.{key}" if where else str(key))
        if found:
            return found
    return None


def _check_text(body: bytes) -> None:
    """Raise BadText if `body` is not UTF-8, or is JSON holding a lone surrogate (parsed only
    when it holds an escape that could be one)."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadText(
            ServiceError(
                f"The body is not valid UTF-8 (byte {exc.start}: {body[exc.start : exc.start + 4]!r}"
                "): send JSON encoded as UTF-8",
                "invalid_json",
            )
        ) from None
    if not SURROGATE_ESCAPE.search(body):
        return
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return  # not JSON: the route says so, with its own message
    where = lone_surrogate(payload)
    if where is not None:
        raise BadText(
            ServiceError(
                f"'{where}' holds a lone UTF-16 surrogate escape (\\ud800-\\udfff without its "
                "pair), which is not text: send valid Unicode",
                "invalid_text",
                param=where,
            )
        )


async def _too_large(limit: int, send: Any) -> None:
    err = ServiceError(
        f"Request body is larger than the limit of {limit} bytes; send less "
        "(LORAPLEX_MAX_BODY_BYTES / LORAPLEX_MAX_UPLOAD_BYTES set the limits).",
        "request_too_large",
        "too_large",
    )
    await error_response(err)({"type": "http"}, None, send)  # type: ignore[arg-type]


async def _too_slow(seconds: float, send: Any) -> None:
    err = ServiceError(
        f"The request body did not arrive within {seconds:g} s; send it at once "
        "(LORAPLEX_BODY_TIMEOUT_S sets the limit).",
        "request_timeout",
    )
    response = JSONResponse(error_body(err), status_code=408, headers={"Connection": "close"})
    await response({"type": "http"}, None, send)  # type: ignore[arg-type]
