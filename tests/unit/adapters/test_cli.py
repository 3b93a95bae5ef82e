"""`loraplex adapters register` checks its tenants as the HTTP route does."""

import pytest
from typer.testing import CliRunner

from serve.cli import app


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("LORAPLEX_DATA_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LORAPLEX_BASE_MODEL", "tiny-base")
    monkeypatch.delenv("LORAPLEX_ADMIN_KEY", raising=False)  # no gateway to tell
    monkeypatch.chdir(tmp_path)
    return tmp_path


def invoke(*args: str) -> tuple[int, str]:
    """Exit code and output, with rich's line wrapping undone."""
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, " ".join(result.output.split())


def registered(env) -> list[str]:
    from serve.cli import load_settings
    from serve.routers.adapters import build

    registry, _ = build(load_settings(), [])
    return [v.ref for v in registry.versions()]


def test_register_refuses_unknown_tenants(env, adapter) -> None:
    code, out = invoke("adapters", "register", str(adapter), "--name", "x", "--tenant", "ghost")
    assert code == 2, out
    assert (
        "--tenant: no tenant named 'ghost'; create it with `loraplex tenants create ghost`" in out
    )
    assert registered(env) == []
    assert invoke("tenants", "create", "acme")[0] == 0
    code, out = invoke("adapters", "register", str(adapter), "--name", "x", "--tenant", "acme",
                       "--share", "*,ghost")  # fmt: skip
    assert code == 2 and "--share: no tenant named 'ghost'" in out and registered(env) == []
    code, out = invoke("adapters", "register", str(adapter), "--name", "x", "--tenant", "acme")
    assert code == 0 and "registered x@1 (prod)" in out, out
    assert registered(env) == ["x@1"]


def test_a_no_go_eval_beside_the_adapter_is_not_promoted(env, adapter, make) -> None:
    import json

    (adapter / "eval.json").write_text(json.dumps({"go": False, "checks": {"task loss": False}}))
    # A NO-GO first version would serve at once: refused.
    code, out = invoke("adapters", "register", str(adapter), "--name", "x")
    assert code == 2 and "NO-GO" in out and registered(env) == [], out
    assert invoke("adapters", "register", str(make(env / "first", seed=3)), "--name", "x")[0] == 0
    code, out = invoke("adapters", "register", str(adapter), "--name", "x")
    assert code == 0 and "NO-GO" in out and "registered x@2 digest" in out, out
    code, out = invoke("adapters", "promote", "x@2")
    assert code != 0 and "failed its evaluation gates" in out
    code, out = invoke("adapters", "promote", "x@2", "--force")
    assert code == 0 and "x prod -> v2" in out, out
