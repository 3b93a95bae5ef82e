"""What a tenant may use and how the router treats it: one validated pydantic model."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator

from retrieval.prompt import TEMPLATES
from serve.errors import ServiceError

Route = Literal["prompt", "rag", "adapter", "combined"]
ALL_ROUTES: tuple[Route, ...] = ("prompt", "rag", "adapter", "combined")
Capture = Literal["off", "redacted", "full"]
NotCovered = Literal["refuse", "fallback"]
BelowGrounded = Literal["replace", "flag"]
BudgetPeriod = Literal["hour", "day", "week", "month"]


class DriftThresholds(BaseModel):
    """When `loraplex monitor` and `GET /v1/monitor` warn about a tenant's traffic."""

    model_config = {"extra": "forbid"}

    input_drift: float = Field(
        0.35, ge=0, le=2, description="1 - cosine of recent prompts' mean embedding vs reference."
    )
    knowledge_gap_rate: float = Field(
        0.5, ge=0, le=1, description="Share of rag/combined requests with weak retrieval."
    )
    weak_retrieval: float = Field(
        0.5, ge=0, le=1, description="A rag request whose top retrieval score is below is weak."
    )
    route_mix_shift: float = Field(
        0.3, ge=0, le=1, description="Total variation distance of the route mix vs before."
    )
    downvote_rate: float = Field(0.3, ge=0, le=1, description="Share of feedback voting down.")
    min_feedback: int = Field(5, ge=1, description="Feedback in the window before judging it.")
    grounded_min: float = Field(0.5, ge=0, le=1, description="Lowest acceptable mean grounding.")
    min_requests: int = Field(20, ge=1, description="Requests in the window before any warning.")


class Quotas(BaseModel):
    """How much a tenant may ask of the engine, shared by every gateway replica (None: no
    limit). Over a limit, chat completions answer 429 with Retry-After (serve.quotas)."""

    model_config = {"extra": "forbid"}

    requests_per_minute: int | None = Field(
        None, ge=1, description="Chat completions started per clock minute."
    )
    tokens_per_minute: int | None = Field(
        None,
        ge=1,
        description="Prompt + completion tokens per clock minute, counted from usage once an "
        "answer ends; a request is refused once the minute's count has reached it.",
    )
    concurrent_streams: int | None = Field(None, ge=1, description="Streams open at once.")
    token_budget: int | None = Field(
        None, ge=1, description="Prompt + completion tokens per budget period (UTC calendar)."
    )
    budget_period: BudgetPeriod = Field("month", description="Period of token_budget.")

    @property
    def active(self) -> bool:
        """Whether any limit is set (none: the gateway does no quota work at all)."""
        return any(
            v is not None
            for v in (
                self.requests_per_minute,
                self.tokens_per_minute,
                self.concurrent_streams,
                self.token_budget,
            )
        )


class TenantPolicy(BaseModel):
    """What a tenant may use. Empty `models` means: the base model plus its own/shared adapters."""

    model_config = {"extra": "forbid"}

    models: list[str] = Field(
        default_factory=list, description="Extra model/adapter names allowed; [] = defaults."
    )
    allow_base_model: bool = Field(True, description="May call the base model directly.")
    routes: list[Route] = Field(
        default_factory=lambda: list(ALL_ROUTES),
        description="Routing paths this tenant may take.",
    )
    rag_min_score: float = Field(0.5, ge=0, le=1, description="Router: retrieval score needed.")
    adapter_min_similarity: float = Field(
        0.45, ge=0, le=1, description="Router: prompt-to-exemplar similarity needed for an adapter."
    )
    # -- grounded answers on the rag and combined paths (serve.chat.grounded) ------------------
    rag_template: str | None = Field(
        None,
        description="How sources enter the prompt (retrieval.prompt templates); None: the "
        "gateway's setting rag_template.",
    )
    rag_max_sources: int | None = Field(
        None, ge=1, le=20, description="Most sources given; None: the setting rag_max_sources."
    )
    rag_min_relevance: float = Field(
        0.4,
        ge=0,
        le=1,
        description="Coverage: below this best-hit relevance the documents do not cover a question.",
    )
    rag_not_covered: NotCovered = Field(
        "refuse",
        description="Documents do not cover the question: refuse (say so, no model call) or "
        "fallback (answer without sources: rag -> prompt, combined -> adapter).",
    )
    rag_min_grounded: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Answers grounded below this are replaced or flagged (0: never).",
    )
    rag_below_grounded: BelowGrounded = Field(
        "replace",
        description="An answer under rag_min_grounded: replace it with a 'not supported' "
        "message, or flag it. Streams are always flagged (the text is already sent).",
    )
    capture: Capture = Field(
        "off",
        description="Keep prompts and answers: off (never), redacted (after the PII pass), full.",
    )
    retention_days: int = Field(
        30, ge=1, le=3650, description="Days request records, captures and feedback are kept."
    )
    drift: DriftThresholds = Field(default_factory=DriftThresholds)
    quotas: Quotas = Field(default_factory=Quotas)

    @field_validator("rag_template")
    @classmethod
    def _known_template(cls, value: str | None) -> str | None:
        if value is not None and value not in TEMPLATES:
            raise ValueError(f"unknown template {value!r}; choose one of {', '.join(TEMPLATES)}")
        return value

    def allows_base(self, base_model: str) -> bool:
        """Whether this tenant may be answered by the base model (directly or through auto)."""
        return self.allow_base_model or base_model in self.models


def parse_policy(policy: dict[str, Any] | None) -> TenantPolicy:
    """A policy from JSON, or a ServiceError naming the first bad field."""
    try:
        return TenantPolicy(**(policy or {}))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ServiceError(
            f"invalid policy: {where + ': ' if where else ''}{first['msg']}", "invalid_policy"
        ) from None
