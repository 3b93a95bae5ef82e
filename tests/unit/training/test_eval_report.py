"""The evaluation flow with fake generations and fake scoring: verdicts, gates, reports, and bad
inputs refused before any engine or model would start."""

import json

import pytest

from training.curation import PrepareConfig, prepare
from training.errors import TrainingError
from training.evaluate import evaluate, evaluate_adapter
from training.evaluate.gates import Gates
from training.evaluate.general import shipped_set
from training.evaluate.generation import GenResult
from training.evaluate.items import score_answer
from training.synthetic import json_task


class FakeBackend:
    """Answers like a trained JSON adapter (exact objects) and a chatty base (prose)."""

    name = "fake"

    def __init__(self, expected, general_fail=()):
        self.expected, self.general_fail, self.calls = expected, set(general_fail), []
        self.general = {i.question: i for i in shipped_set()[0]}

    def generate(self, requests):
        self.calls.append(requests)
        answers = []
        for r in requests:
            q = r.messages[-1]["content"]
            if q in self.expected:
                answers.append(self.expected[q] if r.adapter else "Sure! Here are the details.")
            else:  # general items: right answers, except the categories set to fail
                item = self.general[q]
                fail = r.adapter and item.category in self.general_fail
                answers.append("no idea" if fail else _right(item))
        return GenResult(answers, "fake", 0.5, 2.0, 10 * len(requests), "cpu")


def _right(item):
    """An answer that passes the item's checks (the fake base and adapter know everything)."""
    ref = item.reference() or ""
    rule = item.rule[1] if item.rule else {}
    candidates = [
        ref,
        "ALL GOOD.",
        "all good",
        "Yes, it is.",
        str(rule.get("value", "")),
        "\n".join(["apple", "pear", "plum"][: rule.get("n", 1)]),
        item.regex.pattern.strip("^$").replace("\\W*", "") if item.regex else "",
    ]
    return next(c for c in candidates if score_answer(item, c)["correct"])


@pytest.fixture
def run(tmp_path, monkeypatch):
    """A prepared JSON dataset, an adapter dir for the base `tiny`, and fakes for the engine
    and the teacher-forced scorer (adapter loss 0.5, base 2.0)."""
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "config.json").write_text("{}")
    (tmp_path / "base" / "tokenizer.json").write_text("{}")
    adapter = tmp_path / "run" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text(
        json.dumps({"r": 8, "base_model_name_or_path": "tiny"})
    )
    (tmp_path / "raw.jsonl").write_text("\n".join(json.dumps(r) for r in json_task(60, seed=2)))
    prepare([tmp_path / "raw.jsonl"], tmp_path / "ds", PrepareConfig(dedup_threshold=1.0))
    rows = [json.loads(x) for x in (tmp_path / "ds" / "test.jsonl").read_text().splitlines()]
    expected = {r["messages"][0]["content"]: r["messages"][1]["content"] for r in rows}
    state = {"backend": FakeBackend(expected), "scorer_loaded": 0}
    monkeypatch.setattr("training.evaluate.run.make_backend", lambda *a, **k: state["backend"])
    monkeypatch.setattr("training.evaluate.run._answer_budget", lambda *a: 64)

    def fake_scorer(*args):
        state["scorer_loaded"] += 1
        return object()

    monkeypatch.setattr("training.evaluate.run.load_scorer", fake_scorer)
    monkeypatch.setattr(
        "training.evaluate.run.answer_losses",
        lambda scorer, pairs, adapter, max_length: [0.5 if adapter else 2.0] * len(pairs),
    )
    state.update(root=tmp_path, adapter=adapter, data=tmp_path / "ds", base=tmp_path / "base")
    return state


def _eval(run, **kwargs):
    kwargs.setdefault("general_limit", 20)
    return evaluate(run["adapter"], run["data"], run["base"], base_model_name="tiny", **kwargs)


def test_a_json_adapter_gets_go_with_every_metric_and_report(run) -> None:
    report = _eval(run)
    assert report["go"] and report["verdict"] == "GO" and report["kind"] == "sft"
    m = report["metrics"]
    assert set(m) == {
        "exact_match",
        "token_f1",
        "rouge_l",
        "json_valid",
        "key_match",
        "answer_loss",
    }
    assert (m["key_match"]["base"], m["key_match"]["adapter"], m["key_match"]["difference"]) == (
        0,
        1,
        1,
    )
    assert m["key_match"]["gate"] == ["key_match gain >= 0.1"] and m["key_match"]["pass"] is True
    assert m["answer_loss"]["difference"] == -1.5 and m["answer_loss"]["higher_is_better"] is False
    assert m["rouge_l"]["gate"] is None and m["rouge_l"]["pass"] is None
    assert report["task"]["task_metric"] == "key_match"
    assert report["gates_source"] == "dataset" and report["gates"]["values"] == Gates().to_dict()
    assert report["general"]["overall"] == {
        "items": 20,
        "base": 1.0,
        "adapter": 1.0,
        "drop": 0.0,
        "lost": 0,
        "gained": 0,
        "p_value": 1.0,
    }
    assert set(report["general"]["categories"]) == {"arithmetic", "facts", "instructions", "format"}
    assert report["backend"] == {
        "name": "fake",
        "device": "cpu",
        "answers": 2 * (6 + 20),
        "startup_s": 0.5,
        "generate_s": 2.0,
        "answers_per_s": 26.0,
        "output_tokens": 520,
    }
    digests = report["data"]["digests"]
    assert any(p.endswith("test.jsonl") for p in digests) and any(
        p.endswith("general_set.json") for p in digests
    )
    assert len(run["backend"].calls) == 1  # task and general set, base and adapter: one batch
    out = run["root"] / "run"
    assert json.loads((out / "eval.json").read_text())["go"] is True
    assert (out / "eval.png").read_bytes()[:4] == b"\x89PNG"
    md = (out / "eval.md").read_text()
    assert (
        "**GO**" in md
        and "| key_match | 0.0000 | 1.0000 | +1.0000 |" in md
        and "Worst examples" in md
    )
    examples = [json.loads(x) for x in (out / "eval_examples.jsonl").read_text().splitlines()]
    assert len(examples) == 6 and examples[0]["base_answer"] == "Sure! Here are the details."
    assert (
        examples[0]["adapter_scores"]["json_valid"] == 1.0
        and examples[0]["base_scores"]["answer_loss"] == 2.0
    )
    assert len((out / "eval_general.jsonl").read_text().splitlines()) == 20
    # The flat views older readers use (CLI table, registry promotion).
    assert report["adapter"]["key_match"] == 1.0 and all(report["checks"].values())


def test_forgetting_in_one_category_is_no_go(run) -> None:
    run["backend"].general_fail = {"facts"}
    report = _eval(run, general_limit=80)  # 20 a category: enough to gate each
    assert not report["go"]
    failed = [c["name"] for c in report["check_list"] if not c["passed"]]
    assert failed == ["general accuracy drop <= 0.05", "general/facts drop <= 0.15"]
    facts = report["general"]["categories"]["facts"]
    assert (facts["items"], facts["drop"], facts["gated"]) == (20, 1.0, True)
    assert "**NO-GO**" in (run["root"] / "run" / "eval.md").read_text()
    # With 5 items a category, one category's drop is reported but only the overall is gated.
    report = _eval(run, general_limit=20)
    assert [c["name"] for c in report["check_list"] if not c["passed"]] == [
        "general accuracy drop <= 0.05"
    ]
    assert report["general"]["categories"]["facts"]["gated"] is False
    assert "(too few items to gate)" in (run["root"] / "run" / "eval.md").read_text()


def test_recorded_gates_apply_and_an_override_is_reported(run) -> None:
    (run["root"] / "run" / "report.json").write_text(
        json.dumps({"method": "sft", "gates": {**Gates().to_dict(), "min_task_score": 1.01 - 0.02}})
    )
    report = _eval(run)
    assert report["gates_source"] == "run" and report["go"]
    report = _eval(run, gates={"min_task_gain": 1.5 - 0.5, "min_task_score": None})
    assert report["gates_source"] == "override" and report["go"]  # gain exactly 1.0 passes
    assert report["gates"]["overridden"] == {
        "min_task_gain": {"recorded": 0.1, "override": 1.0},
        "min_task_score": {"recorded": 0.99, "override": None},
    }
    assert "Overridden at evaluation time" in (run["root"] / "run" / "eval.md").read_text()


def test_label_and_schema_tasks_pick_their_metric(run) -> None:
    schema = {
        "type": "object",
        "required": ["name", "city", "age"],
        "properties": {"age": {"type": "integer"}},
    }
    report = evaluate_adapter(
        run["adapter"],
        run["data"],
        run["base"],
        base_model_name="tiny",
        schema=schema,
        general_limit=4,
    )
    assert report["task"]["task_metric"] == "schema_match"
    assert report["metrics"]["schema_match"]["adapter"] == 1.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("other_base", "trained for base model '/models/SmolLM2-1.7B/', not 'tiny'"),
        ("empty", "no examples in test.jsonl or validation.jsonl"),
        ("unlabelled", "test.jsonl:1: the example does not end with a non-empty assistant answer"),
        ("schema", "invalid JSON Schema"),
        ("general", "bad lines: line 1: invalid JSON"),
        ("gate", "gate task_metric 'label_accuracy' is not measured"),
    ],
)
def test_bad_inputs_fail_before_any_generation_or_model_load(run, change, message) -> None:
    data, kwargs = run["data"], {}
    if change == "other_base":
        (run["adapter"] / "adapter_config.json").write_text(
            json.dumps({"r": 8, "base_model_name_or_path": "/models/SmolLM2-1.7B/"})
        )
    elif change == "empty":
        (data / "test.jsonl").write_text("")
        (data / "validation.jsonl").write_text("")
    elif change == "unlabelled":
        (data / "test.jsonl").write_text(
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": "q"},
                        {"role": "assistant", "content": " "},
                    ]
                }
            )
            + "\n"
        )
    elif change == "schema":
        kwargs["schema"] = {"type": "object", "properties": {"age": {"type": 5}}}
    elif change == "general":
        (run["root"] / "g.jsonl").write_text("{nope\n")
        kwargs["general"] = run["root"] / "g.jsonl"
    elif change == "gate":
        kwargs["gates"] = {"task_metric": "label_accuracy"}
    with pytest.raises(TrainingError, match=message):
        _eval(run, **kwargs)
    assert run["backend"].calls == [] and run["scorer_loaded"] == 0


def test_dpo_runs_are_judged_by_preference_accuracy(run, monkeypatch, tmp_path) -> None:
    pairs = [
        {
            "prompt": f"Give {i} as JSON.",
            "chosen": json.dumps({"n": i}),
            "rejected": f"The number is {i}.",
        }
        for i in range(20)
    ]
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(p) for p in pairs))
    prepare([tmp_path / "pairs.jsonl"], tmp_path / "pds")
    (run["root"] / "run" / "report.json").write_text(json.dumps({"method": "dpo", "gates": None}))

    def logprobs(scorer, texts, adapter, max_length):
        # Base prefers the prose (rejected) half the time; the adapter always prefers JSON.
        out = []
        for k, (_, text) in enumerate(texts):
            chosen = text.startswith("{")
            good = adapter or (k // 2) % 2 == 0
            out.append((-1.0 if chosen == good else -3.0, 5))
        return out

    monkeypatch.setattr("training.evaluate.run.completion_logprobs", logprobs)
    report = evaluate(
        run["adapter"], tmp_path / "pds", run["base"], base_model_name="tiny", general_limit=4
    )
    assert report["kind"] == "dpo" and report["go"]
    assert report["data"]["split"] == "preference_validation" and report["data"]["examples"] == 2
    pa = report["metrics"]["preference_accuracy"]
    assert (pa["base"], pa["adapter"], pa["gate"]) == (
        0.5,
        1.0,
        ["preference_accuracy gain >= 0.05"],
    )
    assert report["metrics"]["preference_margin"]["adapter"] == 2.0


def test_a_drop_within_noise_passes_with_a_note() -> None:
    """One answer lost out of 8 is a 0.125 drop, over the 0.05 gate, but no evidence of
    forgetting (sign test p=0.5); five of 20 lost and none gained is (p=0.03)."""
    from training.evaluate.general import sign_test
    from training.evaluate.verdict import forgetting_checks

    noisy = {"items": 8, "drop": 0.125, "lost": 1, "gained": 0, "p_value": sign_test(1, 0)}
    [check] = forgetting_checks(Gates(max_category_drop=None), {"overall": noisy})
    assert check.passed and check.value == 0.125 and "within noise" in (check.note or "")
    real = {"items": 20, "drop": 0.25, "lost": 5, "gained": 0, "p_value": sign_test(5, 0)}
    [check] = forgetting_checks(Gates(max_category_drop=None), {"overall": real})
    assert not check.passed and check.note is None
    assert sign_test(0, 0) == 1.0 and round(sign_test(5, 0), 4) == 0.0312
