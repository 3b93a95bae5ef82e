"""What a tenant may use and how the router treats it: one validated pydantic model."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from serve.errors import ServiceError

Route = Literal["prompt", "rag", "adapter", "combined"]
ALL_ROUTES: tuple[Route, ...] = ("prompt", "rag", "adapter", "combined")


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
