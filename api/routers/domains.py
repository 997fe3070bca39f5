"""Domains (admins): the tree of accounts, and limits that cap a whole subtree.

The root admin administers every domain; a domain admin its own domain's subtree (it creates
and deletes subdomains below its own, and sets their limits, never its own domain's). A user
sees its own domain only.
"""

from __future__ import annotations

import uuid
from uuid import UUID

from fastapi import APIRouter, Response, status
from starlette.concurrency import run_in_threadpool

from api.auth import CurrentCaller, TenancyAdminCaller
from api.dependencies import Consistent, Cursor, Limit, PageNumber, Services
from api.errors import forbidden
from api.models import Listing
from api.reads import consistent_read
from api.resource_usage import limits_of
from api.tenancy_access import (
    administered_domain,
    visible_row,
    wait_for_inventory,
)
from api.tenancy_models import DomainCreate, DomainPublic, LimitPublic, LimitUpdate, domain_public
from domain.resource_limits import ResourceType
from domain.tenancy import create_domain, delete_domain, set_resource_limit
from projections.inventory import inventory_row
from projections.tenancy_listing import page_domains

router = APIRouter(prefix="/v1/domains", tags=["domains"])
LOC = ("path", "domain_id")


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DomainPublic,
    summary="Create a subdomain (admins; a domain admin, below its own domain)",
)
def create_subdomain(
    body: DomainCreate, caller: TenancyAdminCaller, services: Services
) -> DomainPublic:
    parent = administered_domain(services, caller, body.parent_id, "parent_id")
    created = create_domain(services.cloud, uuid.uuid4(), body.name, parent.id)
    wait_for_inventory(services)
    return domain_public(inventory_row(created))


@router.get("", response_model=Listing[DomainPublic], summary="List domains")
def list_domains(
    caller: CurrentCaller,
    services: Services,
    response: Response,
    limit: Limit = 100,
    cursor: Cursor = None,
    page: PageNumber = None,
    consistent: Consistent = False,
) -> Listing[DomainPublic]:
    consistent_read(services, "inventory", consistent, response)
    under = None if caller.is_admin else caller.domain_id
    found = page_domains(
        services.reads.pool,
        under=under,
        only=None if (caller.is_admin or caller.is_domain_admin) else caller.domain_id,
        limit=limit,
        cursor=cursor,
        page=page,
    )
    return Listing[DomainPublic](
        data=[domain_public(r) for r in found.data],
        count=found.count,
        next_cursor=found.next_cursor,
    )


@router.get("/{domain_id}", response_model=DomainPublic, summary="Show a domain")
def get_domain(domain_id: UUID, caller: CurrentCaller, services: Services) -> DomainPublic:
    return domain_public(visible_row(services, caller, "domain", domain_id, LOC))


@router.delete(
    "/{domain_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete an empty domain (no subdomain, no account)",
)
async def remove_domain(
    domain_id: UUID, caller: TenancyAdminCaller, services: Services
) -> Response:
    await run_in_threadpool(_below_own, services, caller, domain_id, "delete")
    await run_in_threadpool(delete_domain, services.cloud, domain_id)
    await run_in_threadpool(wait_for_inventory, services)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{domain_id}/limits",
    response_model=list[LimitPublic],
    summary="A domain's limits and what its subtree uses",
)
def get_domain_limits(
    domain_id: UUID, caller: CurrentCaller, services: Services
) -> list[LimitPublic]:
    row = visible_row(services, caller, "domain", domain_id, LOC)
    return limits_of(services, row)


@router.put(
    "/{domain_id}/limits/{resource_type}",
    response_model=list[LimitPublic],
    summary="Set a domain's limit on a resource type (-1: unlimited)",
)
def set_domain_limit(
    domain_id: UUID,
    resource_type: ResourceType,
    body: LimitUpdate,
    caller: TenancyAdminCaller,
    services: Services,
) -> list[LimitPublic]:
    _below_own(services, caller, domain_id, "set the limits of")
    set_resource_limit(services.cloud, domain_id, resource_type.value, body.max)
    wait_for_inventory(services)
    return limits_of(services, visible_row(services, caller, "domain", domain_id, LOC))


def _below_own(services: Services, caller: TenancyAdminCaller, domain_id: UUID, what: str) -> None:
    """A domain admin acts on the domains below its own, never on its own."""
    row = visible_row(services, caller, "domain", domain_id, LOC)
    if not caller.is_admin and row["id"] == caller.domain_id:
        raise forbidden(f"a domain admin cannot {what} its own domain")
