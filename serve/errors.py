"""Errors as values: what went wrong and what the caller should change, with no HTTP in it.

Services (tenants, routing, chat, adapter admin) raise `ServiceError`; the libraries raise their
own errors with the same three attributes (`kind`, `code`, `message`). The edges translate a kind
once: the gateway into a status code and an OpenAI-style body (`serve.gateway.errors`), the CLI
into an exit status and a message (`serve.cli.common`).
"""

from __future__ import annotations

from typing import Literal

Kind = Literal[
    "invalid",  # the request is malformed or asks for something impossible
    "unauthorized",  # no or wrong credentials
    "forbidden",  # credentials fine, but this caller may not do this
    "not_found",  # no such thing (or not visible to this caller)
    "conflict",  # the current state refuses it (name taken, gates failed, ...)
    "too_large",  # over a size limit
    "unsupported",  # a file type or format loraplex does not take
    "rate_limited",  # over a quota; retry later
    "unavailable",  # a dependency (vLLM, Chroma, the database) is down; retry later
    "timeout",  # a dependency did not answer in time
    "internal",  # our fault
]
KINDS: tuple[Kind, ...] = Kind.__args__  # type: ignore[attr-defined]


class ServiceError(Exception):
    """A failure the caller can act on: `kind` says what sort, `message` what to change."""

    def __init__(
        self,
        message: str,
        code: str,
        kind: Kind = "invalid",
        *,
        param: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.kind = kind
        self.param = param
        self.retry_after = retry_after


def kind_of(exc: BaseException) -> str | None:
    """The kind of a service or library error (anything with a known `kind`), else None."""
    kind = getattr(exc, "kind", None)
    return kind if kind in KINDS else None


def model_not_found(model: str) -> ServiceError:
    """The one answer for a model the caller may not use: it never says whether it exists."""
    return ServiceError(
        f"The model '{model}' does not exist or you do not have access to it. "
        "GET /v1/models lists the models you can use.",
        "model_not_found",
        "not_found",
        param="model",
    )


def engine_unavailable(detail: str, retry_after: int = 5) -> ServiceError:
    """vLLM is down, restarting or refusing: retry shortly."""
    return ServiceError(
        f"The model server is not available right now ({detail}); retry shortly.",
        "engine_unavailable",
        "unavailable",
        retry_after=retry_after,
    )
