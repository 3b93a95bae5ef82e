"""Per-tenant quotas: requests and tokens per minute, open streams, a token budget per period,
shared by every gateway replica through the database."""

from serve.quotas.limiter import Admission, QuotaLimiter, over_limit, period_window

__all__ = ["Admission", "QuotaLimiter", "over_limit", "period_window"]
