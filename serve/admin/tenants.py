"""Tenant administration that reaches beyond the tenants' tables: documents and adapters."""

from __future__ import annotations

import asyncio

from retrieval.service import RetrievalService
from serve.admin.adapters import AdapterAdmin
from serve.errors import ServiceError
from serve.feedback.service import FeedbackService
from serve.tenants import TenantService


class TenantAdmin:
    """Delete a tenant with everything it owns."""

    def __init__(
        self,
        tenants: TenantService,
        retrieval: RetrievalService,
        adapters: AdapterAdmin,
        feedback: FeedbackService | None = None,
    ) -> None:
        self.tenants = tenants
        self.retrieval = retrieval
        self.adapters = adapters
        self.feedback = feedback

    async def delete(self, name: str, delete_adapters: bool = False) -> dict[str, object]:
        """Delete a tenant: its keys, its documents, its request records, captures and feedback,
        its adapters (only with `delete_adapters`; refused while it owns some otherwise), its
        place in other adapters' sharing lists, and finally its row. Every step can be
        repeated, so a delete that failed half-way (Chroma down) is finished by running it
        again; the row goes last, so it can be found again."""
        tenant = await asyncio.to_thread(self.tenants.require, name)
        registry = self.adapters.registry
        owned = sorted(
            {
                av.name
                for av in await asyncio.to_thread(registry.versions, tenant.id)
                if av.owner == tenant.id
            }
        )
        if owned and not delete_adapters:
            raise ServiceError(
                f"tenant {name!r} owns adapters {owned}: remove them first, or delete the "
                "tenant with its adapters (--delete-adapters / ?delete_adapters=true)",
                "tenant_owns_adapters",
                "conflict",
            )
        await asyncio.to_thread(self.tenants.revoke_all_keys, name)  # nothing new comes in
        await asyncio.to_thread(self.retrieval.drop_tenant, tenant.id)
        records: dict[str, int] = {}
        if self.feedback is not None:
            records = await asyncio.to_thread(self.feedback.delete_tenant, tenant.id)
        for adapter in owned:
            await self.adapters.remove(adapter)
        await asyncio.to_thread(registry.unshare, tenant.id)
        # The tables' foreign keys also cascade: a record a request wrote meanwhile goes too.
        await asyncio.to_thread(self.tenants.delete, name)
        return {"name": name, "deleted": True, "adapters_removed": owned, "records": records}
