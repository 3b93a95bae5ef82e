"""Routing decisions with fake registry/retrieval/embedder (no servers)."""

from __future__ import annotations

import pytest

from serve.errors import ServiceError
from serve.routing import Router, RouteRequest
from serve.routing.caches import CachedEmbedder
from serve.tenants import Tenant, TenantPolicy

ACME = Tenant("acme", TenantPolicy())


def decide(router, tenant=ACME, model="auto", text="hi", **choices):
    return router.decide(RouteRequest(model=model, query=text, **choices), tenant)


def test_explicit_adapter_and_base(router) -> None:
    d = decide(router, model="json-extract", text="anything")
    assert (d.route, d.served_model, d.model) == ("adapter", "json-extract-v1", "json-extract")
    assert d.router_version == "explicit" and d.alternatives == []
    d = decide(router, model="json-extract", text="kettle price", route="rag")
    assert d.route == "combined"
    d = decide(router, model="base", text="capital of france", route="prompt")
    assert (d.route, d.model, d.adapter) == ("prompt", "base", None)


def test_auto_uses_exemplars_and_retrieval_strength(router) -> None:
    d = decide(router, text="Please extract this person as JSON")
    assert d.route == "adapter" and d.adapter.name == "json-extract"
    assert d.served_model == "json-extract-v1" and d.model == "json-extract"
    assert d.scores["adapter_similarity"] > 0.45 and "exemplars" in d.reason
    assert d.router_version == "thresholds"
    d = decide(router, text="What is the kettle price?")
    assert d.route == "rag" and d.scores["retrieval_top"] == 0.9 and d.model == "base"
    assert d.retrieval is not None  # reused for the prompt, not searched again
    d = decide(router, text="Extract the person as JSON with the kettle price")
    assert d.route == "combined" and d.adapter.name == "json-extract"
    d = decide(router, text="What is the capital of France?")
    assert d.route == "prompt" and d.served_model == "base" and d.adapter is None


def test_alternatives_list_every_other_allowed_path_with_its_score(router) -> None:
    d = decide(router, text="What is the kettle price?")
    alts = {a["route"]: a for a in d.alternatives}
    assert set(alts) == {"prompt", "adapter", "combined"}
    assert alts["adapter"]["adapter"] == "json-extract@1" and alts["prompt"]["adapter"] is None
    assert all(a["score"] <= d.scores["route_score"] for a in d.alternatives)
    scores = [a["score"] for a in d.alternatives]
    assert scores == sorted(scores, reverse=True)
    assert abs(sum(scores) + d.scores["route_score"] - 1) < 1e-3
    # A tenant without rag: rag is no alternative.
    no_rag = Tenant("acme", TenantPolicy(routes=["prompt", "adapter", "combined"]))
    assert "rag" not in {a["route"] for a in decide(router, no_rag, text="kettle").alternatives}


def test_reported_adapter_is_the_serving_adapter(fakes) -> None:
    """model=auto with loraplex.adapter X and route prompt used to be served by the base model
    while reporting X: naming an adapter now means the adapter serves, and says so."""
    router = Router(
        "base",
        fakes.Registry([fakes.av("json-extract", ["Extract the person as JSON"])]),
        fakes.Retrieval(),
    )
    d = decide(router, text="hello", adapter="json-extract", route="prompt")
    assert (d.route, d.served_model, d.adapter.ref) == (
        "adapter",
        "json-extract-v1",
        "json-extract@1",
    )
    assert d.model == "json-extract" and "adapter" in d.reason
    d = decide(router, text="kettle", adapter="json-extract", route="rag")
    assert (d.route, d.served_model) == ("combined", "json-extract-v1")
    # Never an adapter reported on a base-model path, nor the base model for an adapter.
    d = decide(router, model="base", text="Extract the person as JSON")
    assert d.adapter is None and d.served_model == "base"
    d = decide(router, model="base", text="hi", adapter="json-extract")
    assert (d.route, d.model, d.served_model) == ("adapter", "json-extract", "json-extract-v1")
    assert decide(router, model="json-extract@1", text="hi").model == "json-extract@1"


def test_auto_with_a_named_adapter_decides_between_adapter_and_combined(router) -> None:
    d = decide(router, text="What is the capital of France?", adapter="json-extract")
    assert d.route == "adapter" and d.adapter.name == "json-extract"
    assert {a["route"] for a in d.alternatives} == {"combined"}
    d = decide(router, text="kettle price please", adapter="json-extract")
    assert d.route == "combined"


# Policy fallback: what auto takes when the path it prefers is not allowed.
# text -> preferred path (with the default thresholds): adapter-like + kettle = combined, etc.
FALLBACK = [
    # (text, allowed routes, base model allowed, expected route)
    ("Extract the person as JSON with the kettle price", ["prompt", "rag", "adapter"], True, "rag"),
    ("Extract the person as JSON with the kettle price", ["prompt", "adapter"], True, "adapter"),
    ("Extract the person as JSON with the kettle price", ["prompt"], True, "prompt"),
    (
        "Extract the person as JSON with the kettle price",
        ["rag", "adapter", "combined"],
        False,
        "combined",
    ),
    ("Extract the person as JSON with the kettle price", ["prompt", "rag"], False, None),
    ("What is the kettle price?", ["prompt", "adapter", "combined"], True, "prompt"),
    ("What is the kettle price?", ["adapter", "combined"], True, "combined"),
    ("What is the kettle price?", ["prompt", "rag", "adapter", "combined"], False, "combined"),
    ("Please extract this person as JSON", ["prompt", "rag"], True, "prompt"),
    ("Please extract this person as JSON", ["rag", "combined"], True, "combined"),
    ("What is the capital of France?", ["adapter", "combined"], True, "adapter"),
    ("What is the capital of France?", ["rag"], True, "rag"),
]


@pytest.mark.parametrize(("text", "routes", "base", "expected"), FALLBACK)
def test_policy_fallback_table(router, text, routes, base, expected) -> None:
    tenant = Tenant("acme", TenantPolicy(routes=routes, allow_base_model=base))
    if expected is None:
        with pytest.raises(ServiceError) as exc:
            decide(router, tenant, text=text)
        assert exc.value.kind == "forbidden"
        return
    d = decide(router, tenant, text=text)
    assert d.route == expected
    assert d.route in routes
    if d.route in ("prompt", "rag"):
        assert base and d.adapter is None
    assert all(a["route"] in routes for a in d.alternatives)
    if "best allowed" in d.reason:
        preferred = d.reason.split(" would be best")[0].split("; ")[-1]
        assert preferred != d.route and preferred not in [a["route"] for a in d.alternatives]


def test_rag_without_combined_gets_the_best_allowed_path_not_a_403(router) -> None:
    """An adapter-like question that also matches the documents, for a tenant that may use
    rag but not combined: today's best allowed path, and the reason says what it stood in for."""
    tenant = Tenant("acme", TenantPolicy(routes=["prompt", "rag", "adapter"]))
    d = decide(router, tenant, text="Extract the person as JSON with the kettle price")
    assert d.route in ("rag", "adapter")
    assert "combined would be best but this tenant's policy does not allow it" in d.reason
    assert {a["route"] for a in d.alternatives} == {"prompt", "rag", "adapter"} - {d.route}


def test_policy_limits_routes_and_models(router, fakes) -> None:
    no_rag = Tenant("acme", TenantPolicy(routes=["prompt", "adapter"]))
    assert decide(router, no_rag, text="What is the kettle price?").route == "prompt"
    with pytest.raises(ServiceError) as exc:
        decide(router, no_rag, text="kettle", route="rag")
    assert exc.value.kind == "forbidden"
    no_base = Tenant("acme", TenantPolicy(allow_base_model=False))
    with pytest.raises(ServiceError) as exc:
        decide(router, no_base, model="base")
    assert exc.value.code == "model_not_found"
    # model=auto is no way around the policy: with no adapter to serve, it is refused ...
    lonely = Router("base", fakes.Registry([]), fakes.Retrieval())
    with pytest.raises(ServiceError) as exc:
        decide(lonely, no_base, text="What is the capital of France?")
    assert (exc.value.kind, exc.value.code) == ("forbidden", "base_model_not_allowed")
    # ... and with one, the adapter (an allowed path) serves.
    d = decide(router, no_base, text="What is the capital of France?")
    assert d.route == "adapter" and "policy does not allow" in d.reason
    with pytest.raises(ServiceError) as exc:
        decide(router, Tenant("globex"), model="json-extract")
    assert exc.value.kind == "not_found" and "globex" not in exc.value.message
    with pytest.raises(ServiceError) as exc:
        decide(router, route="adapter")
    assert exc.value.code == "adapter_required"


def test_another_tenants_adapter_is_never_chosen(fakes) -> None:
    reg = fakes.Registry([fakes.av("json-extract", ["Extract the person as JSON"], owner="acme")])
    router = Router("base", reg, fakes.Retrieval())
    d = decide(router, Tenant("globex"), text="Extract the person as JSON")
    assert d.route == "prompt" and d.adapter is None
    assert all(a["adapter"] is None for a in d.alternatives)


def test_query_is_embedded_once_per_decision(fakes) -> None:
    inner = fakes.BagOfWords()
    shared = CachedEmbedder(inner)
    router = Router("base", fakes.Registry([fakes.av("json-extract", ["Extract the person as JSON"])]),
                    fakes.Retrieval(embedder=shared), embedder=shared)  # fmt: skip
    decide(router, text="Extract the person as JSON, kettle price")  # exemplars embedded here
    inner.calls.clear()
    decide(router, text="What is the kettle price today?")
    assert inner.calls == [["What is the kettle price today?"]]
    assert shared.hits >= 1


def test_adapter_paths_skip_lookups_the_policy_rules_out(fakes) -> None:
    reg = fakes.Registry([fakes.av("json-extract", ["Extract the person as JSON"])])
    retrieval = fakes.Retrieval()
    router = Router("base", reg, retrieval)
    decide(router, Tenant("acme", TenantPolicy(routes=["prompt", "adapter"])), text="kettle")
    assert retrieval.searches == [] and reg.lists == 1
    reg.lists = 0
    decide(router, Tenant("acme", TenantPolicy(routes=["prompt", "rag"])), text="kettle")
    assert reg.lists == 0 and retrieval.searches == ["kettle"]


def test_a_payload_is_embedded_with_its_ask_in_one_batch(fakes) -> None:
    """Text to work on (quoted, or after a colon) is split off: the ask alone is searched too,
    so an adapter prompt whose payload mentions catalogue items is told from one that asks a
    document fact; both texts are embedded in one call and the searches reuse them."""
    inner = fakes.BagOfWords()
    shared = CachedEmbedder(inner)
    retrieval = fakes.Retrieval(embedder=shared)
    router = Router("base", fakes.Registry([fakes.av("json-extract", ["Extract the person as JSON"])]),
                    retrieval, embedder=shared)  # fmt: skip
    decide(router, text="warm up the exemplars")
    inner.calls.clear()
    d = decide(router, text="Extract the order as JSON: 'two kettles to 5 Elm Road, Leeds'")
    assert inner.calls == [["Extract the order as JSON: 'two kettles to 5 Elm Road, Leeds'",
                            "Extract the order as JSON:"]]  # fmt: skip
    assert retrieval.searches[-1] == "Extract the order as JSON:"
    assert d.signals.payload and d.scores["retrieval_top"] == 0.9
    assert d.scores["instruction_retrieval"] == 0.1  # the ask itself wants no document fact


def test_a_no_go_version_is_refused_by_name_until_an_admin_forces_it(fakes) -> None:
    """`NAME@N` must not serve a version its evaluation turned down."""
    from dataclasses import replace

    from serve.routing import Router

    no_go = replace(fakes.av("json-extract"), is_prod=False, eval_report={"go": False})
    router = Router("base", fakes.Registry([no_go]), fakes.Retrieval())
    with pytest.raises(ServiceError) as exc:
        decide(router, model="json-extract@1")
    assert (exc.value.kind, exc.value.code) == ("forbidden", "version_gated")
    assert "promote json-extract@1 with force" in exc.value.message
    forced = replace(no_go, forced={"at": "2026-12-06T00:00:00", "reason": "hotfix"})
    router = Router("base", fakes.Registry([forced]), fakes.Retrieval())
    assert decide(router, model="json-extract@1").route == "adapter"
