"""Inventory listings: zones, networks, offerings and templates for everyone; pods,
clusters and storage for administrators; hosts with their capacity (listHosts). Accounts
have routes of their own (api/routers/accounts.py).

A user sees the public templates and its own account's private ones (CloudStack's
listTemplates with templatefilter=executable); an administrator sees every template."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends, Response

from api.auth import AdminCaller, Caller, CurrentCaller, authenticate, require_admin
from api.dependencies import Consistent, Cursor, Limit, PageNumber, Services
from api.errors import not_found
from api.models import HostPublic, InventoryItemPublic, Listing
from api.reads import consistent_read
from projections.template_listing import page_templates, template_visible

router = APIRouter(prefix="/v1", tags=["inventory"])
TEMPLATE = "template"

#: (path, kind, title, admin only)
KINDS = (
    ("zones", "zone", "zone", False),
    ("networks", "network", "guest network", False),
    ("service-offerings", "service_offering", "service offering", False),
    ("disk-offerings", "disk_offering", "disk offering", False),
    ("templates", "template", "template", False),
    ("pods", "pod", "pod", True),
    ("clusters", "cluster", "cluster", True),
    ("storage-pools", "primary_storage", "primary storage pool", True),
    ("secondary-storage", "secondary_storage", "secondary storage", True),
)


def item_public(row: dict[str, Any]) -> InventoryItemPublic:
    return InventoryItemPublic(
        id=row["id"],
        kind=row["kind"],
        name=row["name"],
        zone_id=row["zone_id"],
        details=row["data"],
        created=row["created"],
        updated=row["updated"],
    )


def _visibility(caller: Caller) -> list[UUID] | None:
    """Whose private templates the caller sees: its own account's, a domain admin's subtree's,
    all (None) for the root admin."""
    return caller.visible_accounts()


def _add_kind(path: str, kind: str, title: str, admin_only: bool) -> None:
    guard = [Depends(require_admin if admin_only else authenticate)]

    def list_items(
        caller: CurrentCaller,
        services: Services,
        response: Response,
        zone_id: UUID | None = None,
        limit: Limit = 100,
        cursor: Cursor = None,
        page: PageNumber = None,
        consistent: Consistent = False,
    ) -> Listing[InventoryItemPublic]:
        consistent_read(services, "inventory", consistent, response)
        if kind == TEMPLATE:
            found = page_templates(
                services.reads.pool,
                visible_to=_visibility(caller),
                zone_id=zone_id,
                limit=limit,
                cursor=cursor,
                page=page,
            )
        else:
            found = services.reads.page(
                "inventory",
                {"kind": kind, "zone_id": zone_id},
                limit=limit,
                cursor=cursor,
                page=page,
            )
        return Listing[InventoryItemPublic](
            data=[item_public(r) for r in found.data],
            count=found.count,
            next_cursor=found.next_cursor,
        )

    def get_item(item_id: UUID, caller: CurrentCaller, services: Services) -> InventoryItemPublic:
        row = services.reads.get("inventory", item_id)
        hidden = (
            kind == TEMPLATE and row is not None and not template_visible(row, _visibility(caller))
        )
        if row is None or row["kind"] != kind or hidden:
            raise not_found(f"{title} {item_id}", ("path", "item_id"))
        return item_public(row)

    router.add_api_route(
        f"/{path}",
        list_items,
        methods=["GET"],
        dependencies=guard,
        response_model=Listing[InventoryItemPublic],
        summary=f"List {title}s",
        name=f"list_{kind}",
    )
    router.add_api_route(
        f"/{path}/{{item_id}}",
        get_item,
        methods=["GET"],
        dependencies=guard,
        response_model=InventoryItemPublic,
        summary=f"Show a {title}",
        name=f"get_{kind}",
    )


for _path, _kind, _title, _admin in KINDS:
    _add_kind(_path, _kind, _title, _admin)


@router.get("/hosts", response_model=Listing[HostPublic], summary="List hosts with capacity")
def list_hosts(
    _: AdminCaller,
    services: Services,
    response: Response,
    zone_id: UUID | None = None,
    cluster_id: UUID | None = None,
    limit: Limit = 100,
    cursor: Cursor = None,
    page: PageNumber = None,
    consistent: Consistent = False,
) -> Listing[HostPublic]:
    consistent_read(services, "host_capacity", consistent, response)
    found = services.reads.page(
        "host_capacity",
        {"zone_id": zone_id, "cluster_id": cluster_id},
        limit=limit,
        cursor=cursor,
        page=page,
    )
    return Listing[HostPublic](
        data=[HostPublic(**row) for row in found.data],
        count=found.count,
        next_cursor=found.next_cursor,
    )


@router.get("/hosts/{host_id}", response_model=HostPublic, summary="Show a host")
def get_host(host_id: UUID, _: AdminCaller, services: Services) -> HostPublic:
    row = services.reads.get("host_capacity", host_id)
    if row is None:
        raise not_found(f"host {host_id}", ("path", "host_id"))
    return HostPublic(**row)
