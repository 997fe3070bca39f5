"""Host HA over `/client/api` (root admin only), as CloudStack 4.11+ names it:
enableHAForHost and disableHAForHost (async: a ConfigureHostHa short job each; its result is
the host's `hostha`), listHostHAResources (each host's HA state) and listHostHAProviders.

Stratus has one HA provider per hypervisor type, health-checked through the cluster's agent and
fenced through the host's BMC; it is named as CloudStack names its KVM one (`kvmhaprovider`),
`<hypervisor>haprovider` for the others. The kvm.ha settings are `PUT /v1/clusters/{id}/ha`.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

from starlette.concurrency import run_in_threadpool

from api.cloudstack.commands import Context, command
from api.cloudstack.listings import all_hosts
from api.cloudstack.params import CloudStackError
from api.cloudstack.responses import async_response, list_response
from api.models import JobPublic
from api.routers.host_ha import switch_host_ha
from domain.catalog import HypervisorType
from domain.errors import ErrorCode
from domain.host import Host


def _root_admin_only(ctx: Context) -> None:
    if not ctx.caller.is_admin:
        raise CloudStackError(int(ErrorCode.ACCOUNT_ERROR), f"{ctx.command} is for the root admin")


def provider_of(hypervisor: str) -> str:
    return f"{hypervisor.lower()}haprovider"


def hostha(host_id: UUID, hypervisor: str, enabled: bool, state: str) -> dict[str, Any]:
    return {
        "hostid": str(host_id),
        "haenable": enabled,
        "hastate": state,
        "haprovider": provider_of(hypervisor),
        "status": True,
    }


async def _switch(ctx: Context, enabled: bool) -> dict[str, Any]:
    _root_admin_only(ctx)
    host_id = ctx.params.required_uuid("hostid")
    job_id = uuid4()
    await switch_host_ha(ctx.services, ctx.caller, host_id, enabled, job_id)
    return async_response(ctx.command, str(job_id), str(host_id))


@command("enableHAForHost", is_async=True)
async def enable_ha_for_host(ctx: Context) -> dict[str, Any]:
    return await _switch(ctx, True)


@command("disableHAForHost", is_async=True)
async def disable_ha_for_host(ctx: Context) -> dict[str, Any]:
    return await _switch(ctx, False)


async def hostha_answer(ctx: Context, job: JobPublic) -> dict[str, Any]:
    """queryAsyncJobResult's result of enableHAForHost/disableHAForHost: the host's HA now."""
    host = (
        await run_in_threadpool(ctx.services.cloud.find, Host, job.resource_id)
        if job.resource_id is not None
        else None
    )
    if host is None:
        return {"success": True}
    return {"hostha": hostha(host.id, host.hypervisor, host.ha_enabled, host.ha_state.value)}


@command("listHostHAResources")
async def list_host_ha_resources(ctx: Context) -> dict[str, Any]:
    _root_admin_only(ctx)
    host_id = ctx.params.uuid("hostid")
    hosts = [h for h in await all_hosts(ctx) if host_id is None or h.id == host_id]
    rows = [hostha(h.id, h.hypervisor, h.ha_enabled, h.ha_state) for h in hosts]
    return list_response(ctx.command, "hostha", rows, len(rows))


@command("listHostHAProviders")
async def list_host_ha_providers(ctx: Context) -> dict[str, Any]:
    _root_admin_only(ctx)
    hypervisor = ctx.params.required("hypervisor")
    known = {h.value.lower(): h.value for h in HypervisorType}
    if hypervisor.lower() not in known:
        raise ctx.params.invalid(
            "hypervisor", hypervisor, f"one of {', '.join(sorted(known.values()))}"
        )
    rows = [{"haprovider": provider_of(known[hypervisor.lower()])}]
    return list_response(ctx.command, "haprovider", rows, 1)
