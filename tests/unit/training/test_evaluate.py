import json

import pytest

from training.errors import TrainingError
from training.evaluate import evaluate


@pytest.fixture
def dirs(tmp_path):
    """A base model and an adapter directory with only their config files: enough to reach the
    data checks, which run before any model loads."""
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "config.json").write_text("{}")
    (tmp_path / "run" / "adapter").mkdir(parents=True)
    (tmp_path / "run" / "adapter" / "adapter_config.json").write_text("{}")
    (tmp_path / "ds").mkdir()
    return tmp_path


def _evaluate(dirs, **kwargs):
    return evaluate(dirs / "run" / "adapter", dirs / "ds", dirs / "base", **kwargs)


def test_malformed_test_file_names_the_line(dirs, write_rows, make_chat) -> None:
    write_rows(dirs / "ds" / "test.jsonl", [make_chat("q", "a"), "{broken"])
    with pytest.raises(TrainingError, match=r"test.jsonl:2: invalid JSON") as err:
        _evaluate(dirs)
    assert err.value.code == "invalid_dataset"


def test_row_without_an_answer_names_the_line(dirs, write_rows, make_chat) -> None:
    write_rows(dirs / "ds" / "test.jsonl",
               [make_chat("q", "a"), {"messages": [{"role": "user", "content": "q2"}]}])  # fmt: skip
    with pytest.raises(TrainingError, match=r"test.jsonl:2: no assistant message"):
        _evaluate(dirs)
    write_rows(dirs / "ds" / "test.jsonl", [make_chat("q", "a")])
    write_rows(dirs / "general.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}])
    with pytest.raises(
        TrainingError, match=r"general.jsonl: 1 bad lines: line 1: a chat line must end"
    ):
        _evaluate(dirs, general=dirs / "general.jsonl")


def test_empty_or_preference_splits_are_clear_errors(dirs, write_rows) -> None:
    (dirs / "ds" / "test.jsonl").write_text("")
    (dirs / "ds" / "validation.jsonl").write_text("")
    with pytest.raises(TrainingError, match="no examples in test.jsonl or validation.jsonl"):
        _evaluate(dirs)
    pair = {"prompt": "p", "chosen": "a", "rejected": "b"}
    write_rows(dirs / "ds" / "validation.jsonl", [json.dumps(pair)])
    with pytest.raises(TrainingError, match="holds preference pairs"):
        _evaluate(dirs)
