"""No credential lives in the repository: Secrets are generated from a gitignored file made by
k8s/make-secrets.sh, and the only values committed are placeholders the gateway refuses."""

from __future__ import annotations

import re
import stat
import subprocess
from pathlib import Path

import yaml

K8S = Path(__file__).resolve().parents[3] / "k8s"
PLACEHOLDER = "change-me"
PLACEHOLDERS = K8S / "base" / "placeholder-secrets.env"
SECRET_KEYS = {
    "LORAPLEX_ADMIN_KEY",
    "LORAPLEX_VLLM_API_KEY",
    "LORAPLEX_CHROMA_TOKEN",
    "POSTGRES_PASSWORD",
    "LORAPLEX_DATABASE_URL",
}


def _env_file(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def _repo_files() -> list[Path]:
    # secrets.env is gitignored: a developer's real one must not fail (or leak into) the test.
    return [p for p in K8S.rglob("*") if p.is_file() and p.name != "secrets.env"]


def test_no_secret_resource_is_committed() -> None:
    for path in _repo_files():
        if path.suffix in (".yaml", ".yml"):
            for doc in yaml.safe_load_all(path.read_text()):
                assert not (doc and doc.get("kind") == "Secret"), path


def test_the_committed_values_are_placeholders() -> None:
    values = _env_file(PLACEHOLDERS)
    assert set(values) == SECRET_KEYS
    for key, value in values.items():
        password = value.split("://", 1)[1].split("@")[0].split(":")[1] if "://" in value else value
        assert password == PLACEHOLDER, key


def test_nothing_in_k8s_looks_like_a_real_key() -> None:
    # Long runs that mix many letters and digits: hex or base64 keys, tokens, hashes.
    for path in _repo_files():
        for run in re.findall(r"[A-Za-z0-9+/=_-]{24,}", path.read_text(errors="replace")):
            digits, letters = sum(c.isdigit() for c in run), sum(c.isalpha() for c in run)
            assert not (digits >= 6 and letters >= 6), f"{path}: {run}"


def test_overlay_secret_files_are_gitignored() -> None:
    assert "overlays/*/secrets.env" in (K8S / ".gitignore").read_text().splitlines()
    for overlay in ("gpu", "cpu"):
        kustomization = yaml.safe_load(
            (K8S / "overlays" / overlay / "kustomization.yaml").read_text()
        )
        (generator,) = kustomization["secretGenerator"]
        assert generator == {
            "name": "loraplex-secrets",
            "behavior": "replace",
            "envs": ["secrets.env"],
        }


def test_make_secrets_writes_fresh_private_credentials_once(tmp_path) -> None:
    script = K8S / "make-secrets.sh"
    first = subprocess.run(["sh", str(script), str(tmp_path)], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    out = tmp_path / "secrets.env"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    values = _env_file(out)
    assert set(values) == set(_env_file(PLACEHOLDERS))
    raw = [
        values[k] for k in ("LORAPLEX_VLLM_API_KEY", "LORAPLEX_CHROMA_TOKEN", "POSTGRES_PASSWORD")
    ]
    assert all(re.fullmatch(r"[0-9a-f]{48}", v) for v in raw) and len(set(raw)) == 3
    assert re.fullmatch(r"lpx-admin-[0-9a-f]{48}", values["LORAPLEX_ADMIN_KEY"])
    assert values["LORAPLEX_DATABASE_URL"] == (
        f"postgresql+psycopg://loraplex:{values['POSTGRES_PASSWORD']}@postgres:5432/loraplex"
    )
    assert PLACEHOLDER not in out.read_text()
    # Never overwrites: rotating is a deliberate act.
    again = subprocess.run(["sh", str(script), str(tmp_path)], capture_output=True, text=True)
    assert again.returncode == 1 and "exists" in again.stderr
    assert _env_file(out) == values


def test_a_second_run_elsewhere_makes_different_credentials(tmp_path) -> None:
    runs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        subprocess.run(
            ["sh", str(K8S / "make-secrets.sh"), str(tmp_path / name)],
            check=True,
            capture_output=True,
        )
        runs.append(_env_file(tmp_path / name / "secrets.env"))
    assert all(runs[0][k] != runs[1][k] for k in runs[0])
