"""Canaries in the registry: who may start one, and how promote, rollback and remove end it."""

from __future__ import annotations

import pytest

from adapters.errors import AdapterError


@pytest.fixture
def two(registry, make, tmp_path):
    """support@1 (prod) and support@2 (not)."""
    registry.register(make(tmp_path / "a1", seed=1), "support", owner="acme")
    registry.register(make(tmp_path / "a2", seed=2), "support", owner="acme", promote=False)
    return registry


@pytest.mark.parametrize("percent", [0, 100, -5, 250, "10", 12.5, True])
def test_a_canary_takes_1_to_99_percent(two, percent) -> None:
    with pytest.raises(AdapterError) as exc:
        two.start_canary("support@2", percent)
    assert exc.value.code == "invalid_canary_percent" and exc.value.kind == "invalid"
    assert two.canary("support") is None


def test_start_replace_and_complete(two) -> None:
    first = two.start_canary("support@2", 10, criteria={"min_requests": 5})
    assert (first.ref, first.prod_ref, first.percent, first.state) == (
        "support@2",
        "support@1",
        10,
        "running",
    )
    assert first.criteria == {"min_requests": 5}
    assert two.canary("support") == first
    assert two.get("support").version == 1  # prod does not move
    again = two.start_canary("support@2", 30)
    assert two.canary("support").id == again.id and again.percent == 30
    history = two.canaries("support")
    assert [c.state for c in history] == ["cancelled", "running"]
    assert "replaced" in history[0].reason
    two.promote("support@2")
    done = two.canaries("support")[-1]
    assert done.state == "completed" and done.ended_at is not None and two.canary("support") is None
    assert two.get("support").version == 2


def test_what_a_canary_refuses(two, make, tmp_path) -> None:
    with pytest.raises(AdapterError, match="already prod") as exc:
        two.start_canary("support@1", 10)
    assert exc.value.kind == "conflict"
    with pytest.raises(AdapterError, match="no version 7"):
        two.start_canary("support@7", 10)
    with pytest.raises(AdapterError, match="NAME@VERSION"):
        two.start_canary("support", 10)
    with pytest.raises(AdapterError, match="no adapter named"):
        two.start_canary("nope@1", 10)
    two.record_eval(two.get("support@2").digest, {"go": False, "checks": {"task_loss": False}})
    with pytest.raises(AdapterError, match="NO-GO: task_loss") as exc:
        two.start_canary("support@2", 10)
    assert exc.value.code == "gates_failed" and "start the canary with force" in exc.value.message
    assert two.start_canary("support@2", 10, force=True).running


def test_promote_elsewhere_rollback_and_remove_end_it(two, make, tmp_path) -> None:
    two.register(make(tmp_path / "a3", seed=3), "support", owner="acme", promote=False)
    two.start_canary("support@2", 10)
    two.promote("support@3")
    assert two.canaries("support")[-1].state == "cancelled"
    assert "support@3 was promoted instead" in two.canaries("support")[-1].reason

    two.start_canary("support@2", 10)  # prod is 3 now
    assert two.canary("support").prod_version == 3
    two.rollback("support")
    assert two.canary("support") is None and "rolled back" in two.canaries("support")[-1].reason

    two.start_canary("support@3", 10)  # prod is 1 again
    two.remove("support@3")
    last = two.canaries("support")[-1]
    assert last.state == "cancelled" and "support@3 was removed" in last.reason

    two.start_canary("support@2", 10)
    assert two.end_canary("support", "rolled_back", "by hand", canary_id=999) is None
    ended = two.end_canary("support", "rolled_back", "by hand")
    assert ended.state == "rolled_back" and two.end_canary("support", "rolled_back", "x") is None
    two.remove("support")
    assert two.canaries() == []
