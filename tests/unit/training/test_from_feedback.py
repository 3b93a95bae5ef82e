"""Datasets from feedback: corrections and down-votes become curated, traceable examples."""

from __future__ import annotations

import json

import pytest

from training.curation import PrepareConfig
from training.errors import TrainingError
from training.feedback import (
    NO_ANSWER,
    NO_CORRECTION,
    NO_PROMPT,
    build_from_feedback,
    examples_from_feedback,
    prompt_messages,
)
from training.formats import read_examples, read_jsonl

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india"]


def record(i: int, **over):
    """A down-voted, captured answer with a correction; distinct words per i."""
    w = WORDS[i % len(WORDS)]
    base = {
        "id": f"chatcmpl-{i}",
        "rating": "down",
        "negative": True,
        "correction": f"The {w} answer is v{i * 3} exactly.",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": f"Question {i} about {w} topic{i * 7}?"},
        ],
        "answer": f"Wrong {w} guess w{i}.",
        "adapter": "support@2" if i % 3 else "support@1",
        "created_at": f"2026-12-0{1 + i % 5}T10:00:00+00:00",
    }
    return {**base, **over}


def test_prompt_messages() -> None:
    msgs = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "system", "content": "late"},
        {"role": "user", "content": [{"type": "text", "text": "q2"}]},
        {"role": "assistant", "content": "the answer given"},
        {"role": "tool", "content": "x"},
    ]
    assert prompt_messages(msgs) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
    ]
    assert (
        prompt_messages(None) == []
        and prompt_messages([{"role": "assistant", "content": "a"}]) == []
    )


def test_examples_pairs_and_skips() -> None:
    built = examples_from_feedback(
        [
            record(1),
            record(2, negative=False, rating="up"),
            record(3, correction=None),
            record(4, messages=None),
            record(5, answer=None),
        ]
    )
    assert built.used == ["chatcmpl-1", "chatcmpl-2", "chatcmpl-5"]
    assert built.sft[0]["messages"][-1] == {
        "role": "assistant",
        "content": "The bravo answer is v3 exactly.",
    }
    assert built.sft[0]["messages"][0]["role"] == "system"
    assert built.preference == [
        {
            "prompt": "Question 1 about bravo topic7?",
            "chosen": "The bravo answer is v3 exactly.",
            "rejected": "Wrong bravo guess w1.",
        }
    ]
    assert built.skipped == {
        NO_CORRECTION: ["chatcmpl-3"],
        NO_PROMPT: ["chatcmpl-4"],
        NO_ANSWER: ["chatcmpl-5"],
    }
    assert built.adapters == {"support@2": 3}


def test_build_curates_and_records_lineage(tmp_path) -> None:
    records = [record(i) for i in range(12)]
    records.append(record(20, correction="Write to bob@example.com for the delta answer v60."))
    records.append({**record(0), "id": "chatcmpl-dup"})  # the same example again
    evals = tmp_path / "eval.jsonl"
    leaked = record(5)
    evals.write_text(
        json.dumps(
            {
                "messages": [
                    *leaked["messages"][1:],
                    {"role": "assistant", "content": leaked["correction"]},
                ]
            }
        )
        + "\n"
    )
    out = tmp_path / "ds"
    manifest = build_from_feedback(
        records,
        out,
        PrepareConfig(seed=1),
        eval_sets=[evals],
        lineage={"tenant": "acme", "adapter": "support"},
    )
    lineage = manifest["lineage"]
    assert lineage["kind"] == "feedback" and lineage["tenant"] == "acme"
    assert set(lineage["feedback_ids"]) == {r["id"] for r in records}
    assert lineage["adapter_versions"] == {"support@1": 5, "support@2": 9}
    assert lineage["first_feedback_at"] == "2026-12-01T10:00:00+00:00"
    assert lineage["last_feedback_at"] == "2026-12-05T10:00:00+00:00"
    assert lineage["examples"] == 14 and lineage["preference_pairs"] == 14
    assert [s["path"] for s in manifest["sources"]] == [
        "feedback:corrections",
        "feedback:preferences",
    ]
    assert manifest["removed"]["exact duplicate"] == 2  # one example, one pair
    assert manifest["removed"]["overlaps an eval set"] == 1
    stored = json.loads((out / "manifest.json").read_text())
    assert stored["lineage"] == lineage and stored["dataset_digest"] == manifest["dataset_digest"]
    rows = [
        m["content"]
        for f in ("train", "validation", "test")
        for r in read_jsonl(out / f"{f}.jsonl")
        for m in r["messages"]
    ]
    assert (
        "Write to [EMAIL] for the delta answer v60." in rows
        and "bob@example.com" not in "".join(rows)
    )
    assert read_examples(out / "train.jsonl")  # what `loraplex train` reads
    assert (
        len(read_jsonl(out / "preference.jsonl"))
        + len(read_jsonl(out / "preference_validation.jsonl"))
        == 13
    )
    report = (out / "report.md").read_text()
    assert "## From feedback" in report and "from support@2: 9" in report


def test_capture_off_says_what_to_do(tmp_path) -> None:
    records = [record(i, messages=None, answer=None) for i in range(3)] + [record(9, correction="")]
    with pytest.raises(TrainingError, match="3 no prompt.*capture is off.*messages") as exc:
        build_from_feedback(records, tmp_path / "ds")
    assert exc.value.code == "empty_dataset" and not (tmp_path / "ds").exists()


def test_eval_set_directories(tmp_path) -> None:
    from training.feedback import eval_files

    ds = tmp_path / "prev"
    ds.mkdir()
    (ds / "test.jsonl").write_text('{"messages": []}\n')
    (ds / "validation.jsonl").write_text("")
    assert eval_files([ds]) == [ds / "test.jsonl"]
    with pytest.raises(TrainingError, match="no test.jsonl"):
        eval_files([tmp_path])
