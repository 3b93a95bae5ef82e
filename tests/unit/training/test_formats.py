import pytest

from training.errors import TrainingError
from training.formats import load_jsonl, normalise, read_examples, rejection_summary


def chat(q, a):
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def test_formats_normalise_to_chat() -> None:
    assert normalise({"prompt": "p", "completion": "c"}) == ("sft", chat("p", "c"))
    assert normalise({"instruction": "i", "input": "x", "output": "o"}) == (
        "sft",
        chat("i\n\nx", "o"),
    )
    assert normalise({"instruction": "i", "output": "o"})[1] == chat("i", "o")
    kind, pair = normalise({"prompt": "p", "chosen": "a", "rejected": "b"})
    assert kind == "preference" and pair == {"prompt": "p", "chosen": "a", "rejected": "b"}
    sys_chat = {"messages": [{"role": "system", "content": "s"}, *chat("q", "a")["messages"]]}
    assert normalise(sys_chat)[1] == sys_chat


@pytest.mark.parametrize(
    ("rows", "fmt"),
    [([chat("q", "a")], "chat"), ([{"prompt": "p", "completion": "c"}], "prompt_completion"),
     ([{"instruction": "i", "input": "", "output": "o"}], "alpaca"),
     ([{"prompt": "p", "chosen": "a", "rejected": "b"}], "preference")],
)  # fmt: skip
def test_format_is_detected_per_file(tmp_path, write_rows, rows, fmt) -> None:
    assert load_jsonl(write_rows(tmp_path / "d.jsonl", rows)).format == fmt


def test_bad_lines_are_rejected_with_line_numbers(tmp_path, write_rows) -> None:
    path = write_rows(tmp_path / "d.jsonl", [chat("q", "a"), "{not json", {"foo": 1}, "",
                                             {"messages": [{"role": "wizard", "content": "x"}]},
                                             {"prompt": "p", "completion": "c"},
                                             {"messages": [{"role": "user", "content": 3}]}])  # fmt: skip
    loaded = load_jsonl(path)
    assert len(loaded.sft) == 1 and loaded.format == "chat"
    assert [(line, reason) for _, line, reason in loaded.rejected] == [
        (2, "invalid JSON: Expecting property name enclosed in double quotes"),
        (3, "unknown format: expected 'messages', 'prompt'+'completion', 'instruction'+'output' or 'prompt'+'chosen'+'rejected'"),
        (5, "message 0 needs a role in ['assistant', 'system', 'user']"),
        (6, "line is prompt_completion but the file is chat (one format per file)"),
        (7, "'messages[0].content' must be a string")]  # fmt: skip
    assert rejection_summary(loaded.rejected) == {
        "invalid JSON": 1, "unknown format": 1, "message 0 needs a role in ['assistant', 'system', 'user']": 1,
        "line is prompt_completion but the file is chat (one format per file)": 1, "'messages[0].content' must be a string": 1}  # fmt: skip


def test_unknown_format_file_is_an_error_naming_the_line(tmp_path, write_rows) -> None:
    path = write_rows(tmp_path / "d.jsonl", ["", '{"question": "q", "answer": "a"}'])
    with pytest.raises(
        TrainingError, match=r"d.jsonl:2: unknown format.*\['answer', 'question'\]"
    ) as err:
        load_jsonl(path)
    assert err.value.code == "unknown_format" and err.value.kind == "invalid"


def test_missing_and_binary_files(tmp_path) -> None:
    with pytest.raises(TrainingError, match="does not exist"):
        load_jsonl(tmp_path / "nope.jsonl")
    (tmp_path / "b.jsonl").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(TrainingError, match="not UTF-8"):
        load_jsonl(tmp_path / "b.jsonl")


def test_prepared_split_with_a_bad_line_fails_with_its_number(tmp_path, write_rows) -> None:
    path = write_rows(tmp_path / "train.jsonl", [chat("q", "a"), chat("q2", "a2"), "{oops"])
    with pytest.raises(TrainingError, match=r"train.jsonl:3: invalid JSON"):
        read_examples(path)
    assert read_examples(write_rows(tmp_path / "ok.jsonl", [chat("q", "a")])) == [chat("q", "a")]
