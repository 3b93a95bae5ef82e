"""The NetworkPolicies, evaluated as a cluster would: ingress is denied by default, vLLM and
Chroma admit only the gateway, PostgreSQL only the registry's clients, the gateway only the
ingress controller's namespace."""

from __future__ import annotations

from typing import Any

import pytest

LAYERS = ("base", "gpu", "cpu")
NAMESPACE = {"kubernetes.io/metadata.name": "loraplex"}
INGRESS_NAMESPACE = {"kubernetes.io/metadata.name": "ingress-nginx"}
OTHER_NAMESPACE = {"kubernetes.io/metadata.name": "elsewhere"}


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    # Only matchLabels is used in k8s/; anything else would make this evaluator unsound.
    assert set(selector) <= {"matchLabels"}, selector
    return selector.get("matchLabels", {}).items() <= labels.items()


def admitted(
    policies: list[dict[str, Any]],
    target: dict[str, str],
    port: int,
    source: dict[str, str],
    source_namespace: dict[str, str],
) -> bool:
    """Whether a pod labelled `source` in a namespace labelled `source_namespace` may open
    `port` on a loraplex pod labelled `target`."""
    selecting = [p for p in policies if _matches(p["spec"]["podSelector"], target)]
    if not any("Ingress" in p["spec"]["policyTypes"] for p in selecting):
        return True  # no policy isolates the pod
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            ports = [p["port"] for p in rule.get("ports", [])]
            if ports and port not in ports:
                continue
            for peer in rule.get("from", []):
                ns_ok = (
                    _matches(peer["namespaceSelector"], source_namespace)
                    if "namespaceSelector" in peer
                    else source_namespace == NAMESPACE
                )
                pod_ok = _matches(peer["podSelector"], source) if "podSelector" in peer else True
                if ns_ok and pod_ok:
                    return True
    return False


def _pod_labels(docs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet", "Job")
    }


@pytest.mark.parametrize("layer", LAYERS)
def test_ingress_is_denied_by_default(rendered, layer) -> None:
    policies = [d for d in rendered[layer] if d["kind"] == "NetworkPolicy"]
    deny = [p for p in policies if p["spec"]["podSelector"] == {}]
    assert len(deny) == 1 and deny[0]["spec"]["policyTypes"] == ["Ingress"]
    assert "ingress" not in deny[0]["spec"]


@pytest.mark.parametrize("layer", LAYERS)
def test_only_the_gateway_reaches_the_engines_and_only_registry_clients_the_database(
    rendered, layer
) -> None:
    docs = rendered[layer]
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    pods = _pod_labels(docs)
    # Every workload, plus a stranger in the namespace and one elsewhere.
    sources = {name: (labels, NAMESPACE) for name, labels in pods.items()}
    sources["stranger"] = ({"app": "stranger"}, NAMESPACE)
    sources["gateway-lookalike-elsewhere"] = (pods["gateway"], OTHER_NAMESPACE)
    expected = {
        ("vllm", 8000): {"gateway"},
        ("chroma", 8000): {"gateway"},
        ("postgres", 5432): {"gateway", "vllm", "train"},
    }
    for (target, port), allowed in expected.items():
        reach = {
            name
            for name, (labels, ns) in sources.items()
            if name != target and admitted(policies, pods[target], port, labels, ns)
        }
        assert reach == allowed, (target, reach)
    # No other port is open on them at all, even to the gateway.
    for target in ("vllm", "chroma", "postgres"):
        assert not admitted(policies, pods[target], 9999, pods["gateway"], NAMESPACE)


@pytest.mark.parametrize("layer", LAYERS)
def test_the_gateway_is_reached_from_the_ingress_namespace_only(rendered, layer) -> None:
    docs = rendered[layer]
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    gateway = _pod_labels(docs)["gateway"]
    controller = {"app.kubernetes.io/name": "ingress-nginx"}
    assert admitted(policies, gateway, 8000, controller, INGRESS_NAMESPACE)
    assert not admitted(policies, gateway, 8000, controller, OTHER_NAMESPACE)
    assert not admitted(policies, gateway, 8000, {"app": "stranger"}, NAMESPACE)
    assert not admitted(policies, gateway, 9999, controller, INGRESS_NAMESPACE)
    # In-namespace clients opt in with a label.
    assert admitted(policies, gateway, 8000, {"loraplex.io/gateway-client": "true"}, NAMESPACE)
    for name, labels in _pod_labels(docs).items():
        if name != "gateway":
            assert not admitted(policies, gateway, 8000, labels, NAMESPACE), name


def test_the_evaluator_admits_what_no_policy_isolates() -> None:
    # Guards the evaluator itself: without the default deny, a stranger gets in.
    allow_gateway = {
        "spec": {
            "podSelector": {"matchLabels": {"c": "vllm"}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"c": "gw"}}}], "ports": [{"port": 8000}]}
            ],
        }
    }
    assert admitted([], {"c": "x"}, 1, {"c": "stranger"}, NAMESPACE)
    assert admitted([allow_gateway], {"c": "vllm"}, 8000, {"c": "gw"}, NAMESPACE)
    assert not admitted([allow_gateway], {"c": "vllm"}, 8000, {"c": "gw"}, OTHER_NAMESPACE)
    assert not admitted([allow_gateway], {"c": "vllm"}, 8000, {"c": "other"}, NAMESPACE)
