"""Tenant administration that reaches beyond the tenants' tables (their documents)."""

from __future__ import annotations

from retrieval.service import RetrievalService
from serve.tenants import TenantService


class TenantAdmin:
    """Delete a tenant with everything it owns."""

    def __init__(self, tenants: TenantService, retrieval: RetrievalService) -> None:
        self.tenants = tenants
        self.retrieval = retrieval

    def delete(self, name: str) -> None:
        """Delete a tenant, its keys and its documents (Chroma collection and BM25 index).

        Documents go after the row, so no key can ingest again in between; left behind, they
        would reappear for a new tenant of the same name. A delete whose document clean-up
        failed after the row went can be repeated: the leftovers are removed, and with nothing
        left it is a plain not_found.
        """
        if self.tenants.get(name) is None:
            if not self.retrieval.drop_tenant(name):
                self.tenants.require(name)  # raises the not_found error
            return
        self.tenants.delete(name)
        self.retrieval.drop_tenant(name)
