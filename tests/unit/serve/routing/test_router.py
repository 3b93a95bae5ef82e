"""Routing decisions with fake registry/retrieval/embedder (no servers)."""

from dataclasses import dataclass, field

import pytest

from serve.errors import ServiceError
from serve.routing import Router, RouteRequest
from serve.tenants import Tenant, TenantPolicy

WORDS = ["json", "extract", "person", "weather", "capital", "france", "kettle", "price"]


class BagOfWords:
    name = "bow"

    def embed(self, texts):
        out = []
        for t in texts:
            v = [float(w in t.lower()) for w in WORDS]
            n = sum(x * x for x in v) ** 0.5 or 1.0
            out.append([x / n for x in v])
        return out


@dataclass
class AV:
    name: str
    version: int = 1
    exemplars: list = field(default_factory=list)
    served_name: str = ""

    def __post_init__(self):
        self.served_name = f"{self.name}-v{self.version}"


class Registry:
    def __init__(self, adapters):
        self.adapters = {a.name: a for a in adapters}

    def resolve_for_tenant(self, model, tenant):
        return self.adapters.get(model) if tenant == "acme" else None

    def list_for_tenant(self, tenant):
        return list(self.adapters.values()) if tenant == "acme" else []


@dataclass
class Result:
    hits: list
    strength: dict


class Retrieval:
    def __init__(self, top):
        self.top = top
        self.embedder = BagOfWords()

    def search(self, tenant, query, top_k=4):
        top = self.top if "kettle" in query.lower() else 0.1
        return Result([], {"top": top, "margin": 0.2})


ACME = Tenant("acme", TenantPolicy())
REG = Registry([AV("json-extract", exemplars=["Extract the person as JSON"])])


def decide(router, tenant=ACME, model="auto", text="hi", **choices):
    return router.decide(RouteRequest(model=model, query=text, **choices), tenant)


def test_explicit_adapter_and_base() -> None:
    router = Router("base", REG, Retrieval(0.9))
    d = decide(router, model="json-extract", text="anything")
    assert (d.route, d.served_model) == ("adapter", "json-extract-v1")
    d = decide(router, model="json-extract", text="kettle price", route="rag")
    assert d.route == "combined"
    assert decide(router, model="base", text="capital of france", route="prompt").route == "prompt"


def test_auto_uses_exemplars_and_retrieval_strength() -> None:
    router = Router("base", REG, Retrieval(0.9))
    d = decide(router, text="Please extract this person as JSON")
    assert d.route == "adapter" and d.adapter.name == "json-extract"
    assert d.scores["adapter_similarity"] > 0.45 and "exemplars" in d.reason
    d = decide(router, text="What is the kettle price?")
    assert d.route == "rag" and d.scores["retrieval_top"] == 0.9
    d = decide(router, text="Extract the person as JSON with the kettle price")
    assert d.route == "combined"
    d = decide(router, text="What is the capital of France?")
    assert d.route == "prompt" and d.served_model == "base"


def test_policy_limits_routes_and_models() -> None:
    router = Router("base", REG, Retrieval(0.9))
    no_rag = Tenant("acme", TenantPolicy(routes=["prompt", "adapter"]))
    assert decide(router, no_rag, text="What is the kettle price?").route == "prompt"
    with pytest.raises(ServiceError) as exc:
        decide(router, no_rag, text="kettle", route="rag")
    assert exc.value.kind == "forbidden"
    no_base = Tenant("acme", TenantPolicy(allow_base_model=False))
    with pytest.raises(ServiceError) as exc:
        decide(router, no_base, model="base")
    assert exc.value.code == "model_not_found"
    # model=auto is no way around the policy: with no adapter chosen it would be the base model.
    with pytest.raises(ServiceError) as exc:
        decide(router, no_base, text="What is the capital of France?")
    assert (exc.value.kind, exc.value.code) == ("forbidden", "base_model_not_allowed")
    assert decide(router, no_base, text="Extract the person as JSON").route == "adapter"
    with pytest.raises(ServiceError) as exc:
        decide(router, Tenant("globex"), model="json-extract")
    assert exc.value.kind == "not_found" and "globex" not in exc.value.message
    with pytest.raises(ServiceError) as exc:
        decide(router, route="adapter")
    assert exc.value.code == "adapter_required"
