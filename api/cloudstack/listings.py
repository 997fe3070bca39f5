"""The list commands: each pages what the `/v1` listing of the same thing answers.

CloudStack lists what the caller's own account holds unless `listall=true` (then everything
the caller may see: a domain admin's subtree, all for the root admin), or `account` and
`domainid` name one account the caller administers. An `id` that names nothing the caller may
see answers an empty list, like one that names nothing at all.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from functools import partial
from typing import Any
from uuid import UUID

from starlette.concurrency import run_in_threadpool

from api.cloudstack import entities
from api.cloudstack.commands import Context, command
from api.cloudstack.entities import Names
from api.cloudstack.params import CloudStackError
from api.cloudstack.responses import list_response
from api.errors import ApiError
from api.models import HostPublic, Listing
from api.routers.accounts import get_account, list_accounts
from api.routers.domains import get_domain, list_domains
from api.routers.events import list_events
from api.routers.inventory import list_hosts
from api.routers.snapshots import get_snapshot, list_snapshots
from api.routers.usage import list_usage_records, list_usage_types
from api.routers.virtual_machines import get_virtual_machine, list_virtual_machines
from api.routers.volumes import get_volume, list_volumes
from domain.errors import ErrorCode
from domain.virtual_machine import VmState
from projections.events import EventLevel
from projections.template_listing import page_templates

INVENTORY = "inventory"
TEMPLATE_FILTERS = frozenset(
    {"featured", "self", "selfexecutable", "sharedexecutable", "executable", "community", "all"}
)


async def owner_filter(ctx: Context) -> UUID | None:
    """The account a listing is narrowed to: the named one, the caller's own, or none
    (`listall=true`: everything the caller may see)."""
    name = ctx.params.text("account")
    if name is not None:
        domain_id = ctx.params.uuid("domainid") or ctx.caller.domain_id
        found = await run_in_threadpool(_account_named, ctx, name, domain_id)
        if found is None or not ctx.caller.may_see(found):
            raise CloudStackError(
                int(ErrorCode.ACCOUNT_ERROR), f"account {name} is not one you may act for"
            )
        return found
    if ctx.params.flag("listall") or ctx.params.uuid("accountid") is not None:
        return ctx.params.uuid("accountid")
    return ctx.caller.account_id


def _account_named(ctx: Context, name: str, domain_id: UUID | None) -> UUID | None:
    with ctx.services.reads.pool.connection() as conn:
        row = conn.execute(
            "SELECT id FROM inventory WHERE kind = 'account' AND name = %s "
            "AND coalesce(data->>'domain_id', %s) = %s",
            (name, str(domain_id), str(domain_id)),
        ).fetchone()
    return row["id"] if row else None


async def one_or_none(fetch: Any, *args: Any, **kwargs: Any) -> list[Any]:
    """The item an `id` names, or nothing if it names nothing the caller may see."""
    try:
        return [await run_in_threadpool(fetch, *args, **kwargs)]
    except ApiError as error:
        if error.status == 404:
            return []
        raise


async def one_or_page(
    ctx: Context,
    single: Callable[..., Any],
    listing: Callable[..., Listing[Any]],
    **filters: Any,
) -> tuple[list[Any], int]:
    """What the `/v1` routes answer: the one item `id` names, or a page of the listing."""
    item_id = ctx.params.uuid("id")
    if item_id is not None:
        items = await one_or_none(single, item_id, ctx.caller, ctx.services, ctx.response)
        return items, len(items)
    page, size = ctx.params.page()
    found = await run_in_threadpool(
        partial(listing, ctx.caller, ctx.services, ctx.response),
        limit=size,
        cursor=None,
        page=page,
        consistent=False,
        **filters,
    )
    return found.data, found.count


async def names_for(ctx: Context, *ids: Any) -> Names:
    return await run_in_threadpool(Names.of, ctx.services.reads, ids)


async def names_of_items(ctx: Context, items: list[Any]) -> Names:
    """The names of everything the items refer to (zones, offerings, accounts, ...)."""
    return await names_for(ctx, *(i for item in items for i in entities.referenced_ids(item)))


@command("listVirtualMachines")
async def list_vms(ctx: Context) -> dict[str, Any]:
    p = ctx.params
    items, count = await one_or_page(
        ctx,
        get_virtual_machine,
        list_virtual_machines,
        zone_id=p.uuid("zoneid"),
        state=p.choice("state", VmState),
        account_id=await owner_filter(ctx),
        host_id=p.uuid("hostid"),
        include_removed=False,
    )
    names = await names_of_items(ctx, items)
    vms = [entities.virtual_machine(v, names) for v in items]
    return list_response(ctx.command, "virtualmachine", vms, count)


@command("listVolumes")
async def list_volumes_command(ctx: Context) -> dict[str, Any]:
    p = ctx.params
    items, count = await one_or_page(
        ctx,
        get_volume,
        list_volumes,
        zone_id=p.uuid("zoneid"),
        vm_id=p.uuid("virtualmachineid"),
        state=None,
        account_id=await owner_filter(ctx),
    )
    names = await names_of_items(ctx, items)
    return list_response(ctx.command, "volume", [entities.volume(v, names) for v in items], count)


@command("listSnapshots")
async def list_snapshots_command(ctx: Context) -> dict[str, Any]:
    p = ctx.params
    items, count = await one_or_page(
        ctx,
        get_snapshot,
        list_snapshots,
        volume_id=p.uuid("volumeid"),
        policy_id=None,
        state=None,
        interval_type=p.text("intervaltype"),
        account_id=await owner_filter(ctx),
    )
    names = await names_of_items(ctx, items)
    snapshots = [entities.snapshot(s, names) for s in items]
    return list_response(ctx.command, "snapshot", snapshots, count)


def _inventory_page(ctx: Context, kind: str) -> tuple[list[dict[str, Any]], int]:
    page, size = ctx.params.page()
    filters = {"kind": kind, "id": ctx.params.uuid("id"), "zone_id": None}
    if kind != "zone":
        filters["zone_id"] = ctx.params.uuid("zoneid")
    found = ctx.services.reads.page(INVENTORY, filters, limit=size, page=page)
    return found.data, found.count


@command("listZones")
async def list_zones(ctx: Context) -> dict[str, Any]:
    rows, count = await run_in_threadpool(_inventory_page, ctx, "zone")
    return list_response(ctx.command, "zone", [entities.zone(r) for r in rows], count)


@command("listServiceOfferings")
async def list_service_offerings(ctx: Context) -> dict[str, Any]:
    rows, count = await run_in_threadpool(_inventory_page, ctx, "service_offering")
    return list_response(
        ctx.command, "serviceoffering", [entities.service_offering(r) for r in rows], count
    )


@command("listDiskOfferings")
async def list_disk_offerings(ctx: Context) -> dict[str, Any]:
    rows, count = await run_in_threadpool(_inventory_page, ctx, "disk_offering")
    return list_response(
        ctx.command, "diskoffering", [entities.disk_offering(r) for r in rows], count
    )


@command("listNetworks")
async def list_networks(ctx: Context) -> dict[str, Any]:
    rows, count = await run_in_threadpool(_inventory_page, ctx, "network")
    return list_response(ctx.command, "network", [entities.network(r) for r in rows], count)


@command("listTemplates")
async def list_templates(ctx: Context) -> dict[str, Any]:
    """templatefilter: `self`/`selfexecutable` the caller's own templates; the others every
    template it may use (the public ones and its own)."""
    template_filter = ctx.params.required("templatefilter").lower()
    if template_filter not in TEMPLATE_FILTERS:
        raise ctx.params.invalid(
            "templatefilter", template_filter, f"one of {', '.join(sorted(TEMPLATE_FILTERS))}"
        )
    page, size = ctx.params.page()
    visible_to = ctx.caller.visible_accounts()
    found = await run_in_threadpool(
        page_templates,
        ctx.services.reads.pool,
        visible_to=visible_to,
        zone_id=ctx.params.uuid("zoneid"),
        limit=size,
        page=page,
        own_only=ctx.caller.account_id if template_filter.startswith("self") else None,
        template_id=ctx.params.uuid("id"),
    )
    names = await names_for(
        ctx, *(i for r in found.data for i in (r["zone_id"], r["data"].get("account_id")))
    )
    return list_response(
        ctx.command, "template", [entities.template(r, names) for r in found.data], found.count
    )


@command("listHosts")
async def list_hosts_command(ctx: Context) -> dict[str, Any]:
    if not ctx.caller.is_admin:
        raise CloudStackError(int(ErrorCode.ACCOUNT_ERROR), "listHosts is for the root admin")
    page, size = ctx.params.page()
    found: Listing[Any] = await run_in_threadpool(
        list_hosts,
        ctx.caller,
        ctx.services,
        ctx.response,
        zone_id=ctx.params.uuid("zoneid"),
        cluster_id=ctx.params.uuid("clusterid"),
        limit=size,
        cursor=None,
        page=page,
        consistent=False,
    )
    host_id = ctx.params.uuid("id")
    items = [h for h in found.data if host_id is None or h.id == host_id]
    names = await names_of_items(ctx, items)
    count = found.count if host_id is None else len(items)
    return list_response(ctx.command, "host", [entities.host(h, names) for h in items], count)


async def all_hosts(ctx: Context, zone_id: UUID | None = None) -> list[HostPublic]:
    """Every host of the `/v1` host listing (of one zone), page after page."""
    hosts: list[HostPublic] = []
    page = 1
    while True:
        found: Listing[HostPublic] = await run_in_threadpool(
            list_hosts,
            ctx.caller,
            ctx.services,
            ctx.response,
            zone_id=zone_id,
            cluster_id=None,
            limit=500,
            cursor=None,
            page=page,
            consistent=False,
        )
        hosts += found.data
        if found.next_cursor is None:
            return hosts
        page += 1


@command("listCapacity")
async def list_capacity(ctx: Context) -> dict[str, Any]:
    """Memory (type 0, bytes) and CPU (type 1, MHz) allocated against what the zone's hosts
    offer, per zone: summed from the `/v1` host listing."""
    if not ctx.caller.is_admin:
        raise CloudStackError(int(ErrorCode.ACCOUNT_ERROR), "listCapacity is for the root admin")
    hosts = await all_hosts(ctx, ctx.params.uuid("zoneid"))
    totals: dict[tuple[str, int], list[int]] = {}
    for host in hosts:
        memory = totals.setdefault((str(host.zone_id), 0), [0, 0])
        memory[0] += host.memory_used_mib * 1024**2
        memory[1] += host.memory_total_mib * 1024**2
        cpu = totals.setdefault((str(host.zone_id), 1), [0, 0])
        cpu[0] += host.cpu_used_mhz
        cpu[1] += host.cpu_total_mhz
    names = await names_for(ctx, *(zone for zone, _ in totals))
    rows = [
        {
            "type": kind,
            "name": "MEMORY" if kind == 0 else "CPU",
            "zoneid": zone,
            "zonename": names.name(zone),
            "capacityused": used,
            "capacitytotal": total,
            "percentused": f"{100 * used / total:.2f}" if total else "0",
        }
        for (zone, kind), (used, total) in sorted(totals.items())
    ]
    return list_response(ctx.command, "capacity", rows, len(rows))


@command("listEvents")
async def list_events_command(ctx: Context) -> dict[str, Any]:
    p, (page, size) = ctx.params, ctx.params.page()
    found = await run_in_threadpool(
        list_events,
        ctx.caller,
        ctx.services,
        ctx.response,
        start=p.day("startdate") if p.text("startdate") else None,
        end=p.day("enddate") if p.text("enddate") else None,
        type=p.text("type"),
        level=p.choice("level", EventLevel),
        state=None,
        resource_id=None,
        job_id=None,
        account_id=await owner_filter(ctx),
        domain_id=p.uuid("domainid") if p.text("account") is None else None,
        limit=size,
        cursor=None,
        page=page,
        consistent=False,
    )
    names = await names_of_items(ctx, found.data)
    return list_response(
        ctx.command, "event", [entities.event(e, names) for e in found.data], found.count
    )


@command("listUsageRecords")
async def list_usage_records_command(ctx: Context) -> dict[str, Any]:
    """Usage between two days (CloudStack's startdate and enddate, the end day included).
    Without `account`, everything the caller may see: its own, a domain admin's subtree."""
    p, (page, size) = ctx.params, ctx.params.page()
    start, end = p.day("startdate"), p.day("enddate")
    if len(p.required("enddate")) == len("yyyy-mm-dd"):
        try:
            end += timedelta(days=1)  # the whole end day
        except OverflowError:
            raise p.invalid("enddate", p.required("enddate"), "it is past the calendar") from None
    account = p.uuid("accountid")
    if account is None and p.text("account") is not None:
        account = await owner_filter(ctx)
    usage_type = p.integer("type", low=1, high=100)
    cursor: str | None = None
    items: list[Any] = []
    count = 0
    for number in range(1, page + 1):
        found = await run_in_threadpool(
            list_usage_records,
            ctx.request,
            ctx.caller,
            ctx.services,
            ctx.response,
            start=start,
            end=end,
            account=account,
            type=str(usage_type) if usage_type is not None else None,
            zone=p.uuid("zoneid"),
            domain=p.uuid("domainid") if account is None else None,
            limit=size,
            cursor=cursor,
            consistent=False,
        )
        count = found.count
        if number == page:
            items = found.data
        elif found.next_cursor is None:
            break
        cursor = found.next_cursor
    names = await names_of_items(ctx, items)
    return list_response(
        ctx.command, "usagerecord", [entities.usage_record(r, names) for r in items], count
    )


@command("listUsageTypes")
async def list_usage_types_command(ctx: Context) -> dict[str, Any]:
    types = list_usage_types(ctx.caller)
    rows = [{"usagetypeid": t.id, "description": t.description, "name": t.name} for t in types]
    return list_response(ctx.command, "usagetype", rows, len(rows))


@command("listAccounts")
async def list_accounts_command(ctx: Context) -> dict[str, Any]:
    items, count = await one_or_page(
        ctx, _without_response(get_account), list_accounts, domain_id=ctx.params.uuid("domainid")
    )
    return list_response(ctx.command, "account", [entities.account(a) for a in items], count)


@command("listDomains")
async def list_domains_command(ctx: Context) -> dict[str, Any]:
    items, count = await one_or_page(ctx, _without_response(get_domain), list_domains)
    return list_response(ctx.command, "domain", [entities.domain(d) for d in items], count)


def _without_response(get: Callable[..., Any]) -> Callable[..., Any]:
    """A `/v1` show function that takes no response (it sets no header)."""

    def show(item_id: UUID, caller: Any, services: Any, _: Any) -> Any:
        return get(item_id, caller, services)

    return show
