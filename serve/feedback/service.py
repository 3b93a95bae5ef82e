"""Feedback on chat completions, and the request records it refers to.

A tenant rates one of its own completions by the completion's `id` (`up`/`down`, or 1 to 5),
optionally with a correction (the answer that should have been given), a comment, and the
prompt messages (needed to learn from a correction when the tenant does not capture prompts).
The feedback is stored with the facts of that request (route, adapter version, router version,
source ids). Text in feedback goes through the PII pass (`training.pii`) unless the tenant's
policy captures in full. At most one feedback per completion: posting again replaces it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError
from sqlalchemy import CursorResult, Engine, delete, select
from sqlalchemy.orm import Session

from serve.errors import ServiceError
from serve.feedback.tables import CompletionRow, FeedbackRow
from serve.tenants import Tenant
from training.pii import redact

MAX_COMMENT_CHARS = 2000
LOOKUP_EVERY_S = 0.05  # how often a completion not found yet is looked up again
MAX_MESSAGES_CHARS = 64_000


def utcnow() -> datetime:
    """Now, in UTC (every stored time is UTC; SQLite keeps no zone)."""
    return datetime.now(UTC)


def aware(when: datetime) -> datetime:
    """`when` with its UTC zone back (SQLite returns naive datetimes)."""
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


class FeedbackMessage(BaseModel):
    """One prompt message carried by a feedback (OpenAI shape, text content only)."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant"]
    content: str


class FeedbackBody(BaseModel):
    """`POST /v1/feedback`."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=128, description="The chat completion's `id`.")
    rating: Literal["up", "down"] | StrictInt = Field(description="'up', 'down', or 1 to 5.")
    correction: str | None = Field(None, description="The answer that should have been given.")
    comment: str | None = None
    messages: list[FeedbackMessage] | None = Field(
        None, description="The prompt messages (for tenants that do not capture prompts)."
    )


@dataclass(frozen=True)
class Rating:
    """A rating as stored: its words, a score from 0 (worst) to 1 (best), and whether it is a
    down-vote (down, or 1-2 of 5)."""

    rating: str
    score: float
    negative: bool


def parse_rating(value: Any) -> Rating:
    """`up`, `down` or a whole number 1-5; a ServiceError that says so otherwise."""
    if value == "up":
        return Rating("up", 1.0, False)
    if value == "down":
        return Rating("down", 0.0, True)
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 5:
        return Rating(str(value), (value - 1) / 4, value <= 2)
    raise ServiceError(
        f"rating must be 'up', 'down' or a whole number from 1 to 5, got {value!r}",
        "invalid_rating",
        param="rating",
    )


def completion_not_found(completion_id: str) -> ServiceError:
    """The one answer for an id that is unknown, expired or another tenant's."""
    return ServiceError(
        f"no chat completion {completion_id!r} for this tenant: use the `id` of a completion "
        "this key received, within the tenant's retention period",
        "completion_not_found",
        "not_found",
        param="id",
    )


def _feedback_not_found(feedback_id: str) -> ServiceError:
    return ServiceError(
        f"no feedback on completion {feedback_id!r} for this tenant (`GET /v1/feedback` lists it)",
        "feedback_not_found",
        "not_found",
    )


def _text(messages: list[dict[str, Any]] | None) -> int:
    return sum(len(str(m.get("content") or "")) for m in messages or [])


def _redacted(text: str | None) -> str | None:
    return None if text is None else redact(text)[0]


class FeedbackService:
    """Completion records and feedback in the database, one tenant at a time."""

    def __init__(
        self,
        engine: Engine,
        *,
        max_correction_chars: int = 8000,
        before_lookup: Callable[[], object] | None = None,
        lookup_wait_s: float = 0.0,
    ) -> None:
        """`before_lookup` runs when a completion is not found at first (the gateway's recorder
        writes in batches: feedback sent right after its answer must still find it). Then, for
        up to `lookup_wait_s`, the lookup is repeated: the answer may have come from another
        gateway, whose record lands within its write interval."""
        self.engine = engine
        self.max_correction_chars = max_correction_chars
        self.before_lookup = before_lookup
        self.lookup_wait_s = lookup_wait_s

    # -- completions ----------------------------------------------------------------------------
    def completion(self, tenant: Tenant, completion_id: str) -> CompletionRow | None:
        """The tenant's own completion record, if it exists and is within retention."""
        row = self._completion(tenant, completion_id)
        if row is None and self.before_lookup is not None:
            self.before_lookup()
            row = self._completion(tenant, completion_id)
        deadline = time.monotonic() + self.lookup_wait_s
        while row is None and time.monotonic() < deadline:
            time.sleep(LOOKUP_EVERY_S)
            row = self._completion(tenant, completion_id)
        return row

    def _completion(self, tenant: Tenant, completion_id: str) -> CompletionRow | None:
        with Session(self.engine) as s:
            row = s.get(CompletionRow, completion_id)
            if row is None or row.tenant_id != tenant.id or row.status != 200:
                return None
            expires = aware(row.created_at) + timedelta(days=tenant.policy.retention_days)
            if expires < utcnow():
                return None
            s.expunge(row)
            return row

    # -- feedback -------------------------------------------------------------------------------
    def submit(self, tenant: Tenant, payload: dict[str, Any]) -> dict[str, Any]:
        """Store (or replace) the tenant's feedback on one of its completions."""
        try:
            body = FeedbackBody.model_validate(payload)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            if where.startswith("rating"):
                parse_rating(payload.get("rating"))  # raises with the accepted values
            raise ServiceError(
                f"invalid feedback: {where}: {first['msg']}", "invalid_feedback", param=where
            ) from None
        rating = parse_rating(body.rating)
        self._check_sizes(body)
        row = self.completion(tenant, body.id)
        if row is None:
            raise completion_not_found(body.id)
        messages = [m.model_dump() for m in body.messages] if body.messages else None
        correction, comment = body.correction, body.comment
        if tenant.policy.capture != "full":
            correction, comment = _redacted(correction), _redacted(comment)
            for m in messages or []:
                m["content"] = redact(m["content"])[0]
        with Session(self.engine) as s:
            fb = s.get(FeedbackRow, body.id) or FeedbackRow(id=body.id, tenant_id=tenant.id)
            fb.created_at = utcnow()
            fb.rating, fb.score, fb.negative = rating.rating, rating.score, rating.negative
            fb.correction = correction or None
            fb.comment = comment or None
            fb.messages = messages
            fb.route, fb.adapter, fb.router_version = row.route, row.adapter, row.router_version
            fb.source_ids = list(row.source_ids or [])
            fb.completion_at = row.created_at
            s.add(fb)
            s.commit()
            card = self._card(fb, has_prompt=bool(messages or row.messages))
        card.pop("tenant_id")
        return card

    def _check_sizes(self, body: FeedbackBody) -> None:
        limits = [
            ("correction", len(body.correction or ""), self.max_correction_chars),
            ("comment", len(body.comment or ""), MAX_COMMENT_CHARS),
            ("messages", _text([m.model_dump() for m in body.messages or []]), MAX_MESSAGES_CHARS),
        ]
        for field, size, limit in limits:
            if size > limit:
                raise ServiceError(
                    f"{field} is {size} characters; the limit is {limit}: send a shorter one",
                    f"{field}_too_large",
                    "too_large",
                    param=field,
                )

    def listing(
        self,
        tenant_id: str | None = None,
        *,
        adapter: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Feedback, newest first (one tenant's, or everyone's with None), each with its
        `tenant_id`; `adapter` is a NAME (every version) or NAME@N."""
        query = select(FeedbackRow).order_by(FeedbackRow.created_at.desc(), FeedbackRow.id)
        if tenant_id is not None:
            query = query.where(FeedbackRow.tenant_id == tenant_id)
        if adapter is not None:
            query = query.where(_adapter_filter(FeedbackRow.adapter, adapter))
        if since is not None:
            query = query.where(FeedbackRow.created_at >= since)
        with Session(self.engine) as s:
            rows = s.scalars(query.offset(offset).limit(limit)).all()
            return [self._card(r) for r in rows]

    def delete(self, tenant_id: str | None, feedback_id: str) -> dict[str, Any]:
        """Delete one feedback (the tenant's own; any with None, for the admin)."""
        with Session(self.engine) as s:
            row = s.get(FeedbackRow, feedback_id)
            if row is None or (tenant_id is not None and row.tenant_id != tenant_id):
                raise _feedback_not_found(feedback_id)
            s.delete(row)
            s.commit()
        return {"id": feedback_id, "object": "feedback", "deleted": True}

    def dataset_records(
        self, tenant_id: str, adapter: str | None = None, since: datetime | None = None
    ) -> list[dict[str, Any]]:
        """Feedback with what a dataset needs: its correction, the prompt (from the feedback,
        else the captured request) and the captured answer. Oldest first."""
        query = (
            select(FeedbackRow, CompletionRow)
            .join(CompletionRow, CompletionRow.id == FeedbackRow.id, isouter=True)
            .where(FeedbackRow.tenant_id == tenant_id)
            .order_by(FeedbackRow.created_at, FeedbackRow.id)
        )
        if adapter is not None:
            query = query.where(_adapter_filter(FeedbackRow.adapter, adapter))
        if since is not None:
            query = query.where(FeedbackRow.created_at >= since)
        out = []
        with Session(self.engine) as s:
            for fb, comp in s.execute(query).tuples():
                out.append(
                    {
                        "id": fb.id,
                        "rating": fb.rating,
                        "negative": fb.negative,
                        "correction": fb.correction,
                        "messages": fb.messages or (comp.messages if comp else None),
                        "answer": comp.answer if comp else None,
                        "capture": comp.capture if comp else None,
                        "adapter": fb.adapter,
                        "route": fb.route,
                        "created_at": aware(fb.created_at).isoformat(),
                        "completion_at": aware(fb.completion_at).isoformat(),
                    }
                )
        return out

    # -- tenants and retention ------------------------------------------------------------------
    def delete_tenant(self, tenant_id: str) -> dict[str, int]:
        """Delete every record, capture and feedback of the tenant with this id."""
        from serve.monitor.tables import DriftBucketRow

        with Session(self.engine) as s:
            counts = {
                "feedback": _deleted(s, FeedbackRow, FeedbackRow.tenant_id == tenant_id),
                "completions": _deleted(s, CompletionRow, CompletionRow.tenant_id == tenant_id),
                "drift_buckets": _deleted(s, DriftBucketRow, DriftBucketRow.tenant_id == tenant_id),
            }
            s.commit()
        return counts

    def purge(self, tenants: list[Tenant], now: datetime | None = None) -> dict[str, int]:
        """Delete what is older than each tenant's retention period."""
        from serve.monitor.tables import DriftBucketRow

        now = now or utcnow()
        counts = {"feedback": 0, "completions": 0, "drift_buckets": 0}
        with Session(self.engine) as s:
            for t in tenants:
                cutoff = now - timedelta(days=t.policy.retention_days)
                for key, table, column in (
                    ("feedback", FeedbackRow, FeedbackRow.completion_at),
                    ("completions", CompletionRow, CompletionRow.created_at),
                    ("drift_buckets", DriftBucketRow, DriftBucketRow.start),
                ):
                    counts[key] += _deleted(s, table, table.tenant_id == t.id, column < cutoff)
            s.commit()
        return counts

    @staticmethod
    def _card(row: FeedbackRow, has_prompt: bool | None = None) -> dict[str, Any]:
        card = {
            "id": row.id,
            "object": "feedback",
            "tenant_id": row.tenant_id,
            "rating": int(row.rating) if row.rating.isdigit() else row.rating,
            "score": row.score,
            "negative": row.negative,
            "correction": row.correction,
            "comment": row.comment,
            "messages": row.messages,
            "route": row.route,
            "adapter": row.adapter,
            "router_version": row.router_version,
            "source_ids": list(row.source_ids or []),
            "created_at": aware(row.created_at).isoformat(),
            "completion_created_at": aware(row.completion_at).isoformat(),
        }
        if has_prompt is not None:
            card["has_prompt"] = has_prompt
        return card


def _deleted(s: Session, table: Any, *where: Any) -> int:
    """Delete the rows of `table` matching `where`; how many went."""
    result = cast(CursorResult[Any], s.execute(delete(table).where(*where)))
    return result.rowcount


def _adapter_filter(column: Any, adapter: str) -> Any:
    """NAME@N matches that version; NAME matches every version of it."""
    if "@" in adapter:
        return column == adapter
    # '_' is a LIKE wildcard and may appear in adapter names.
    escaped = adapter.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.like(f"{escaped}@%", escape="\\")
