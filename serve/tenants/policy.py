"""What a tenant may use and how the router treats it: one validated pydantic model."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from serve.errors import ServiceError

Route = Literal["prompt", "rag", "adapter", "combined"]
ALL_ROUTES: tuple[Route, ...] = ("prompt", "rag", "adapter", "combined")
Capture = Literal["off", "redacted", "full"]


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
    capture: Capture = Field(
        "off",
        description="Keep prompts and answers: off (never), redacted (after the PII pass), full.",
    )
    retention_days: int = Field(
        30, ge=1, le=3650, description="Days request records, captures and feedback are kept."
    )
    drift: DriftThresholds = Field(default_factory=DriftThresholds)

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
