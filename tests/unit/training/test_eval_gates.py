"""Gates: loaded and validated from a file, recorded at data preparation, resolved at eval."""

import json

import pytest

from training.curation import PrepareConfig, prepare
from training.errors import TrainingError
from training.evaluate.gates import Gates, gates_help, load_gates, resolve_gates
from training.evaluate.metrics import detect_task
from training.evaluate.verdict import forgetting_checks, task_checks, task_metric


def test_gates_load_from_yaml_and_json(tmp_path) -> None:
    (tmp_path / "g.yaml").write_text(
        "task_metric: exact_match\nmin_task_gain: 2e-1\nmax_category_drop: null\n"
    )
    gates = load_gates(tmp_path / "g.yaml")
    assert gates.task_metric == "exact_match" and gates.min_task_gain == 0.2
    assert gates.max_category_drop is None and gates.max_general_drop == 0.05  # default kept
    (tmp_path / "g.json").write_text(json.dumps({"min_loss_improvement": 0.1}))
    assert load_gates(tmp_path / "g.json").min_loss_improvement == 0.1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("min_task_gian: 0.1", r"unknown gates \['min_task_gian'\]; known: \['task_metric'"),
        ("max_general_drop: 1.5", "max_general_drop must be between 0 and 1"),
        ("min_task_gain: lots", "min_task_gain must be a number or null"),
        ("min_task_gain: true", "min_task_gain must be a number or null"),
        ("task_metric: bleu", "task_metric must be one of"),
        ("min_category_items: 2.5", "min_category_items must be a whole number"),
        ("- 1\n- 2", "must be a mapping"),
        ("a: [1", "not valid YAML/JSON"),
    ],
)
def test_bad_gates_files_say_what_is_wrong(tmp_path, text, message) -> None:
    (tmp_path / "g.yaml").write_text(text)
    with pytest.raises(TrainingError, match=message) as err:
        load_gates(tmp_path / "g.yaml")
    assert err.value.code == "invalid_gates"


def test_missing_gates_file_is_not_found(tmp_path) -> None:
    with pytest.raises(TrainingError) as err:
        load_gates(tmp_path / "nope.yaml")
    assert err.value.kind == "not_found"


def test_every_gate_has_help() -> None:
    helps = gates_help()
    assert set(helps) == set(Gates().to_dict()) and all(len(h) > 20 for h in helps.values())


def _dataset(tmp_path, make_chat, write_rows, gates=None):
    rows = [make_chat(f"Question {i} about topic{i}?", f"Answer {i}.") for i in range(20)]
    write_rows(tmp_path / "raw.jsonl", rows)
    prepare(
        [tmp_path / "raw.jsonl"], tmp_path / "ds", PrepareConfig(dedup_threshold=1.0), gates=gates
    )
    return tmp_path / "ds"


def test_prepare_records_gates_and_evaluation_resolves_them(
    tmp_path, make_chat, write_rows
) -> None:
    ds = _dataset(tmp_path, make_chat, write_rows)
    assert json.loads((ds / "manifest.json").read_text())["gates"] == Gates().to_dict()
    ds = _dataset(tmp_path, make_chat, write_rows, Gates(min_task_gain=0.3))
    assert json.loads((ds / "manifest.json").read_text())["gates"]["min_task_gain"] == 0.3
    adapter = tmp_path / "run" / "adapter"
    adapter.mkdir(parents=True)
    resolved = resolve_gates(adapter, ds)
    assert (resolved.source, resolved.gates.min_task_gain) == ("dataset", 0.3)
    # Training copied them into the run's report: the run wins over the dataset.
    (tmp_path / "run" / "report.json").write_text(json.dumps({"gates": {"min_task_gain": 0.4}}))
    resolved = resolve_gates(adapter, ds)
    assert (resolved.source, resolved.gates.min_task_gain) == ("run", 0.4)
    assert resolved.path.endswith("report.json")
    # A run from before gates were recorded (gates: null) falls through to the dataset.
    (tmp_path / "run" / "report.json").write_text(json.dumps({"gates": None}))
    assert resolve_gates(adapter, ds).source == "dataset"
    assert resolve_gates(adapter, tmp_path / "elsewhere").source == "defaults"


def test_an_override_shows_with_its_differences(tmp_path) -> None:
    adapter = tmp_path / "run" / "adapter"
    adapter.mkdir(parents=True)
    (tmp_path / "run" / "report.json").write_text(json.dumps({"gates": {"min_task_gain": 0.4}}))
    resolved = resolve_gates(adapter, None, {"min_task_gain": 0.0})
    view = resolved.describe()
    assert view["source"] == "override" and view["recorded_source"] == "run"
    assert view["overridden"] == {"min_task_gain": {"recorded": 0.4, "override": 0.0}}
    with pytest.raises(TrainingError, match="gate override: unknown gates"):
        resolve_gates(adapter, None, {"min_gain": 0.0})


def test_checks_apply_thresholds_inclusively_and_skip_null_gates() -> None:
    task = detect_task(['{"a": 1}', '{"a": 2}'])
    gates = Gates()
    assert task_metric(gates, task) == "key_match"
    base = {"key_match": 0.5, "answer_loss": 2.0, "json_valid": 0.5}
    adapter = {"key_match": 0.6, "answer_loss": 1.9, "json_valid": 0.6}
    checks = task_checks(gates, "key_match", base, adapter, task)
    # 0.6 - 0.5 is 0.0999... in floats: a gain equal to the gate passes. Loss fell exactly 5%.
    assert [(c.name, c.passed) for c in checks] == [
        ("key_match gain >= 0.1", True),
        ("answer loss lower by >= 5%", True),
    ]
    strict = Gates(min_task_score=0.9, min_json_valid=0.9, min_loss_improvement=None)
    assert [c.passed for c in task_checks(strict, "key_match", base, adapter, task)] == [
        True,
        False,
        False,
    ]
    general = {
        "overall": {"drop": 0.05},
        "categories": {
            "facts": {"items": 20, "drop": 0.2},
            "format": {"items": 20, "drop": -0.1},
            "tiny": {"items": 3, "drop": 1.0},  # too few items to gate
        },
    }
    assert [(c.metric, c.passed) for c in forgetting_checks(gates, general)] == [
        ("general", True),
        ("general/facts", False),
        ("general/format", True),
    ]
    with pytest.raises(TrainingError, match="is not measured on this task"):
        task_metric(Gates(task_metric="label_accuracy"), task)
