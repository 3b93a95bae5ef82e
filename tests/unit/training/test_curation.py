import json
from pathlib import Path

import pytest

from training.curation import PrepareConfig, prepare, quality_problem, split_by_cluster
from training.dedup import clusters
from training.errors import TrainingError
from training.formats import read_jsonl, to_prompt_completion
from training.manifest import sha256_file
from training.run import exemplar_prompts


def chat(q, a):
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def distinct(i):
    """Examples whose word 3-grams share nothing with each other."""
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    return chat(f"Question {i} {words[i % 8]} zz{i} topic{i * 7}?", f"Answer{i} is v{i * 3} w{i}.")


def test_quality_filters() -> None:
    cfg = PrepareConfig()
    assert quality_problem(chat("q", ""), cfg) == "empty answer"
    assert quality_problem(chat("q", "   "), cfg) == "empty answer"
    assert quality_problem(chat("q", "and then it was..."), cfg) == "truncated answer"
    assert quality_problem(chat("q", "```python\nprint(1)"), cfg) == "truncated answer"
    same = "Tell me about the weather today"
    assert quality_problem(chat(same, same), cfg) == "answer repeats the prompt"
    assert quality_problem(chat(same, same + " ok"), cfg) == "answer repeats the prompt"
    swapped = {
        "messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}]
    }
    assert quality_problem(swapped, cfg) == "wrong role order"
    two_users = {"messages": [{"role": "user", "content": "q"}, {"role": "user", "content": "q2"},
                              {"role": "assistant", "content": "a"}]}  # fmt: skip
    assert quality_problem(two_users, cfg) == "wrong role order"
    late_system = {"messages": [*chat("q", "a")["messages"], {"role": "system", "content": "s"}]}
    assert quality_problem(late_system, cfg) == "wrong role order"
    assert quality_problem(chat("q", "x" * 20000), cfg) == "too long"
    assert quality_problem(chat("What is 2+2?", "4"), cfg) is None


def test_near_duplicates_cluster() -> None:
    texts = ["the quick brown fox jumps over the lazy dog near the river bank today",
             "the quick brown fox jumps over the lazy dog near the river bank today!",
             "completely different sentence about databases and indexes and queries",
             "the quick brown fox jumps over the lazy dog near the river bank, today"]  # fmt: skip
    ids = clusters(texts, threshold=0.8)
    assert ids[0] == ids[1] == ids[3] != ids[2]
    assert clusters(texts, threshold=1.0) == [0, 1, 2, 3]  # near-dup search off


def test_split_keeps_each_cluster_on_one_side() -> None:
    examples = [distinct(i) for i in range(30)]
    cluster_ids = [i // 3 for i in range(30)]  # ten clusters of three
    splits = split_by_cluster(examples, cluster_ids, PrepareConfig(seed=7))
    side = {}
    for name, rows in splits.items():
        for row in rows:
            side[examples.index(row) // 3] = side.get(examples.index(row) // 3, set()) | {name}
    assert all(len(s) == 1 for s in side.values())
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [24, 3, 3]
    again = split_by_cluster(examples, cluster_ids, PrepareConfig(seed=7))
    assert again == splits  # seeded


def test_near_duplicates_never_straddle_splits_when_kept(tmp_path, write_rows) -> None:
    base = [chat(f"Please summarise report number {i} about the {w} project budget for this quarter",
                 f"Report {i}: the {w} project is on budget with {i} items left to review.")
            for i, w in enumerate(["apollo", "borealis", "cygnus", "draco", "eridanus", "fornax",
                                   "gemini", "hydra", "indus", "lyra"])]  # fmt: skip
    variants = [chat(m["messages"][0]["content"] + "!", m["messages"][1]["content"]) for m in base]
    manifest = prepare([write_rows(tmp_path / "raw.jsonl", base + variants)], tmp_path / "out",
                       PrepareConfig(near_duplicates="keep_together", validation_fraction=0.2,
                                     test_fraction=0.2, seed=3))  # fmt: skip
    assert manifest["removed"] == {}
    where = {}
    for split in ("train", "validation", "test"):
        for row in read_jsonl(tmp_path / "out" / f"{split}.jsonl"):
            where.setdefault(row["messages"][1]["content"], set()).add(split)
    assert len(where) == 10 and all(len(s) == 1 for s in where.values())
    assert {s for sides in where.values() for s in sides} == {"train", "validation", "test"}


def test_prepare_end_to_end(tmp_path, write_rows) -> None:
    rows = [distinct(i) for i in range(40)]
    rows += [
        rows[0],
        chat(rows[1]["messages"][0]["content"] + "!", rows[1]["messages"][1]["content"]),
    ]
    rows += [chat("Email me at jo@example.com please", "Sure, noted."), chat("q", ""), "{broken"]
    prefs = write_rows(
        tmp_path / "prefs.jsonl", [{"prompt": "Prefer?", "chosen": "Yes.", "rejected": "No."}]
    )
    evalset = write_rows(tmp_path / "eval.jsonl", [distinct(5)])
    raw = write_rows(tmp_path / "raw.jsonl", rows)
    manifest = prepare([raw, prefs], tmp_path / "out", PrepareConfig(decontam_n=4, dedup_threshold=0.7),
                       eval_sets=[evalset])  # fmt: skip
    out = tmp_path / "out"
    assert manifest["removed"] == {"exact duplicate": 1, "near duplicate": 1, "empty answer": 1,
                                   "overlaps an eval set": 1}  # fmt: skip
    assert manifest["rejected_lines"] == 1 and manifest["pii_found"] == {"email": 1}
    counts = {k: v["count"] for k, v in manifest["splits"].items()}
    assert counts == {"train": 32, "validation": 4, "test": 4, "preference": 1}
    texts = {
        s: {json.dumps(r) for r in read_jsonl(out / f"{s}.jsonl")}
        for s in ("train", "validation", "test")
    }
    assert not (texts["train"] & texts["test"]) and not (texts["train"] & texts["validation"])
    all_text = "".join((out / f"{s}.jsonl").read_text() for s in ("train", "validation", "test"))
    assert "[EMAIL]" in all_text and "jo@example.com" not in all_text
    for name, info in manifest["splits"].items():
        assert info["sha256"] == sha256_file(out / f"{name}.jsonl")
    assert [s["sha256"] for s in manifest["sources"]] == [sha256_file(raw), sha256_file(prefs)]
    assert manifest["eval_sets"][0]["sha256"] == sha256_file(evalset)
    assert json.loads((out / "manifest.json").read_text()) == manifest
    report = (out / "report.md").read_text()
    assert "near duplicate" in report and "raw.jsonl:45: invalid JSON" in report
    assert json.loads((out / "report.json").read_text())["removed"]["empty answer"] == 1
    assert len(manifest["dataset_digest"]) == 64
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "eval.jsonl",
        "out",
        "prefs.jsonl",
        "raw.jsonl",
    ]


def test_pii_drop_mode_and_keep_mode(tmp_path, write_rows) -> None:
    rows = [distinct(i) for i in range(6)] + [
        chat("My card is 4111 1111 1111 1111", "Thanks, noted it.")
    ]
    raw = write_rows(tmp_path / "raw.jsonl", rows)
    dropped = prepare([raw], tmp_path / "a", PrepareConfig(pii="drop"))
    assert dropped["removed"] == {"contains personal data": 1} and dropped["pii_found"] == {
        "card": 1
    }
    kept = prepare([raw], tmp_path / "b", PrepareConfig(pii="keep"))
    assert kept["pii_found"] == {} and sum(v["count"] for v in kept["splits"].values()) == 7


def test_mixing_general_examples_into_train_only(tmp_path, write_rows) -> None:
    raw = write_rows(tmp_path / "raw.jsonl", [distinct(i) for i in range(20)])
    general = write_rows(tmp_path / "general.jsonl",
                         [{"instruction": f"General task g{i} kappa{i}", "output": f"Done g{i}."} for i in range(50)])  # fmt: skip
    manifest = prepare([raw], tmp_path / "out", PrepareConfig(mix_ratio=0.5), mix=general)
    assert manifest["splits"]["train"]["count"] == 16 + 8 and manifest["mix"]["examples"] == 8
    held_out = (tmp_path / "out" / "validation.jsonl").read_text() + (
        tmp_path / "out" / "test.jsonl"
    ).read_text()
    assert "General task" not in held_out


def test_failure_leaves_the_previous_output_untouched(tmp_path, write_rows) -> None:
    good = write_rows(tmp_path / "good.jsonl", [distinct(i) for i in range(6)])
    first = prepare([good], tmp_path / "out")
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    bad = write_rows(tmp_path / "bad.jsonl", [chat("q", ""), "{bad"])
    with pytest.raises(TrainingError, match="no examples left") as err:
        prepare([bad], tmp_path / "out")
    assert err.value.code == "empty_dataset"
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "good.jsonl", "out"]
    assert first["splits"]["train"]["count"] == 5


def test_nothing_left_is_an_error_and_writes_nothing(tmp_path, write_rows) -> None:
    with pytest.raises(TrainingError, match="no examples left"):
        prepare([write_rows(tmp_path / "raw.jsonl", [chat("q", ""), "{bad"])], tmp_path / "out")
    assert [p.name for p in tmp_path.iterdir()] == ["raw.jsonl"]


@pytest.mark.parametrize(
    ("bad", "message"),
    [({"dedup_threshold": 0}, "dedup_threshold"), ({"pii": "mask"}, "pii must be"),
     ({"validation_fraction": 0.6, "test_fraction": 0.5}, "below 1"), ({"decontam_n": 2}, "decontam_n"),
     ({"mix_ratio": 2}, "mix_ratio"), ({"near_duplicates": "merge"}, "near_duplicates")],
)  # fmt: skip
def test_prepare_config_is_checked(bad, message) -> None:
    with pytest.raises(TrainingError, match=message):
        PrepareConfig(**bad)


def test_out_dir_holding_other_files_is_refused_and_left_alone(tmp_path, write_rows) -> None:
    raw = write_rows(tmp_path / "raw.jsonl", [distinct(i) for i in range(6)])
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(TrainingError, match="not a prepared dataset.*choose another --out") as err:
        prepare([raw], mine)
    assert err.value.code == "invalid_output_dir"
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    (tmp_path / "afile").write_text("x")
    with pytest.raises(TrainingError, match="is a file"):
        prepare([raw], tmp_path / "afile")
    # A raw file inside the directory it would replace: refused even for a prepared dataset.
    prepare([raw], tmp_path / "ds")
    inside = write_rows(tmp_path / "ds" / "more.jsonl", [distinct(i) for i in range(6)])
    with pytest.raises(TrainingError, match="lies inside --out"):
        prepare([inside], tmp_path / "ds")
    assert inside.is_file()


def test_empty_or_prepared_out_dir_is_replaced(tmp_path, write_rows) -> None:
    raw = write_rows(tmp_path / "raw.jsonl", [distinct(i) for i in range(6)])
    (tmp_path / "empty").mkdir()
    assert prepare([raw], tmp_path / "empty")["splits"]["train"]["count"] == 5
    fewer = write_rows(tmp_path / "fewer.jsonl", [distinct(i) for i in range(3)])
    assert prepare([fewer], tmp_path / "empty")["splits"]["train"]["count"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "fewer.jsonl", "raw.jsonl"]


def test_out_dot_is_a_clear_error(tmp_path, write_rows, monkeypatch) -> None:
    raw = write_rows(tmp_path / "raw.jsonl", [distinct(i) for i in range(6)])
    prepare([raw], tmp_path / "ds")
    monkeypatch.chdir(tmp_path / "ds")  # even a prepared dataset: it is where the user stands
    for out in (".", "..", "./"):
        with pytest.raises(TrainingError, match="current directory or one above"):
            prepare([raw], Path(out))
    assert (tmp_path / "ds" / "manifest.json").is_file()


def test_mixed_in_examples_are_curated_too(tmp_path, write_rows) -> None:
    raw = write_rows(tmp_path / "raw.jsonl", [distinct(i) for i in range(20)])
    good = [chat(f"General question g{i} kappa{i}?", f"General answer g{i}.") for i in range(3)]
    general = write_rows(tmp_path / "general.jsonl", [
        *good, chat("Mail ann@example.org about lunch", "Done, sent it."),
        {"messages": [{"role": "user", "content": "A prompt with no answer at all"}]},
        chat("Say nothing", ""), chat("Count to three", "one, two..."), good[0],
    ])  # fmt: skip
    manifest = prepare([raw], tmp_path / "out", PrepareConfig(mix_ratio=1.0), mix=general)
    assert manifest["mix"]["examples"] == 4 and manifest["splits"]["train"]["count"] == 16 + 4
    assert {k: v for k, v in manifest["removed"].items() if k.startswith("mix: ")} == {
        "mix: wrong role order": 1, "mix: empty answer": 1, "mix: truncated answer": 1,
        "mix: exact duplicate": 1,
    }  # fmt: skip
    train = read_jsonl(tmp_path / "out" / "train.jsonl")
    assert all(to_prompt_completion(row)["completion"] for row in train)
    text = (tmp_path / "out" / "train.jsonl").read_text()
    assert "[EMAIL]" in text and "ann@example.org" not in text
    assert manifest["pii_found"] == {"email": 1}


def test_mix_without_a_ratio_uses_the_default(tmp_path, write_rows) -> None:
    raw = write_rows(tmp_path / "raw.jsonl", [distinct(i) for i in range(20)])
    general = write_rows(tmp_path / "general.jsonl",
                         [chat(f"General question g{i} kappa{i}?", f"Fine g{i}.") for i in range(10)])  # fmt: skip
    manifest = prepare([raw], tmp_path / "out", mix=general)
    assert PrepareConfig().mix_ratio == 0.2 and manifest["mix"]["examples"] == int(16 * 0.2)
    prefs = write_rows(tmp_path / "prefs.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}])
    with pytest.raises(TrainingError, match="has no instruction examples"):
        prepare([raw], tmp_path / "out", mix=prefs)


def test_exemplars_are_task_prompts_never_mixed_in_ones(tmp_path, write_rows) -> None:
    task = [distinct(i) for i in range(20)]
    raw = write_rows(tmp_path / "raw.jsonl", task)
    general = write_rows(tmp_path / "general.jsonl",
                         [chat(f"General question g{i} kappa{i}?", f"Fine g{i}.") for i in range(40)])  # fmt: skip
    manifest = prepare([raw], tmp_path / "out", PrepareConfig(mix_ratio=1.0), mix=general)
    train = read_jsonl(tmp_path / "out" / "train.jsonl")
    assert any("General" in r["messages"][0]["content"] for r in train[:8])  # seed 0 mixes them
    task_prompts = {ex["messages"][0]["content"] for ex in task}
    assert len(manifest["exemplars"]) == 8 and set(manifest["exemplars"]) <= task_prompts
    assert exemplar_prompts(manifest, train) == manifest["exemplars"]


def test_exemplars_without_a_manifest_record() -> None:
    rows = [chat(f"q{i}", "a") for i in range(10)] + [
        {"prompt": "p", "chosen": "c", "rejected": "r"}
    ]
    assert exemplar_prompts({}, rows) == [f"q{i}" for i in range(8)]
    assert exemplar_prompts({}, rows[-1:]) == ["p"]
    # An older dataset that mixed general rows into train without recording exemplars.
    assert exemplar_prompts({"mix": {"examples": 3}}, rows) == []


def test_a_cluster_that_takes_every_example_leaves_no_train_split(tmp_path, write_rows) -> None:
    examples = [distinct(i) for i in range(10)]
    with pytest.raises(TrainingError, match="no examples left for train") as err:
        split_by_cluster(examples, [0] * 10, PrepareConfig())
    assert err.value.code == "empty_dataset" and "cluster has 10" in err.value.message
    assert split_by_cluster([], [], PrepareConfig())["train"] == []  # preference-only data
    para = [chat(f"Please summarise the quarterly budget report for the apollo project now{'!' * i}",
                 "The apollo project is on budget.") for i in range(10)]  # fmt: skip
    with pytest.raises(TrainingError, match="no examples left for train"):
        prepare([write_rows(tmp_path / "raw.jsonl", para)], tmp_path / "out",
                PrepareConfig(near_duplicates="keep_together", dedup_threshold=0.5))  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_short_eval_prompts_are_decontaminated_by_exact_match(tmp_path, write_rows) -> None:
    rows = [distinct(i) for i in range(10)] + [chat("capital of  FRANCE", "Paris is the capital.")]
    evalset = write_rows(tmp_path / "eval.jsonl", [chat("Capital of France?", "Paris.")])
    manifest = prepare([write_rows(tmp_path / "raw.jsonl", rows)], tmp_path / "out",
                       eval_sets=[evalset])  # fmt: skip
    assert manifest["removed"] == {"copies an eval prompt": 1}
    out = "".join(
        (tmp_path / "out" / f"{s}.jsonl").read_text() for s in ("train", "validation", "test")
    )
    assert "FRANCE" not in out


def test_preference_pairs_get_a_validation_share(tmp_path, write_rows) -> None:
    pairs = [{"prompt": f"Which is {i} in JSON, please?", "chosen": f'{{"n": {i}}}',
              "rejected": f"It is {i}."} for i in range(20)]  # fmt: skip
    raw = write_rows(tmp_path / "pairs.jsonl", pairs)
    manifest = prepare([raw], tmp_path / "out", PrepareConfig(dedup_threshold=1.0))
    counts = {k: v["count"] for k, v in manifest["splits"].items()}
    assert counts["preference"] == 18 and counts["preference_validation"] == 2
    train = {r["prompt"] for r in read_jsonl(tmp_path / "out" / "preference.jsonl")}
    held = {r["prompt"] for r in read_jsonl(tmp_path / "out" / "preference_validation.jsonl")}
    assert not train & held and len(train | held) == 20
