"""The router end to end: model "auto" through the openai client takes each of the four paths,
calibration improves a tenant's routing, responses report what served, tenants stay apart."""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path

import httpx
import openai
import pytest
import yaml

EXEMPLARS = [
    "Extract the order as JSON: two mugs to 5 Elm Road, Leeds",
    "Turn this message into a JSON order: 'send one kettle to 9 Mill Lane'",
    "Parse the order into items, quantities and address: three lamps for 22 High St",
    "Give me the order as JSON from: 'four cups delivered to 8 Bridge Way'",
    "Extract items and delivery address as JSON: a toaster to 71 Queen St",
    "Convert this customer note into an order object: two kettles to 40 Park Ave",
    "Extract the order as JSON with each item's price: one lamp to 3 Hill St, Hull",
]
DOCS = [
    {"id": "zb3000", "source": "drones/zb3000.md",
     "text": "The ZB-3000 Zorblax drone flies for 47 minutes on one charge and costs 1299 euros."},
    {"id": "returns", "source": "policy/returns.md",
     "text": "Drones can be returned within 30 days of delivery with the receipt."},
]  # fmt: skip
ASK = {
    "prompt": "What is the capital of France?",
    "rag": "How many minutes does the ZB-3000 fly on one charge?",
    "adapter": "Extract the order as JSON: three mugs to 14 Oak Drive, York",
    "combined": "Extract the order as JSON with each item's price: two ZB-3000 drones to 5 Elm Road, Leeds",
}


def make_real_adapter(model_dir: Path, out: Path, seed: int) -> Path:
    """A random (non-zero) rank-8 LoRA adapter for the real base model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    cfg = LoraConfig(
        r=8, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    get_peft_model(model, cfg).save_pretrained(out)
    return out


def zipped(path: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for file in path.iterdir():
            zf.write(file, f"adapter/{file.name}")
    return buf.getvalue()


@pytest.fixture(scope="module")
def routed(stack, tmp_path_factory) -> dict[str, str]:
    """Tenant rt-acme: adapter rt-orders (with exemplars) and two documents; rt-other: nothing."""
    key = stack.make_tenant("rt-acme")
    other = stack.make_tenant("rt-other")
    adapter = make_real_adapter(stack.model_dir, tmp_path_factory.mktemp("rt") / "a", seed=7)
    with stack.admin() as admin:
        resp = admin.post(
            "/v1/adapters",
            files={"file": ("adapter.zip", zipped(adapter), "application/zip")},
            data={"name": "rt-orders", "tenant": "rt-acme", "exemplars": json.dumps(EXEMPLARS)},
        )
        assert resp.status_code == 201, resp.text
    with httpx.Client(base_url=stack.gateway_url, timeout=60) as http:
        resp = http.post(
            "/v1/documents",
            json={"records": DOCS},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert resp.status_code in (200, 201), resp.text
    return {"key": key, "other": other}


def ask(client: openai.OpenAI, text: str, **loraplex) -> openai.types.chat.ChatCompletion:
    extra = {"loraplex": loraplex} if loraplex else None
    return client.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": text}],
        temperature=0,
        max_tokens=8,
        extra_body=extra,
    )


def test_auto_takes_each_of_the_four_paths(stack, routed) -> None:
    client = stack.openai(routed["key"])
    base = stack.settings.base_model
    expected_model = {"prompt": base, "rag": base, "adapter": "rt-orders", "combined": "rt-orders"}
    for route, text in ASK.items():
        resp = ask(client, text)
        extra = resp.model_extra["loraplex"]
        assert extra["route"] == route, (route, extra["reason"], extra["scores"])
        assert resp.model == expected_model[route]
        assert extra["router_version"] == "thresholds"
        assert extra["adapter"] == ("rt-orders@1" if route in ("adapter", "combined") else None)
        assert {a["route"] for a in extra["alternatives"]} == set(ASK) - {route}
        assert all(a["score"] <= extra["scores"]["route_score"] for a in extra["alternatives"])
        if route in ("rag", "combined"):
            # Given to the model; `citations` holds those the answer actually quotes or marks.
            given = [c["source"] for c in extra["sources"]]
            assert "drones/zb3000.md" in given, (route, given, extra.get("grounding"))
            assert {c["id"] for c in extra["citations"]} <= {c["id"] for c in extra["sources"]}
    with httpx.Client(base_url=stack.gateway_url, timeout=30) as http:
        text = http.get("/metrics", headers={"Authorization": f"Bearer {stack.admin_key}"}).text
    for route in ASK:
        assert f'route="{route}",router_version="thresholds",tenant="rt-acme"' in text
    assert 'loraplex_router_decision_seconds_count{tenant="rt-acme"}' in text
    assert 'loraplex_router_version{tenant="rt-acme"} 0.0' in text


def test_what_is_reported_is_what_served(stack, routed) -> None:
    """model=auto with loraplex.adapter and route prompt: the adapter serves, and the response,
    the headers and the request log all say so."""
    client = stack.openai(routed["key"])
    named = client.chat.completions.with_raw_response.create(
        model="auto",
        messages=[{"role": "user", "content": "Name three colours."}],
        temperature=0,
        max_tokens=8,
        extra_body={"loraplex": {"adapter": "rt-orders", "route": "prompt"}},
    )
    resp = named.parse()
    extra = resp.model_extra["loraplex"]
    assert (extra["route"], extra["adapter"], resp.model) == ("adapter", "rt-orders@1", "rt-orders")
    assert named.headers["x-loraplex-adapter"] == "rt-orders@1"
    direct = client.chat.completions.create(
        model="rt-orders",
        messages=[{"role": "user", "content": "Name three colours."}],
        temperature=0,
        max_tokens=8,
    )
    assert resp.choices[0].message.content == direct.choices[0].message.content
    assert stack.state.request_log.flush()  # lines are written by a thread of their own
    log = (stack.settings.logs_dir / "requests.log").read_text().splitlines()
    mine = [json.loads(x) for x in log if '"tenant":"rt-acme"' in x]
    last_auto = [r for r in mine if r["model"] == "auto"][-1]
    assert (last_auto["adapter"], last_auto["served_model"]) == ("rt-orders@1", "rt-orders")
    assert last_auto["route"] == "adapter"


def test_another_tenants_adapter_is_never_chosen(stack, routed) -> None:
    client = stack.openai(routed["other"])
    resp = ask(client, EXEMPLARS[0])
    extra = resp.model_extra["loraplex"]
    assert extra["route"] == "prompt" and extra["adapter"] is None
    assert resp.model == stack.settings.base_model
    assert all(a["adapter"] is None for a in extra["alternatives"])
    with pytest.raises(openai.NotFoundError):
        ask(client, EXEMPLARS[0], adapter="rt-orders")


def test_calibration_improves_routing_and_rolls_back(stack, tmp_path) -> None:
    """A tenant whose thresholds are off (everything goes to the base model alone) calibrates
    on a small golden set with `loraplex router calibrate`; the gateway then uses v1."""
    from typer.testing import CliRunner

    from serve.cli import app

    key = stack.make_tenant("rt-cal", {"rag_min_score": 0.99, "adapter_min_similarity": 0.99})
    with stack.admin() as admin:
        shared = admin.post(
            "/v1/documents", json={"records": DOCS}, headers={"Authorization": f"Bearer {key}"}
        )
        assert shared.status_code in (200, 201), shared.text
    golden = tmp_path / "golden.jsonl"
    rows = [
        {"prompt": "How long can the ZB-3000 stay in the air?", "route": "rag"},
        {"prompt": "What does the ZB-3000 drone cost?", "route": "rag"},
        {"prompt": "How many days do I have to return a drone?", "route": "rag"},
        {"prompt": "Can I send a drone back after three weeks?", "route": "rag"},
        {"prompt": "What is the capital of Italy?", "route": "prompt"},
        {"prompt": "Write a haiku about autumn leaves.", "route": "prompt"},
        {"prompt": "Explain photosynthesis in one sentence.", "route": "prompt"},
        {"prompt": "Who wrote Hamlet?", "route": "prompt"},
    ]
    golden.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "data_dir": str(stack.settings.data_dir), "model_dir": str(stack.model_dir),
        "admin_key": stack.admin_key, "demo_tenant": "",
    }))  # fmt: skip
    runner = CliRunner()
    result = runner.invoke(
        app, ["router", "calibrate", "--tenant", "rt-cal", str(golden), "--json", "-c", str(config)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["version"] == "v1" and report["before"]["version"] == "thresholds"
    # Only questions naming the ZB-3000 clear a 0.99 retrieval threshold (an identifier hit).
    assert report["before"]["accuracy"] <= 0.75
    assert report["after"]["accuracy"] > report["before"]["accuracy"]
    client = stack.openai(key)
    deadline = time.monotonic() + 30  # the gateway re-reads the version every couple of seconds
    while True:
        extra = ask(client, "How long does the ZB-3000 fly?").model_extra["loraplex"]
        if extra["router_version"] == "v1" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert (extra["router_version"], extra["route"]) == ("v1", "rag")
    result = runner.invoke(app, ["router", "rollback", "--tenant", "rt-cal", "-c", str(config)])
    assert result.exit_code == 0 and "thresholds" in result.output
