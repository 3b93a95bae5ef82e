"""Quotas per tenant: requests and tokens per minute, open streams, a token budget per period;
counted in the shared database, refused with 429 + Retry-After, and free when unset."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from sqlalchemy import event

from serve.database import make_engine, migrate
from serve.errors import ServiceError
from serve.quotas import QuotaLimiter, period_window
from serve.tenants import Tenant, TenantPolicy, TenantService, parse_policy

# 2026-03-10 12:00:30 UTC: 30 s into a minute, a Tuesday.
T0 = datetime(2026, 3, 10, 12, 0, 30, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db(tmp_path):
    url = f"sqlite:///{tmp_path / 'q.db'}"
    migrate(url)
    return make_engine(url)


def _tenant(db, name: str = "acme", **quotas) -> Tenant:
    tenant, _ = TenantService(db).create(name, {"quotas": quotas})
    return tenant


def _statements(engine) -> list[str]:
    seen: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    return seen


def test_requests_per_minute_refuses_the_next_one_until_the_minute_ends(db) -> None:
    clock = Clock()
    limiter = QuotaLimiter(db, clock=clock)
    tenant = _tenant(db, requests_per_minute=3)
    for _ in range(3):
        limiter.admit_sync(tenant, stream=False)
    with pytest.raises(ServiceError) as exc:
        limiter.admit_sync(tenant, stream=False)
    err = exc.value
    assert err.kind == "rate_limited" and err.code == "requests_per_minute_exceeded"
    assert err.param == "quotas.requests_per_minute" and err.retry_after == 30
    assert "3 requests per minute" in err.message and "retry in 30 s" in err.message
    assert limiter.usage(tenant.id)["rpm"] == 3  # a refused request is not counted
    clock.now += 30  # the next minute
    limiter.admit_sync(tenant, stream=False)
    assert limiter.usage(tenant.id)["rpm"] == 1


def test_two_replicas_share_one_count_and_a_full_minute_costs_no_query(db) -> None:
    clock = Clock()
    a, b = QuotaLimiter(db, clock=clock), QuotaLimiter(db, clock=clock)
    tenant = _tenant(db, requests_per_minute=2)
    a.admit_sync(tenant, stream=False)
    b.admit_sync(tenant, stream=False)
    with pytest.raises(ServiceError, match="2 requests per minute"):
        a.admit_sync(tenant, stream=False)
    # b counted the second request and saw the minute full: it refuses without asking again.
    seen = _statements(db)
    for _ in range(5):
        with pytest.raises(ServiceError):
            b.admit_sync(tenant, stream=False)
    assert seen == []
    # A raised limit is a new key: counted again, and let through.
    raised = Tenant(tenant.name, parse_policy({"quotas": {"requests_per_minute": 3}}), id=tenant.id)
    b.admit_sync(raised, stream=False)
    assert b.usage(tenant.id)["rpm"] == 3


def test_tokens_per_minute_count_the_usage_of_answers(db) -> None:
    clock = Clock()
    limiter = QuotaLimiter(db, clock=clock)
    tenant = _tenant(db, tokens_per_minute=100)
    first = limiter.admit_sync(tenant, stream=False)
    first.tokens = 60
    limiter.finish_sync(first)
    second = limiter.admit_sync(tenant, stream=False)  # 60 < 100: let through
    second.tokens = 45
    limiter.finish_sync(second)
    assert limiter.usage(tenant.id)["tpm"] == 105  # the last one may go over; then no more
    with pytest.raises(ServiceError) as exc:
        limiter.admit_sync(tenant, stream=False)
    assert exc.value.code == "tokens_per_minute_exceeded" and exc.value.retry_after == 30
    clock.now += 31
    limiter.admit_sync(tenant, stream=False)


def test_a_token_budget_lasts_its_calendar_period(db) -> None:
    clock = Clock()
    limiter = QuotaLimiter(db, clock=clock)
    tenant = _tenant(db, token_budget=50, budget_period="day")
    spent = limiter.admit_sync(tenant, stream=False)
    spent.tokens = 50
    limiter.finish_sync(spent)
    clock.now += 3600  # an hour later, the same day
    with pytest.raises(ServiceError) as exc:
        limiter.admit_sync(tenant, stream=False)
    assert exc.value.code == "token_budget_exceeded" and exc.value.param == "quotas.token_budget"
    assert exc.value.retry_after == 11 * 3600 - 30  # until midnight UTC
    assert "50 tokens per day" in exc.value.message
    clock.now += 11 * 3600
    limiter.admit_sync(tenant, stream=False)


def test_concurrent_streams_are_leases_freed_at_the_end_or_when_they_expire(db) -> None:
    clock = Clock()
    limiter = QuotaLimiter(db, stream_lease_s=600, clock=clock)
    tenant = _tenant(db, concurrent_streams=1)
    open_ = limiter.admit_sync(tenant, stream=True)
    limiter.admit_sync(tenant, stream=False)  # not a stream: not limited by it
    with pytest.raises(ServiceError) as exc:
        limiter.admit_sync(tenant, stream=True)
    assert exc.value.code == "concurrent_streams_exceeded" and exc.value.retry_after == 1
    limiter.finish_sync(open_)
    assert limiter.usage(tenant.id)["streams"] == 0
    lost = limiter.admit_sync(tenant, stream=True)  # its gateway dies: never finished
    assert lost.stream_id is not None
    clock.now += 400
    limiter.renew_sync(lost)  # a long stream keeps its slot
    clock.now += 400
    with pytest.raises(ServiceError):
        limiter.admit_sync(tenant, stream=True)
    clock.now += 601
    limiter.admit_sync(tenant, stream=True)


def test_a_request_refused_by_rpm_gives_its_stream_slot_back(db) -> None:
    limiter = QuotaLimiter(db, clock=Clock())
    tenant = _tenant(db, requests_per_minute=1, concurrent_streams=5)
    limiter.admit_sync(tenant, stream=True)
    with pytest.raises(ServiceError, match="requests per minute"):
        limiter.admit_sync(tenant, stream=True)
    assert limiter.usage(tenant.id)["streams"] == 1


def test_without_quotas_nothing_is_asked_of_the_database(db) -> None:
    limiter = QuotaLimiter(db)
    tenant = _tenant(db)
    seen = _statements(db)
    assert asyncio.run(limiter.admit(tenant, stream=True)) is None
    asyncio.run(limiter.finish(None))
    assert seen == []
    assert not TenantPolicy().quotas.active


def test_old_windows_are_pruned(db) -> None:
    clock = Clock()
    limiter = QuotaLimiter(db, clock=clock)
    tenant = _tenant(db, requests_per_minute=5, tokens_per_minute=1000)
    a = limiter.admit_sync(tenant, stream=False)
    a.tokens = 10
    limiter.finish_sync(a)
    clock.now += 3600
    b = limiter.admit_sync(tenant, stream=False)
    b.tokens = 1
    limiter.finish_sync(b)
    with db.connect() as conn:
        rows = conn.exec_driver_sql("SELECT name, used FROM quota_usage ORDER BY name").all()
    assert [tuple(r) for r in rows] == [("rpm", 1), ("tpm", 1)]


def test_periods_are_utc_calendar_periods() -> None:
    def day(ts: float) -> str:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")

    assert [day(t) for t in period_window("hour", T0)] == ["2026-03-10 12:00", "2026-03-10 13:00"]
    assert [day(t) for t in period_window("week", T0)] == ["2026-03-09 00:00", "2026-03-16 00:00"]
    assert [day(t) for t in period_window("month", T0)] == ["2026-03-01 00:00", "2026-04-01 00:00"]
    feb = datetime(2028, 2, 10, tzinfo=UTC).timestamp()
    assert day(period_window("month", feb)[1]) == "2028-03-01 00:00"


def test_policy_rejects_bad_quotas() -> None:
    with pytest.raises(ServiceError, match="quotas.requests_per_minute"):
        parse_policy({"quotas": {"requests_per_minute": 0}})
    with pytest.raises(ServiceError, match="quotas.budget_period"):
        parse_policy({"quotas": {"budget_period": "year"}})
    assert parse_policy({"quotas": {"concurrent_streams": 2}}).quotas.active


# -- through the gateway --------------------------------------------------------------------


def test_the_gateway_answers_429_with_retry_after_before_calling_the_engine(loop_gateway) -> None:
    gw = loop_gateway
    gw.state.services.quotas.clock = Clock()
    auth = gw.tenant("acme", {"quotas": {"requests_per_minute": 2}})
    assert [gw.chat(auth, "hi").status_code for _ in range(2)] == [200, 200]
    calls = len(gw.engine.calls)
    resp = gw.chat(auth, "hi")
    assert resp.status_code == 429 and resp.headers["retry-after"] == "30"
    error = resp.json()["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "requests_per_minute_exceeded"
    assert error["param"] == "quotas.requests_per_minute" and "retry in 30 s" in error["message"]
    assert len(gw.engine.calls) == calls  # the engine was never asked
    other = gw.tenant("other")  # quotas are per tenant
    assert gw.chat(other, "hi").status_code == 200


def test_the_gateway_counts_tokens_of_streams_and_frees_their_slots(loop_gateway) -> None:
    gw = loop_gateway
    gw.state.services.quotas.clock = Clock()
    auth = gw.tenant("acme", {"quotas": {"tokens_per_minute": 18, "concurrent_streams": 1}})
    tenant_id = gw.services.tenants.get("acme").id
    streamed = gw.chat(auth, "hi", stream=True)
    assert streamed.status_code == 200 and streamed.text.rstrip().endswith("[DONE]")
    assert gw.services.quotas.usage(tenant_id) == {"tpm": 9, "streams": 0}
    assert gw.chat(auth, "hi").status_code == 200  # 9 < 18
    assert gw.services.quotas.usage(tenant_id)["tpm"] == 18
    resp = gw.chat(auth, "hi", stream=True)
    assert resp.status_code == 429 and resp.json()["error"]["code"] == "tokens_per_minute_exceeded"
