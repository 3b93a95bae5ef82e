"""Canaries and drift through the real gateway (fake vLLM): splitting, judging, rolling back,
and gauges that move when the prompts change topic."""

from __future__ import annotations

import re

import pytest

from serve.monitor.canary import ArmStats, CanaryCriteria, Rollout, judge

JSON_PROMPTS = [
    "Extract the person as JSON",
    "Give me the person in this text as json",
    "Turn this into JSON: the person and their age",
    "Extract person fields as json",
]


def gauge(gw, name: str, **labels: str) -> float | None:
    text = gw.client.get("/metrics", headers=gw.admin).text
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    found = re.search(rf"^{name}\{{{re.escape(want)}\}} (\S+)$", text, re.M)
    return float(found.group(1)) if found else None


@pytest.fixture
def colours(loop_gateway, make, tmp_path):
    """Tenant acme with adapter colours: v1 prod, v2 registered beside it."""
    gw = loop_gateway
    auth = gw.tenant("acme")
    gw.register(make(tmp_path / "v1", seed=1), "colours", "acme", exemplars=JSON_PROMPTS)
    gw.register(make(tmp_path / "v2", seed=2), "colours", "acme", promote=False)
    return gw, auth


def promote(gw, version: int, **body):
    return gw.client.post(
        "/v1/adapters/colours/promote", json={"version": version, **body}, headers=gw.admin
    )


def served(gw, auth, user: str | None = None, model: str = "colours") -> str:
    body = {"user": user} if user else {}
    resp = gw.chat(auth, "Name three colours", model=model, **body)
    assert resp.status_code == 200, resp.text
    return resp.json()["loraplex"]["adapter"]


def test_a_canary_takes_its_share_sticky_per_user_then_completes(colours) -> None:
    gw, auth = colours
    resp = promote(gw, 2, canary=50)
    assert resp.status_code == 200, resp.text
    assert "takes 50%" in resp.json()["notes"][0]
    assert gw.replicas.held == {"colours-v1", "colours-v2"}  # both versions stay loaded
    first = {f"user-{i}": served(gw, auth, f"user-{i}") for i in range(24)}
    assert set(first.values()) == {"colours@1", "colours@2"}
    assert 6 <= list(first.values()).count("colours@2") <= 18
    again = {user: served(gw, auth, user) for user in first}
    assert again == first  # sticky: the same user sees the same version
    canary_user = next(u for u, ref in first.items() if ref == "colours@2")
    assert served(gw, auth, canary_user, model="colours@1") == "colours@1"  # pinned
    listing = gw.client.get("/v1/adapters/colours", headers=gw.admin).json()["versions"]
    assert [(v["version"], v["prod"], v["canary"]) for v in listing] == [
        (1, True, None),
        (2, False, 50),
    ]

    gw.tick()
    report = gw.client.get("/v1/adapters/colours/canary", headers=gw.admin).json()
    arms = report["canary"]["arms"]
    assert arms["canary"]["requests"] == 2 * list(first.values()).count("colours@2")
    assert arms["prod"]["requests"] + arms["canary"]["requests"] == 49
    assert arms["canary"]["error_rate"] == 0.0 and report["canary"]["verdict"]["worse"] is False
    assert gauge(gw, "loraplex_canary_percent", adapter="colours") == 50

    done = promote(gw, 2)
    assert done.status_code == 200 and done.json()["notes"] == ["canary colours@2 completed"]
    assert {served(gw, auth, u) for u in first} == {"colours@2"}
    assert gw.replicas.held == {"colours-v2"}
    history = gw.client.get("/v1/adapters/colours/canary", headers=gw.admin).json()["history"]
    assert [c["state"] for c in history] == ["completed"]


def test_a_failing_canary_is_rolled_back_automatically(colours) -> None:
    gw, auth = colours
    gw.engine.fail = {"colours-v2"}  # the canary version answers with errors
    assert promote(gw, 2, canary=50, criteria={"min_requests": 3}).status_code == 200
    errors = 0
    for i in range(40):
        resp = gw.chat(auth, "Name three colours", model="colours", user=f"u{i}")
        errors += resp.status_code == 503
        if errors >= 3:
            break
    assert errors == 3
    assert gw.tick()["canaries"] == ["colours@2"]
    report = gw.client.get("/v1/adapters/colours/canary", headers=gw.admin).json()["canary"]
    assert report["state"] == "rolled_back" and "error rate 100%" in report["reason"]
    assert report["arms"]["canary"]["errors"] == 3
    assert gw.replicas.held == {"colours-v1"}  # the canary version was unloaded
    assert {served(gw, auth, f"u{i}") for i in range(10)} == {"colours@1"}
    assert gw.state.metrics.canary_rollbacks.labels("colours")._value.get() == 1
    assert gauge(gw, "loraplex_canary_percent", adapter="colours") == 0


def test_stopping_a_canary_by_hand(colours) -> None:
    gw, auth = colours
    promote(gw, 2, canary=99)
    resp = gw.client.post("/v1/adapters/colours/rollback", headers=gw.admin).json()
    assert resp["adapter"]["version"] == 1 and resp["notes"] == [
        "canary colours@2 stopped; prod stays v1"
    ]
    assert {served(gw, auth, f"u{i}") for i in range(10)} == {"colours@1"}


def test_canary_bad_input(colours) -> None:
    gw, _ = colours

    def code(resp):
        return resp.status_code, resp.json()["error"]["code"]

    for pct in (0, 100, -1):
        assert code(promote(gw, 2, canary=pct)) == (400, "invalid_canary_percent")
    assert code(promote(gw, 1, canary=10)) == (409, "already_prod")
    assert code(promote(gw, 9, canary=10)) == (404, "adapter_not_found")
    assert code(promote(gw, 2, canary=10, criteria={"patience": 3})) == (
        400,
        "invalid_canary_criteria",
    )
    assert code(promote(gw, 2, canary=10, criteria={"min_requests": 0})) == (
        400,
        "invalid_canary_criteria",
    )
    assert code(promote(gw, 2, criteria={"min_requests": 5})) == (400, "criteria_without_canary")
    registry = gw.services.registry
    registry.record_eval(registry.get("colours@2").digest, {"go": False, "checks": {"task": False}})
    assert code(promote(gw, 2, canary=10)) == (409, "gates_failed")
    assert promote(gw, 2, canary=10, force=True).status_code == 200
    assert code(gw.client.get("/v1/adapters/nope/canary", headers=gw.admin)) == (
        404,
        "adapter_not_found",
    )


def test_drift_gauges_move_when_the_topic_changes(colours) -> None:
    gw, auth = colours
    for prompt in JSON_PROMPTS:
        assert gw.chat(auth, prompt, model="colours").status_code == 200
    gw.tick()
    on_topic = gauge(gw, "loraplex_drift_input", tenant="acme", adapter="colours")
    similar = gauge(gw, "loraplex_drift_exemplar_similarity", tenant="acme", adapter="colours")
    assert on_topic is not None and on_topic < 0.1 and similar > 0.8
    for _ in range(3):
        for prompt in ("Will it rain tomorrow?", "weather in France", "rain or sun this weekend"):
            gw.chat(auth, prompt, model="colours")
    gw.tick()
    moved = gauge(gw, "loraplex_drift_input", tenant="acme", adapter="colours")
    assert moved > on_topic + 0.3
    assert (
        gauge(gw, "loraplex_drift_exemplar_similarity", tenant="acme", adapter="colours")
        < similar - 0.3
    )
    # knowledge gaps: rag with nothing to find
    gw.chat(auth, "What does the zorblax cost?", model="auto", loraplex={"route": "rag"})
    gw.tick()
    assert gauge(gw, "loraplex_knowledge_gap_rate", tenant="acme") == 1.0


def test_monitor_endpoint_warns_past_the_policys_thresholds(colours) -> None:
    gw, auth = colours
    policy = {
        "drift": {"input_drift": 0.2, "min_requests": 3, "min_feedback": 1, "downvote_rate": 0.4}
    }
    assert (
        gw.client.put("/v1/tenants/acme/policy", json=policy, headers=gw.admin).status_code == 200
    )
    ids = [gw.chat(auth, "Will it rain tomorrow?", model="colours").json()["id"] for _ in range(3)]
    for cid in ids:
        gw.client.post("/v1/feedback", json={"id": cid, "rating": "down"}, headers=auth)
    body = gw.client.get("/v1/monitor?tenant=acme", headers=gw.admin).json()
    got = {(w["metric"], w["adapter"]) for w in body["warnings"]}
    assert got == {
        ("input_drift", "colours"),
        ("downvote_rate", "colours"),
        ("downvote_rate", None),
    }
    assert all(w["tenant"] == "acme" for w in body["warnings"])
    assert (
        gw.client.get(
            "/v1/monitor", headers=gw.admin.copy() | {"Authorization": "Bearer x"}
        ).status_code
        == 401
    )


def test_judge_and_criteria() -> None:
    c = CanaryCriteria(min_requests=10)
    prod = ArmStats(
        "a@1",
        requests=100,
        errors=1,
        latency_p50_ms=100,
        feedback=10,
        down=1,
        grounded_n=10,
        grounded_mean=0.8,
    )
    fine = ArmStats(
        "a@2",
        requests=10,
        errors=0,
        latency_p50_ms=120,
        feedback=6,
        down=1,
        grounded_n=6,
        grounded_mean=0.75,
    )
    assert judge(prod, fine, c).ready and not judge(prod, fine, c).worse
    early = ArmStats("a@2", requests=9, errors=9)
    assert not judge(prod, early, c).ready and not judge(prod, early, c).worse
    bad = ArmStats(
        "a@2",
        requests=10,
        errors=2,
        latency_p50_ms=200,
        feedback=5,
        down=3,
        grounded_n=5,
        grounded_mean=0.5,
    )
    reasons = judge(prod, bad, c).reasons
    assert [r.split(" ")[0] for r in reasons] == ["error", "median", "down-vote", "mean"]
    with pytest.raises(Exception, match="max_latency_ratio"):
        CanaryCriteria(max_latency_ratio=0.5)


class _Registry:
    def canaries(self, running=False):
        return []


def test_rollout_is_sticky_and_takes_its_share() -> None:
    from datetime import UTC, datetime

    from adapters.canary import Canary

    canary = Canary(7, "a", 2, 1, 10, {}, "running", None, datetime.now(UTC))
    rollout = Rollout(_Registry(), seed=0)
    users = [f"user-{i}" for i in range(5000)]
    takes = [rollout.takes(canary, u) for u in users]
    assert 0.08 < sum(takes) / len(users) < 0.12
    assert takes == [rollout.takes(canary, u) for u in users]
    anonymous = sum(rollout.takes(canary, None) for _ in range(5000)) / 5000
    assert 0.08 < anonymous < 0.12
