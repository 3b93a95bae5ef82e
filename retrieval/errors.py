"""Errors the retrieval layer raises; each says what to change.

`kind` (invalid, not_found, too_large, unsupported, conflict, unavailable, internal) says what
sort of failure it is; the gateway and the CLI decide what that means for their callers.
"""

from __future__ import annotations


class RetrievalError(Exception):
    """A retrieval operation the caller must fix (invalid input unless `kind` says otherwise)."""

    def __init__(self, message: str, code: str = "invalid_document", kind: str = "invalid"):
        super().__init__(message)
        self.message = message
        self.code = code
        self.kind = kind
