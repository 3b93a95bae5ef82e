"""Errors the retrieval layer raises; `status_code` maps to HTTP at the gateway."""

from __future__ import annotations


class RetrievalError(Exception):
    """A retrieval operation the caller must fix (a 400 unless said otherwise)."""

    def __init__(self, message: str, code: str = "invalid_document", status_code: int = 400):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status_code = status_code
