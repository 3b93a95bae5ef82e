"""Errors the adapter registry raises; each says what to change.

An error carries a `kind` (invalid, not_found, conflict, too_large, ...) and a `code`; what a
kind means over HTTP or as an exit status is decided at the edge (`serve`), not here.
"""

from __future__ import annotations


class AdapterError(Exception):
    """A registry operation the caller must fix (by default: invalid input)."""

    kind = "invalid"
    code = "invalid_adapter"

    def __init__(self, message: str, code: str | None = None, kind: str | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if kind is not None:
            self.kind = kind


class AdapterNotFound(AdapterError):
    kind = "not_found"
    code = "adapter_not_found"


class AdapterConflict(AdapterError):
    kind = "conflict"
    code = "adapter_conflict"


class UploadTooLarge(AdapterError):
    kind = "too_large"
    code = "upload_too_large"
