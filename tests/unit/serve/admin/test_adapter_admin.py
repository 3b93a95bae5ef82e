"""Adapter administration: one table of cases, run through HTTP and through the CLI alike.

Both entry points share one implementation (`serve.admin.adapters.AdapterAdmin`); every case must
come out the same from each: the same refusal (a 4xx over HTTP, exit status 2 on the CLI, with
the same words) or the same registered versions.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from adapters.hotswap import HotSwapper
from serve.admin.adapters import AdapterAdmin
from serve.admin.serving import ReplicaSync
from serve.cli import app as cli_app
from serve.gateway.app import create_app
from serve.gateway.deps import get_adapter_admin
from serve.services import Services
from serve.settings import Settings

ADMIN = "lpx-admin-unit-test-key"


@dataclass
class Outcome:
    ok: bool
    message: str
    code: str | None = None


class Http:
    """The admin API of a real gateway app; vLLM replicas are faked at the HTTP level."""

    name = "http"

    def __init__(self, settings: Settings, replicas) -> None:
        app = create_app(settings, ["http://vllm"])
        self.client = TestClient(app)
        self.client.__enter__()
        handler, self.held, _ = replicas(refuse=set())
        services = app.state.loraplex.services
        hotswap = HotSwapper(
            ["http://vllm"], httpx.AsyncClient(transport=httpx.MockTransport(handler))
        )
        fake = AdapterAdmin(
            services.registry,
            services.tenants,
            ReplicaSync(services.registry, hotswap),
            uploads_dir=settings.data_dir / "uploads",
        )
        app.dependency_overrides[get_adapter_admin] = lambda: fake
        self.auth = {"Authorization": f"Bearer {ADMIN}"}

    def close(self) -> None:
        self.client.__exit__(None, None, None)

    def register(
        self, src: Path, name: str, tenant=None, share=None, promote=True, force=False
    ) -> Outcome:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for f in src.iterdir():
                zf.write(f, f.name)
        form = {"name": name, "promote": str(promote).lower(), "force": str(force).lower()}
        form |= {k: v for k, v in {"tenant": tenant, "share": share}.items() if v}
        resp = self.client.post(
            "/v1/adapters",
            headers=self.auth,
            data=form,
            files={"file": ("a.zip", buf.getvalue(), "application/zip")},
        )
        return self._outcome(resp)

    def promote(self, name: str, version: int, force=False) -> Outcome:
        resp = self.client.post(
            f"/v1/adapters/{name}/promote",
            headers=self.auth,
            json={"version": version, "force": force},
        )
        return self._outcome(resp)

    @staticmethod
    def _outcome(resp: httpx.Response) -> Outcome:
        if resp.status_code < 300:
            return Outcome(True, json.dumps(resp.json()))
        assert 400 <= resp.status_code < 500, resp.text
        error = resp.json()["error"]
        return Outcome(False, error["message"], error["code"])


class Cli:
    """`loraplex adapters ...` in the same data directory."""

    name = "cli"

    def __init__(self, settings: Settings, replicas) -> None:
        self.env = {
            "LORAPLEX_DATA_DIR": str(settings.data_dir),
            "LORAPLEX_BASE_MODEL": "tiny-base",
            "LORAPLEX_MODEL_DIR": str(settings.model_dir),
            "LORAPLEX_ADMIN_KEY": ADMIN,
            "LORAPLEX_PORT": "9",
        }

    def close(self) -> None:
        pass

    def run(self, *args: str) -> Outcome:
        result = CliRunner().invoke(cli_app, list(args), env=self.env)
        text = " ".join(result.output.split())
        assert result.exit_code in (0, 2), (result.exit_code, text, result.exception)
        return Outcome(result.exit_code == 0, text)

    def register(
        self, src: Path, name: str, tenant=None, share=None, promote=True, force=False
    ) -> Outcome:
        args = ["adapters", "register", str(src), "--name", name]
        args += ["--tenant", tenant] if tenant else []
        args += ["--share", share] if share else []
        args += [] if promote else ["--no-promote"]
        args += ["--force"] if force else []
        return self.run(*args)

    def promote(self, name: str, version: int, force=False) -> Outcome:
        return self.run("adapters", "promote", f"{name}@{version}", *(["--force"] if force else []))


@pytest.fixture(params=[Http, Cli], ids=["http", "cli"])
def entry(request, tmp_path, base_dir, fake_replicas):
    settings = Settings(
        data_dir=tmp_path / "state",
        base_model="tiny-base",
        model_dir=base_dir,
        admin_key=ADMIN,
        demo_tenant="",
    )
    services = Services(settings)
    services.tenants.create("acme")
    point = request.param(settings, fake_replicas)
    yield point, services
    point.close()


def no_go(adapter: Path) -> Path:
    (adapter / "eval.json").write_text(json.dumps({"go": False, "checks": {"task loss": False}}))
    return adapter


def versions(services: Services) -> list[tuple[str, bool]]:
    return [(v.ref, v.is_prod) for v in services.registry.versions()]


# (case, what is registered, accepted?, words the answer must hold, versions after)
CASES = [
    ("unknown owner", dict(tenant="ghost"), False, "no tenant named 'ghost'", []),
    ("unknown share", dict(tenant="acme", share="*,ghost"), False, "no tenant named 'ghost'", []),
    ("bad name", dict(name="Bad Name"), False, "is invalid", []),
    # A NO-GO first version is kept, but nothing serves under the name until one is promoted.
    ("first version NO-GO", dict(eval="no-go"), True, "NO-GO", [("x@1", False)]),
    ("registered", dict(tenant="acme"), True, "x@1", [("x@1", True)]),
]


@pytest.mark.parametrize(("case", "args", "ok", "words", "after"), CASES, ids=[c[0] for c in CASES])
def test_register_cases(entry, make, tmp_path, case, args, ok, words, after) -> None:
    point, services = entry
    adapter = make(tmp_path / "a")
    args = dict(args)
    if args.pop("eval", None):
        no_go(adapter)
    out = point.register(adapter, args.pop("name", "x"), **args)
    assert out.ok is ok, out.message
    assert words in out.message
    assert versions(services) == after


def test_no_go_versions_need_force_from_either_side(entry, make, tmp_path) -> None:
    point, services = entry
    assert point.register(make(tmp_path / "first", seed=3), "x").ok
    out = point.register(no_go(make(tmp_path / "nogo", seed=4)), "x")
    assert out.ok and "NO-GO" in out.message  # registered, not promoted, and said so
    assert versions(services) == [("x@1", True), ("x@2", False)]
    out = point.promote("x", 2)
    assert not out.ok and "failed its evaluation gates" in out.message
    assert point.promote("x", 2, force=True).ok
    assert versions(services) == [("x@1", False), ("x@2", True)]
    forced = services.registry.get("x@2").forced
    assert forced is not None and forced["at"] and "NO-GO" in forced["reason"]


def test_lineage_beside_the_adapter_is_recorded(entry, make, tmp_path) -> None:
    point, services = entry
    adapter = make(tmp_path / "a")
    (adapter / "report.json").write_text(
        json.dumps({"dataset_digest": "d" * 64, "config": {"rank": 4}})
    )
    (adapter / "exemplars.json").write_text(json.dumps(["Extract the person as JSON"]))
    assert point.register(adapter, "x", tenant="acme").ok
    [av] = services.registry.versions()
    assert av.dataset_digest == "d" * 64 and av.training_config == {"rank": 4}
    assert av.exemplars == ["Extract the person as JSON"]


def test_the_gateway_brings_replicas_in_line_after_cli_changes(
    tmp_path, base_dir, make, fake_replicas
) -> None:
    """After `loraplex adapters rollback` the gateway is told to reload: the version rolled back
    from must stop being served, not linger in vLLM."""
    settings = Settings(
        data_dir=tmp_path / "state",
        base_model="tiny-base",
        model_dir=base_dir,
        admin_key=ADMIN,
        demo_tenant="",
    )
    http = Http(settings, fake_replicas)
    registry = Services(settings).registry  # what the CLI does, in another process
    try:
        registry.register(make(tmp_path / "a1", seed=1), "x")
        registry.register(make(tmp_path / "a2", seed=2), "x")

        def reload(body=None):
            return http.client.post("/v1/adapters/reload", json=body, headers=http.auth).json()

        reload({"name": "x"})
        assert http.held["vllm"] == {"x-v2"}
        registry.rollback("x")
        body = reload({"name": "x"})
        assert list(body["load"]) == ["x@1"] and list(body["unload"]) == ["x-v2"]
        assert http.held["vllm"] == {"x-v1"}
        registry.register(make(tmp_path / "a3", seed=3), "y")
        reload({"name": "y"})
        registry.remove("y")
        body = reload()  # every adapter
        assert list(body["unload"]) == ["y-v1"] and http.held["vllm"] == {"x-v1"}
    finally:
        http.close()


def test_a_broken_upload_is_a_400_and_stores_nothing(tmp_path, base_dir, fake_replicas) -> None:
    settings = Settings(
        data_dir=tmp_path / "state",
        base_model="tiny-base",
        model_dir=base_dir,
        admin_key=ADMIN,
        demo_tenant="",
    )
    http = Http(settings, fake_replicas)
    try:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr(".", b"{}")
        resp = http.client.post(
            "/v1/adapters",
            headers=http.auth,
            data={"name": "x"},
            files={"file": ("a.zip", buf.getvalue(), "application/zip")},
        )
        assert resp.status_code == 400, resp.text
        assert "file without a name" in resp.json()["error"]["message"]
        assert Services(settings).registry.versions() == [] and http.held == {}
        assert list((settings.data_dir / "uploads").iterdir()) == []
    finally:
        http.close()
