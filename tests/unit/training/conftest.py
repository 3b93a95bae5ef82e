"""Helpers shared by the training unit tests: tiny crafted JSONL files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


def chat(q: str, a: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def write(path: Path, rows: list[Any]) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture
def make_chat():
    return chat


@pytest.fixture
def write_rows():
    return write
