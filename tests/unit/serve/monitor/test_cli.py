"""The production loop from the command line: data from-feedback, monitor, canaries."""

from __future__ import annotations

import json


def test_data_from_feedback_builds_a_dataset_naming_its_feedback(
    loop_gateway, cli, tmp_path
) -> None:
    gw = loop_gateway
    auth = gw.tenant("acme", {"capture": "redacted"})
    ids = []
    for q in ("What is the capital of France?", "Which river runs through Paris?"):
        cid = gw.chat(auth, q).json()["id"]
        fix = {"id": cid, "rating": "down", "correction": f"The right answer to: {q}"}
        assert gw.client.post("/v1/feedback", json=fix, headers=auth).status_code == 201
        ids.append(cid)
    out = tmp_path / "next"
    result = cli("data", "from-feedback", "--tenant", "acme", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "2 feedback used, from (base model) (2)" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["lineage"]["feedback_ids"]) == sorted(ids)
    assert manifest["lineage"]["tenant"] == "acme" and manifest["lineage"]["preference_pairs"] == 2
    assert (out / "train.jsonl").is_file()
    # adapters filter, and a tenant that captures nothing
    none = cli(
        "data",
        "from-feedback",
        "--tenant",
        "acme",
        "--adapter",
        "colours",
        "--out",
        str(tmp_path / "x"),
    )
    assert none.exit_code == 2 and "no feedback from tenant 'acme' on colours" in none.output
    quiet = gw.tenant("quiet")
    cid = gw.chat(quiet, "hello there").json()["id"]
    gw.client.post(
        "/v1/feedback", json={"id": cid, "rating": "down", "correction": "Hi."}, headers=quiet
    )
    refused = cli("data", "from-feedback", "--tenant", "quiet", "--out", str(tmp_path / "q"))
    assert refused.exit_code == 2 and "capture is off" in refused.output
    bad = cli(
        "data",
        "from-feedback",
        "--tenant",
        "acme",
        "--since",
        "last week",
        "--out",
        str(tmp_path / "y"),
    )
    assert bad.exit_code == 2 and "--since" in bad.output


def test_monitor_prints_a_table_json_and_a_plot(loop_gateway, cli, tmp_path) -> None:
    gw = loop_gateway
    auth = gw.tenant("acme")
    for _ in range(3):
        gw.chat(auth, "Will it rain tomorrow?")
    gw.tick()
    table = cli("monitor", "--tenant", "acme")
    assert table.exit_code == 0, table.output
    assert "(base model)" in table.output and "prompt 100%" in table.output
    data = json.loads(cli("monitor", "--json").output)
    assert [t["tenant"] for t in data["tenants"]] == ["acme"] and data["tenants"][0][
        "requests"
    ] == 3
    png = tmp_path / "trends.png"
    plotted = cli("monitor", "--plot", str(png), "--window-hours", "2")
    assert plotted.exit_code == 0 and png.read_bytes()[:4] == b"\x89PNG"
    assert cli("monitor", "--tenant", "nobody").exit_code == 2


def test_canary_commands(loop_gateway, cli, make, tmp_path) -> None:
    gw = loop_gateway
    gw.tenant("acme")
    gw.register(make(tmp_path / "v1", seed=1), "colours", "acme")
    gw.register(make(tmp_path / "v2", seed=2), "colours", "acme", promote=False)
    assert "has had no canary" in cli("adapters", "canary", "colours").output
    refused = cli("adapters", "promote", "colours@2", "--canary", "0")
    assert refused.exit_code == 2 and "1 to 99 percent" in refused.output
    orphan = cli("adapters", "promote", "colours@2", "--min-requests", "5")
    assert orphan.exit_code == 2 and "add --canary" in orphan.output
    started = cli("adapters", "promote", "colours@2", "--canary", "20", "--min-requests", "5")
    assert started.exit_code == 0, started.output
    assert "canary colours@2 takes 20%" in started.output and "prod ->" not in started.output
    assert "canary 20%" in cli("adapters", "list").output
    shown = cli("adapters", "canary", "colours")
    assert shown.exit_code == 0 and "canary colours@2 vs prod colours@1: 20%" in shown.output
    assert "verdict: waiting (0/5 requests)" in shown.output
    report = json.loads(cli("adapters", "canary", "colours", "--json").output)
    assert report["canary"]["criteria"]["min_requests"] == 5
    stopped = cli("adapters", "rollback", "colours")
    assert stopped.exit_code == 0 and "canary colours@2 stopped; prod stays v1" in stopped.output
