"""Errors the training module raises before or instead of training; each says what to change."""

from __future__ import annotations


class TrainingError(Exception):
    """Bad data, config or paths (a 400 when it reaches HTTP)."""

    def __init__(self, message: str, code: str = "invalid_training_input", status_code: int = 400):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status_code = status_code
