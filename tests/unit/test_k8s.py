"""The shipped Kubernetes manifests parse, and every setting they pass exists."""

from pathlib import Path

import yaml

from serve.settings import Settings

K8S = Path(__file__).resolve().parents[2] / "k8s"


def _docs() -> list[dict]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _walk(node, found):
    if isinstance(node, dict):
        if isinstance(node.get("name"), str) and node["name"].startswith("LORAPLEX_"):
            found.add(node["name"])
        for key, value in node.items():
            if isinstance(key, str) and key.startswith("LORAPLEX_"):
                found.add(key)
            _walk(value, found)
    elif isinstance(node, list):
        for item in node:
            _walk(item, found)


def test_manifests_parse_and_are_listed_in_kustomization() -> None:
    docs = _docs()
    assert {d["kind"] for d in docs} >= {"Deployment", "StatefulSet", "Service", "ConfigMap", "Job"}
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


def test_config_map_loads_into_settings(tmp_path) -> None:
    config = next(d for d in _docs() if d["kind"] == "ConfigMap")
    path = tmp_path / "config.yaml"
    path.write_text(config["data"]["config.yaml"])
    settings = Settings.load(path)
    assert len(settings.vllm_urls) == 2 and settings.chroma_url


def test_every_loraplex_variable_is_a_setting() -> None:
    found: set[str] = set()
    _walk(_docs(), found)
    # The LORAPLEX_RESOLVER_* pair is read by the vLLM resolver plugin, not by Settings.
    fields = {f"LORAPLEX_{name.upper()}" for name in Settings.model_fields}
    assert found - {"LORAPLEX_RESOLVER_DB", "LORAPLEX_RESOLVER_STORE"} <= fields
    assert "LORAPLEX_ADMIN_KEY" in found
