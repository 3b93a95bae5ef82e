"""Errors the adapter registry raises; each says what to change. `status_code` maps to HTTP."""

from __future__ import annotations


class AdapterError(Exception):
    """A registry operation the caller must fix (the default: a 400)."""

    status_code = 400
    code = "invalid_adapter"

    def __init__(self, message: str, code: str | None = None, status_code: int | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code


class AdapterNotFound(AdapterError):
    status_code = 404
    code = "adapter_not_found"


class AdapterConflict(AdapterError):
    status_code = 409
    code = "adapter_conflict"


class UploadTooLarge(AdapterError):
    status_code = 413
    code = "upload_too_large"
