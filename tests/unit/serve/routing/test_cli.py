"""`loraplex route` and `loraplex router ...` on a tenant without documents or adapters (no
embedding model is loaded: nothing needs one)."""

from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

from serve.cli import app
from serve.services import Services
from serve.settings import Settings


def test_route_json_calibrate_versions_rollback(tmp_path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data"), "demo_tenant": ""}))
    Services(Settings.load(config)).tenants.create("acme")
    run = CliRunner().invoke
    out = run(
        app,
        [
            "route",
            "--tenant",
            "acme",
            "--json",
            "What is the capital of France?",
            "-c",
            str(config),
        ],
    )
    assert out.exit_code == 0, out.output
    decision = json.loads(out.stdout)
    assert decision["route"] == "prompt" and decision["router_version"] == "thresholds"
    assert decision["model"] == "SmolLM2-135M-Instruct" and decision["adapter"] is None
    assert [a["route"] for a in decision["alternatives"]] == ["rag"]

    golden = tmp_path / "golden.jsonl"
    golden.write_text(
        "\n".join(
            json.dumps({"prompt": f"general question {i}?", "route": "prompt"}) for i in range(4)
        )
    )
    out = run(
        app, ["router", "calibrate", "--tenant", "acme", str(golden), "--json", "-c", str(config)]
    )
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert report["version"] == "v1" and report["kind"] == "thresholds"
    assert report["before"]["accuracy"] == 1.0 and report["labels"] == {"prompt": 4}
    out = run(app, ["router", "versions", "--tenant", "acme", "-c", str(config)])
    assert out.exit_code == 0 and "v1" in out.stdout and "thresholds" in out.stdout
    out = run(app, ["route", "--tenant", "acme", "--json", "hello", "-c", str(config)])
    assert json.loads(out.stdout)["router_version"] == "v1"
    out = run(app, ["router", "rollback", "--tenant", "acme", "-c", str(config)])
    assert out.exit_code == 0 and "thresholds" in out.stdout
    out = run(app, ["router", "rollback", "--tenant", "acme", "-c", str(config)])
    assert out.exit_code == 2 and "nothing" not in out.stdout  # the error goes to stderr
    out = run(app, ["router", "calibrate", "--tenant", "acme", "-c", str(config)])
    assert out.exit_code == 2
