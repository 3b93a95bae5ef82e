"""Errors the training module raises before or instead of training; each says what to change.

`kind` (invalid, not_found, conflict, ...) says what sort of failure it is; the CLI and the
gateway decide what that means for their callers.
"""

from __future__ import annotations


class TrainingError(Exception):
    """Bad data, config or paths (invalid input unless `kind` says otherwise)."""

    def __init__(self, message: str, code: str = "invalid_training_input", kind: str = "invalid"):
        super().__init__(message)
        self.message = message
        self.code = code
        self.kind = kind
