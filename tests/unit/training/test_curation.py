import json

import pytest

from training.config import TrainConfig
from training.curation import PrepareConfig, prepare, quality_problem
from training.dedup import clusters
from training.errors import TrainingError
from training.formats import load_jsonl, normalise, read_jsonl
from training.pii import iban_ok, luhn_ok, redact


def chat(q, a):
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def write(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


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


def test_bad_lines_are_rejected_with_line_numbers(tmp_path) -> None:
    path = write(tmp_path / "d.jsonl", [chat("q", "a"), "{not json", {"foo": 1},
                                        {"messages": [{"role": "wizard", "content": "x"}]},
                                        {"prompt": 3, "completion": "x"}])  # fmt: skip
    loaded = load_jsonl(path)
    assert len(loaded.sft) == 1
    assert [(line, reason.split(":")[0]) for _, line, reason in loaded.rejected] == [
        (2, "invalid JSON"), (3, "unknown format"), (4, "message 0 needs a role in ['assistant', 'system', 'user']"),
        (5, "'prompt' must be a string")]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "kind"),
    [("write to bob.smith@example.org now", "email"), ("card 4111 1111 1111 1111", "card"),
     ("call +44 20 7946 0958", "phone"), ("ssn 123-45-6789", "national_id"),
     ("from 10.0.0.12", "ipv4"), ("addr 2001:db8::8a2e:370:7334", "ipv6"),
     ("pay GB82 WEST 1234 5698 7654 32", "iban")],
)  # fmt: skip
def test_pii_kinds_are_found_and_redacted(text, kind) -> None:
    out, counts = redact(text)
    assert counts == {kind: 1} and f"[{kind.upper()}]" in out


def test_pii_checksums_avoid_false_positives() -> None:
    for text in ["card 4111 1111 1111 1112", "iban GB82 WEST 1234 5698 7654 33", "ip 999.1.1.1",
                 "order 12345 shipped", "at 12:30:45 today", "version 1.2.3.4.5"]:  # fmt: skip
        assert redact(text) == (text, {}), text
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("DE89370400440532013000") and not iban_ok("DE89370400440532013001")


def test_quality_filters() -> None:
    cfg = PrepareConfig()
    assert quality_problem(chat("q", ""), cfg) == "empty answer"
    assert quality_problem(chat("q", "and then it was..."), cfg) == "truncated answer"
    assert (
        quality_problem(
            chat("Tell me about the weather today", "Tell me about the weather today"), cfg
        )
        == "answer repeats the prompt"
    )
    assert (
        quality_problem(
            {"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}]},
            cfg,
        )
        == "wrong role order"
    )
    assert quality_problem(chat("q", "x" * 20000), cfg) == "too long"
    assert quality_problem(chat("What is 2+2?", "4"), cfg) is None


def test_near_duplicates_cluster() -> None:
    texts = ["the quick brown fox jumps over the lazy dog near the river bank today",
             "the quick brown fox jumps over the lazy dog near the river bank today!",
             "completely different sentence about databases and indexes and queries"]  # fmt: skip
    ids = clusters(texts, threshold=0.8)
    assert ids[0] == ids[1] != ids[2]


def test_prepare_end_to_end(tmp_path) -> None:
    rows = [
        chat(f"Question number {i} about topic {i * 7}?", f"Answer {i}: the value is {i * 3}.")
        for i in range(40)
    ]
    rows += [
        rows[0],
        chat("Question number 1 about topic 7?!", "Answer 1: the value is 3."),
    ]  # dupes
    rows += [chat("Email me at jo@example.com please", "Sure, noted."), chat("q", "")]
    rows += ["{broken", {"prompt": "Prefer?", "chosen": "Yes.", "rejected": "No."}]
    evalset = write(
        tmp_path / "eval.jsonl",
        [chat("Question number 5 about topic 35?", "Answer 5: the value is 15.")],
    )
    manifest = prepare([write(tmp_path / "raw.jsonl", rows)], tmp_path / "out",
                       PrepareConfig(decontam_n=5), eval_sets=[evalset])  # fmt: skip
    out = tmp_path / "out"
    assert manifest["removed"] == {"exact duplicate": 1, "near duplicate": 1, "empty answer": 1,
                                   "overlaps an eval set": 1}  # fmt: skip
    assert manifest["rejected_lines"] == 1 and manifest["pii_found"] == {"email": 1}
    counts = {k: v["count"] for k, v in manifest["splits"].items()}
    assert (
        counts["preference"] == 1 and sum(counts[s] for s in ("train", "validation", "test")) == 40
    )
    texts = {
        s: {json.dumps(r) for r in read_jsonl(out / f"{s}.jsonl")}
        for s in ("train", "validation", "test")
    }
    assert not (texts["train"] & texts["test"]) and not (texts["train"] & texts["validation"])
    assert (
        "[EMAIL]"
        in (out / "train.jsonl").read_text()
        + (out / "validation.jsonl").read_text()
        + (out / "test.jsonl").read_text()
    )
    assert "near duplicate" in (out / "report.md").read_text()
    assert len(manifest["dataset_digest"]) == 64 and manifest["sources"][0]["sha256"]


def test_nothing_left_is_an_error_and_writes_nothing(tmp_path) -> None:
    with pytest.raises(TrainingError, match="no examples left"):
        prepare([write(tmp_path / "raw.jsonl", [chat("q", ""), "{bad"])], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["raw.jsonl"]


def test_config_values_are_checked(tmp_path) -> None:
    for bad in ({"rank": 0}, {"learning_rate": 5}, {"dropout": 1.5}, {"scheduler": "zigzag"},
                {"target_modules": ["lm_head"]}, {"batch_size": 0}):  # fmt: skip
        with pytest.raises(TrainingError):
            TrainConfig(**bad)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("rank: 4\nlearning_rate: 0.001\n")
    assert TrainConfig.from_yaml(cfg, rank=8).rank == 8
    cfg.write_text("rnak: 4\n")
    with pytest.raises(TrainingError, match="unknown config keys"):
        TrainConfig.from_yaml(cfg)
    with pytest.raises(TrainingError):
        PrepareConfig(dedup_threshold=0)
