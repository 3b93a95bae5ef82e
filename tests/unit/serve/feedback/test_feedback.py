"""Feedback over HTTP, request records and captures, through the real gateway (fake vLLM)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from serve.feedback.tables import CompletionRow, FeedbackRow
from serve.monitor.tables import DriftBucketRow

SECRET = "zebra-quartz-7731 what is the capital of France? mail bob@example.com"


def age(gw, table, row_id: str, column: str, days: int) -> None:
    """Make a stored row `days` older."""
    with Session(gw.services.db) as s:
        row = s.get(table, row_id)
        setattr(row, column, getattr(row, column) - timedelta(days=days))
        s.commit()


def rows(gw, table):
    with Session(gw.services.db) as s:
        return list(s.scalars(select(table)))


def test_feedback_with_a_correction_is_stored_with_the_requests_facts(loop_gateway) -> None:
    gw = loop_gateway
    auth = gw.tenant("acme")
    answer = gw.chat(auth, "What is the capital of France?")
    assert answer.status_code == 200
    cid = answer.json()["id"]
    resp = gw.client.post(
        "/v1/feedback",
        json={"id": cid, "rating": "down", "correction": "Paris.", "comment": "too long"},
        headers=auth,
    )  # sent before the recorder's flush: the lookup flushes first
    assert resp.status_code == 201, resp.text
    card = resp.json()
    assert card["id"] == cid and card["rating"] == "down" and card["negative"] is True
    assert (card["route"], card["adapter"], card["router_version"]) == ("prompt", None, "explicit")
    assert card["correction"] == "Paris." and card["has_prompt"] is False  # capture is off
    again = gw.client.post("/v1/feedback", json={"id": cid, "rating": 4}, headers=auth).json()
    assert again["rating"] == 4 and again["score"] == 0.75 and again["negative"] is False
    listed = gw.client.get("/v1/feedback", headers=auth).json()["data"]
    assert [f["id"] for f in listed] == [cid] and "tenant" not in listed[0]
    assert gw.state.metrics.feedback.labels("acme", "down")._value.get() == 1


def test_bad_feedback_gets_clear_errors(loop_gateway) -> None:
    gw = loop_gateway
    acme, globex = gw.tenant("acme", {"retention_days": 1}), gw.tenant("globex")
    cid = gw.chat(acme, "hello").json()["id"]
    other = gw.chat(globex, "hello").json()["id"]

    def post(body, auth=acme):
        resp = gw.client.post("/v1/feedback", json=body, headers=auth)
        return resp.status_code, resp.json().get("error", {}).get("code")

    assert post({"id": "chatcmpl-unknown", "rating": "up"}) == (404, "completion_not_found")
    assert post({"id": other, "rating": "up"}) == (404, "completion_not_found")  # foreign
    for rating in (0, 6, "meh", 2.5, True, None):
        assert post({"id": cid, "rating": rating}) == (400, "invalid_rating"), rating
    assert post({"id": cid}) == (400, "invalid_rating")  # missing
    assert post({"id": cid, "rating": "up", "stars": 3}) == (400, "invalid_feedback")
    assert post({"id": cid, "rating": "up", "correction": "x" * 8001}) == (
        413,
        "correction_too_large",
    )
    assert post({"id": cid, "rating": "up", "comment": "x" * 2001}) == (413, "comment_too_large")
    assert post({"id": cid, "rating": "up", "messages": [{"role": "robot", "content": "x"}]}) == (
        400,
        "invalid_feedback",
    )
    # Expired: older than the tenant's retention period.
    age(gw, CompletionRow, cid, "created_at", days=2)
    assert post({"id": cid, "rating": "up"}) == (404, "completion_not_found")
    assert gw.client.post("/v1/feedback", json={"id": cid, "rating": "up"}).status_code == 401
    gw.state.recorder.flush()


def test_listing_and_deleting_by_tenant_and_admin(loop_gateway) -> None:
    gw = loop_gateway
    acme, globex = gw.tenant("acme"), gw.tenant("globex")
    mine = gw.chat(acme, "hello").json()["id"]
    theirs = gw.chat(globex, "hello").json()["id"]
    for auth, cid in ((acme, mine), (globex, theirs)):
        assert (
            gw.client.post("/v1/feedback", json={"id": cid, "rating": 5}, headers=auth).status_code
            == 201
        )
    everyone = gw.client.get("/v1/feedback", headers=gw.admin).json()["data"]
    assert {(f["tenant"], f["id"]) for f in everyone} == {("acme", mine), ("globex", theirs)}
    only = gw.client.get("/v1/feedback?tenant=globex", headers=gw.admin).json()["data"]
    assert [f["id"] for f in only] == [theirs]
    refused = gw.client.get("/v1/feedback?tenant=globex", headers=acme)
    assert refused.status_code == 403
    assert gw.client.delete(f"/v1/feedback/{theirs}", headers=acme).status_code == 404
    assert gw.client.delete(f"/v1/feedback/{mine}", headers=acme).json()["deleted"] is True
    assert gw.client.delete(f"/v1/feedback/{mine}", headers=acme).status_code == 404
    assert gw.client.delete(f"/v1/feedback/{theirs}", headers=gw.admin).status_code == 200
    assert gw.client.get("/v1/feedback", headers=gw.admin).json()["data"] == []
    assert gw.client.get("/v1/feedback?since=yesterday", headers=gw.admin).status_code == 400


def test_capture_off_keeps_no_text_anywhere(loop_gateway) -> None:
    gw = loop_gateway
    auth = gw.tenant("quiet")
    assert gw.chat(auth, SECRET).status_code == 200
    with gw.client.stream(
        "POST",
        "/v1/chat/completions",
        headers=auth,
        json={
            "model": "tiny-base",
            "stream": True,
            "messages": [{"role": "user", "content": SECRET}],
        },
    ) as resp:
        assert resp.status_code == 200 and "[DONE]" in resp.read().decode()
    gw.tick()
    [a, b] = rows(gw, CompletionRow)
    assert a.messages is None and a.answer is None and a.capture == "off"
    assert b.id.startswith("chatcmpl-") and b.status == 200
    assert rows(gw, DriftBucketRow)[0].vec_n == 2  # drift without text: the embedding sum
    gw.services.db.dispose()
    data_dir = gw.services.settings.data_dir
    for path in data_dir.rglob("*"):
        if path.is_file():
            assert b"zebra-quartz-7731" not in path.read_bytes(), path


def test_capture_redacted_and_full(loop_gateway) -> None:
    gw = loop_gateway
    gw.engine.answer = "Paris. Write to alice@example.org"
    redacted = gw.tenant("red", {"capture": "redacted"})
    full = gw.tenant("full", {"capture": "full"})
    gw.chat(redacted, SECRET)
    with gw.client.stream(
        "POST",
        "/v1/chat/completions",
        headers=full,
        json={
            "model": "tiny-base",
            "stream": True,
            "messages": [{"role": "user", "content": SECRET}],
        },
    ) as resp:
        resp.read()
    gw.state.recorder.flush()
    by = {r.capture: r for r in rows(gw, CompletionRow)}
    assert by["redacted"].messages == [
        {"role": "user", "content": SECRET.replace("bob@example.com", "[EMAIL]")}
    ]
    assert by["redacted"].answer == "Paris. Write to [EMAIL]"
    assert by["full"].messages[0]["content"] == SECRET
    assert by["full"].answer.strip() == "Paris. Write to alice@example.org"
    fb = gw.client.post(
        "/v1/feedback",
        headers=redacted,
        json={
            "id": by["redacted"].id,
            "rating": "down",
            "correction": "Paris; ask carol@example.net",
        },
    )
    assert fb.json()["correction"] == "Paris; ask [EMAIL]" and fb.json()["has_prompt"] is True


def test_deleting_a_tenant_deletes_its_records_and_feedback(loop_gateway) -> None:
    gw = loop_gateway
    doomed, kept = gw.tenant("doomed", {"capture": "full"}), gw.tenant("kept")
    cid = gw.chat(doomed, SECRET).json()["id"]
    gw.client.post("/v1/feedback", json={"id": cid, "rating": "up"}, headers=doomed)
    gw.chat(kept, "hello")
    gw.tick()
    done = gw.client.delete("/v1/tenants/doomed", headers=gw.admin).json()
    assert done["records"] == {"feedback": 1, "completions": 1, "drift_buckets": 1}
    kept_id = gw.services.tenants.get("kept").id
    assert {r.tenant_id for r in rows(gw, CompletionRow)} == {kept_id}
    assert rows(gw, FeedbackRow) == [] and {r.tenant_id for r in rows(gw, DriftBucketRow)} == {
        kept_id
    }


def test_retention_purges_old_records(loop_gateway) -> None:
    gw = loop_gateway
    auth = gw.tenant("acme", {"retention_days": 7})
    old, new = (gw.chat(auth, "hello").json()["id"] for _ in range(2))
    gw.client.post("/v1/feedback", json={"id": old, "rating": "up"}, headers=auth)
    age(gw, CompletionRow, old, "created_at", days=8)
    age(gw, FeedbackRow, old, "completion_at", days=8)
    counts = gw.services.feedback.purge(gw.services.tenants.list())
    assert counts == {"feedback": 1, "completions": 1, "drift_buckets": 0}
    assert [r.id for r in rows(gw, CompletionRow)] == [new]


def test_records_are_written_at_once_and_feedback_waits_for_another_gateways(
    loop_gateway,
) -> None:
    import threading
    import time

    from sqlalchemy import delete
    from sqlalchemy.orm import make_transient

    from serve.monitor.loop import FEEDBACK_LOOKUP_WAIT_S

    gw = loop_gateway
    auth = gw.tenant("acme")
    cid = gw.chat(auth, "What is the capital of France?").json()["id"]
    # Written without a tick of the loop (its interval here is an hour), within a moment.
    deadline = time.monotonic() + 2
    while cid not in {r.id for r in rows(gw, CompletionRow)}:
        assert time.monotonic() < deadline, "the request record was not written"
        time.sleep(0.02)
    # The same record as if another gateway answered and its write lands 0.3 s from now.
    with Session(gw.services.db) as s:
        row = s.get(CompletionRow, cid)
        s.expunge(row)
        s.execute(delete(CompletionRow).where(CompletionRow.id == cid))
        s.commit()
    make_transient(row)

    def land() -> None:
        with Session(gw.services.db) as s:
            s.add(row)
            s.commit()

    threading.Timer(0.3, land).start()
    started = time.monotonic()
    resp = gw.client.post("/v1/feedback", json={"id": cid, "rating": "down"}, headers=auth)
    assert resp.status_code == 201, resp.text
    assert 0.25 <= time.monotonic() - started < FEEDBACK_LOOKUP_WAIT_S + 0.5
    # An id nobody issued: a 404 once the wait is over.
    started = time.monotonic()
    resp = gw.client.post(
        "/v1/feedback", json={"id": "chatcmpl-nope", "rating": "up"}, headers=auth
    )
    assert resp.status_code == 404
    assert FEEDBACK_LOOKUP_WAIT_S <= time.monotonic() - started < FEEDBACK_LOOKUP_WAIT_S + 1
