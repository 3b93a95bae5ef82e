"""Calibration: fitting on a synthetic set, golden-set parsing, stored versions and rollback."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest

from serve import database
from serve.errors import ServiceError
from serve.routing import Router, RouteRequest
from serve.routing.calibration import Calibration, Example, read_best_paths, read_examples
from serve.routing.fitting import MIN_FOR_MODEL, Labelled, Rules, decide_one, evaluate, fit
from serve.routing.models import LogisticModel, ThresholdModel, load_model
from serve.routing.signals import Signals, TaskMatch
from serve.routing.versions import RouterVersions
from serve.tenants import TenantService


def make_set(av, n_per_path: int, seed: int = 0) -> list[Labelled]:
    """Signals where the two thresholds cannot tell adapter from combined: adapter inputs
    mention catalogue products, so retrieval is strong for both; only combined asks a fact."""
    rng = random.Random(seed)
    out = []

    def signals(sim, top, facts, fmt):
        task = TaskMatch(av, sim, sim, sim) if sim > 0 else TaskMatch()
        return Signals(task=task, retrieval_top=top, retrieval_dense=top, fact_cues=facts,
                       format_cues=fmt, words=rng.randint(6, 30))  # fmt: skip

    for _ in range(n_per_path):
        j = lambda: rng.uniform(-0.08, 0.08)  # noqa: E731
        out.append(Labelled(signals(0.2 + j(), 0.2 + j(), 0, 0), "prompt"))
        out.append(Labelled(signals(0.25 + j(), 0.7 + j(), rng.randint(1, 2), 0), "rag"))
        out.append(Labelled(signals(0.75 + j(), 0.65 + j(), 0, 2), "adapter", av.name))
        out.append(
            Labelled(signals(0.7 + j(), 0.7 + j(), rng.randint(2, 3), 2), "combined", av.name)
        )
    return out


def test_fit_learns_what_thresholds_cannot(fakes) -> None:
    av = fakes.av("orders", ["Extract the order"])
    train, test = make_set(av, 15, seed=1), make_set(av, 15, seed=2)
    rules = Rules()
    fitted = fit(train, rules, ThresholdModel())
    assert fitted.model.kind == "logistic" and fitted.folds == 5
    assert fitted.candidates["logistic"] > fitted.candidates["thresholds"]
    assert fitted.candidates["thresholds"] < 0.8  # adapter vs combined is a coin toss for them
    held_out = evaluate([decide_one(fitted.model, ex.signals, rules) for ex in test], test)
    assert held_out.accuracy >= 0.95 and held_out.macro_f1 >= 0.95
    baseline = evaluate([decide_one(ThresholdModel(), ex.signals, rules) for ex in test], test)
    assert baseline.accuracy < held_out.accuracy
    # Stored as JSON and rebuilt, the model scores the same.
    rebuilt = load_model("logistic", json.loads(json.dumps(fitted.model.to_params())))
    s = test[0].signals
    assert rebuilt.path_scores(s) == pytest.approx(fitted.model.path_scores(s))


def test_scarce_data_tunes_thresholds(fakes) -> None:
    av = fakes.av("orders", ["Extract the order"])
    few = make_set(av, 3)[: MIN_FOR_MODEL - 1]
    fitted = fit(few, Rules(), ThresholdModel())
    assert fitted.model.kind == "thresholds" and set(fitted.candidates) == {"thresholds"}
    assert isinstance(fitted.model, ThresholdModel)


def test_threshold_model_on_fixed_signals(fakes) -> None:
    av = fakes.av("orders", ["Extract the order"])
    model = ThresholdModel(0.45, 0.5)
    cases = [
        ((0.2, 0.2), "prompt"),
        ((0.2, 0.8), "rag"),
        ((0.8, 0.2), "adapter"),
        ((0.8, 0.8), "combined"),
    ]
    for (sim, top), expected in cases:
        s = Signals(task=TaskMatch(av, sim), retrieval_top=top)
        scores = model.path_scores(s)
        assert max(scores, key=scores.get) == expected
        assert sum(scores.values()) == pytest.approx(1.0)
    # No adapter with exemplars: adapter paths score nothing.
    scores = model.path_scores(Signals(retrieval_top=0.9))
    assert scores["adapter"] < 1e-6 and scores["combined"] < 1e-6


def test_logistic_model_binary_form() -> None:
    model = LogisticModel(("retrieval_top",), (0.5,), (0.1,), ("prompt", "rag"), ((10.0,),), (0.0,))
    assert model.path_scores(Signals(retrieval_top=0.9))["rag"] > 0.99
    assert model.path_scores(Signals(retrieval_top=0.1))["prompt"] > 0.99
    assert model.path_scores(Signals())["combined"] == 0.0


def test_golden_sets_and_best_paths(tmp_path) -> None:
    golden = tmp_path / "golden.jsonl"
    golden.write_text(
        '{"prompt": "Extract the order", "route": "adapter", "adapter": "orders"}\n\n'
        '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},'
        ' {"role": "user", "content": "What does the kettle cost?"}], "route": "rag"}\n'
    )
    examples = read_examples(golden)
    assert [(e.prompt, e.route, e.adapter, e.turns) for e in examples] == [
        ("Extract the order", "adapter", "orders", 1),
        ("What does the kettle cost?", "rag", None, 2),
    ]
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "best_paths.jsonl").write_text(
        json.dumps({"prompt": "Q?", "route": "combined", "scores": {"combined": 1.0}, "id": "q1"})
        + "\n"
    )
    [best] = read_best_paths(tmp_path / "eval")
    assert (best.route, best.source) == ("combined", "eval")
    golden.write_text('{"prompt": "x", "route": "auto"}\n')
    with pytest.raises(ServiceError, match="line 1.*'route' must be one of"):
        read_examples(golden)
    with pytest.raises(ServiceError, match="best_paths.jsonl"):
        read_best_paths(tmp_path)


@pytest.fixture
def db(tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    engine = database.make_engine(url)
    database.migrate(url, engine)
    tenants = TenantService(engine)
    tenants.create("acme")
    tenants.create("globex")
    return engine, tenants


def test_versions_roll_back_to_the_thresholds(db) -> None:
    engine, tenants = db
    store = RouterVersions(engine)
    assert store.current("acme") is None
    v1 = store.add(
        "acme", "thresholds", {"adapter_min_similarity": 0.4, "rag_min_score": 0.6}, {"examples": 3}
    )
    v2 = store.add("acme", "thresholds", {"adapter_min_similarity": 0.3, "rag_min_score": 0.7}, {})
    assert (v1.label, v2.label, store.current_number("acme")) == ("v1", "v2", 2)
    assert store.add("globex", "thresholds", v1.params, {}).label == "v1"  # numbered per tenant
    assert store.rollback("acme").label == "v1"
    assert store.rollback("acme") is None  # back to the policy's thresholds
    with pytest.raises(ServiceError) as exc:
        store.rollback("acme")
    assert (exc.value.code, exc.value.kind) == ("nothing_to_roll_back", "conflict")
    v3 = store.add("acme", "thresholds", v1.params, {})
    assert v3.label == "v3"  # numbers are never given out twice
    assert [v.version for v in store.list("acme")] == [1, 2, 3]
    assert [v.current for v in store.list("acme")] == [False, False, True]
    tenants.delete("globex")
    assert store.list("globex") == [] and store.current_number("globex") is None


def test_calibrate_stores_a_version_the_router_uses_and_rollback(db, fakes) -> None:
    engine, tenants = db
    acme = replace(tenants.require("acme"), id="acme")  # the fakes key adapters by "acme"
    reg = fakes.Registry([fakes.av("json-extract", ["Extract the person as JSON", "person json"])])
    router = Router(
        "base", reg, fakes.Retrieval(), versions=RouterVersions(engine), version_check_s=3600
    )
    calibration = Calibration(router, RouterVersions(engine))
    text = "Is the kettle price still the same?"
    assert router.decide(RouteRequest("auto", text), acme).route == "rag"
    # A golden set that wants kettle questions answered by the base model: few examples, so
    # the thresholds are tuned (the documents' threshold rises above this retrieval score).
    examples = [Example("What is the kettle price?", "prompt"),
                Example("Tell me about kettles", "prompt"),
                Example("Extract the person as JSON", "adapter", "json-extract"),
                Example("What is the capital of France?", "prompt")]  # fmt: skip
    result = calibration.calibrate(acme, examples)
    assert result.before_version == "thresholds" and result.before.accuracy == 0.5
    assert result.kind == "thresholds" and result.version.label == "v1"
    assert result.after.accuracy >= result.before.accuracy
    assert result.params["rag_min_score"] >= 0.9
    stored = result.version.report
    assert stored["before"]["accuracy"] == 0.5 and stored["labels"] == {"prompt": 3, "adapter": 1}
    d = router.decide(RouteRequest("auto", text), acme)
    assert d.router_version == "v1" and d.route == "prompt"
    # Another tenant keeps its thresholds.
    assert (
        router.decide(RouteRequest("auto", text), tenants.require("globex")).router_version
        == "thresholds"
    )
    assert calibration.rollback(acme) is None
    d = router.decide(RouteRequest("auto", text), acme)
    assert (d.router_version, d.route) == ("thresholds", "rag")
    dry = calibration.calibrate(acme, examples, store=False)
    assert dry.version is None and RouterVersions(engine).current_number("acme") is None


def test_a_version_made_by_another_process_is_picked_up(db, fakes) -> None:
    engine, tenants = db
    acme = replace(tenants.require("acme"), id="acme")  # the fakes key adapters by "acme"
    router = Router("base", fakes.Registry([]), fakes.Retrieval(), versions=RouterVersions(engine),
                    version_check_s=0)  # fmt: skip
    assert router.model_for(acme)[0] == "thresholds"
    RouterVersions(engine).add(
        "acme", "thresholds", {"adapter_min_similarity": 0.1, "rag_min_score": 0.1}, {}
    )
    label, model = router.model_for(acme)
    assert label == "v1" and model == ThresholdModel(0.1, 0.1)


def test_calibration_leaves_a_prompts_own_exemplar_out(fakes) -> None:
    reg = fakes.Registry([fakes.av("json-extract", ["Extract the person as JSON", "weather json"])])
    router = Router("base", reg, fakes.Retrieval())
    calibration = Calibration(router, versions=None)  # type: ignore[arg-type]
    [own] = calibration.measure(fakes.ACME, [Example("Extract the person as JSON", "adapter")])
    live = router.auto_signals(fakes.ACME, "Extract the person as JSON")
    assert live.task.similarity == pytest.approx(1.0)
    assert own.signals.task.similarity < 0.9
    [made] = calibration.measure(
        fakes.ACME,
        [
            Example(
                "Extract the person as JSON, kettle",
                "combined",
                leave_out=("Extract the person as JSON",),
            )
        ],
    )
    assert made.signals.task.similarity < 0.9


def test_a_damaged_version_falls_back_to_the_thresholds(db, fakes) -> None:
    engine, tenants = db
    RouterVersions(engine).add("acme", "logistic", {"features": ["x"]}, {})
    router = Router("base", fakes.Registry([]), fakes.Retrieval(), versions=RouterVersions(engine))
    acme = replace(tenants.require("acme"), id="acme")
    d = router.decide(RouteRequest("auto", "What is the kettle price?"), acme)
    assert (d.router_version, d.route) == ("thresholds", "rag")
