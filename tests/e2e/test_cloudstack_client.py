"""An existing CloudStack client, used unchanged, drives Stratus through `/client/api`: the
`cs` package from PyPI signs each request (GET and POST), pages lists and polls its async jobs
to completion itself. Its calls block, so they run in a thread beside the stack's server."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from cs import CloudStack, CloudStackApiException

from domain.alert import AlertType, raise_alert
from domain.host import Host
from domain.storage import PrimaryStorage
from domain.virtual_machine import VirtualMachine
from domain.volume import Volume
from tests.e2e.conftest import Stack
from tests.e2e.tenants import Tenant, new_tenant
from tests.support import ADMIN_KEY, ADMIN_SECRET, seed_zone, wait_until


def client_of(stack: Stack, tenant: Tenant, method: str) -> CloudStack:
    return CloudStack(
        endpoint=f"{stack.url}/client/api",
        key=tenant.api_key,
        secret=tenant.secret_key,
        method=method,
        poll_interval=0.2,
        job_timeout=90,
        timeout=30,
    )


def root_admin_client(stack: Stack) -> CloudStack:
    return CloudStack(
        endpoint=f"{stack.url}/client/api",
        key=ADMIN_KEY,
        secret=ADMIN_SECRET,
        timeout=30,
        poll_interval=0.2,
        job_timeout=90,
    )


async def call(command: Callable[..., Any], **params: Any) -> Any:
    return await asyncio.to_thread(partial(command, **params))


@pytest.mark.parametrize("method", ["get", "post"])
async def test_the_cs_client_deploys_lists_stops_destroys_and_reads_usage_unchanged(
    stack: Stack, method: str
) -> None:
    async with stack.http() as admin:
        tenant = await new_tenant(admin)
    cs = client_of(stack, tenant, method)

    zones = await call(cs.listZones, fetch_list=True)
    assert str(stack.zone.zone_id) in {z["id"] for z in zones}
    offerings = await call(cs.listServiceOfferings, fetch_list=True)
    small = next(o for o in offerings if o["id"] == str(stack.zone.small_offering_id))
    assert small["cpunumber"] >= 1 and small["memory"] >= 1
    templates = await call(cs.listTemplates, templatefilter="executable", fetch_list=True)
    assert str(stack.zone.template_id) in {t["id"] for t in templates}

    deployed = await call(
        cs.deployVirtualMachine,
        zoneid=str(stack.zone.zone_id),
        serviceofferingid=small["id"],
        templateid=str(stack.zone.template_id),
        name=f"cs-{method}",
        displayname=f"made by cs over {method.upper()}",
        fetch_result=True,
    )
    vm = deployed["virtualmachine"]
    assert vm["state"] == "Running" and vm["name"] == f"cs-{method}"
    assert vm["account"] == tenant.name and vm["zoneid"] == str(stack.zone.zone_id)
    assert vm["nic"][0]["ipaddress"]

    listed = await call(cs.listVirtualMachines, fetch_list=True)
    assert [v["id"] for v in listed] == [vm["id"]]

    jobs = await call(cs.listAsyncJobs, fetch_list=True)
    deploy_job = next(j for j in jobs if j["jobinstanceid"] == vm["id"])
    result = await call(cs.queryAsyncJobResult, jobid=deploy_job["jobid"])
    assert result["jobstatus"] == 1 and result["jobresult"]["virtualmachine"]["id"] == vm["id"]

    stopped = await call(cs.stopVirtualMachine, id=vm["id"], fetch_result=True)
    assert stopped["virtualmachine"]["state"] == "Stopped"
    destroyed = await call(cs.destroyVirtualMachine, id=vm["id"], fetch_result=True)
    assert destroyed["virtualmachine"]["state"] == "Destroyed"

    today = dt.datetime.now(dt.UTC).date().isoformat()

    async def usage() -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = await call(
            cs.listUsageRecords, startdate=today, enddate=today, fetch_list=True
        )
        return records

    records = await wait_until(
        usage,
        lambda found: any(r["usageid"] == vm["id"] and r["usagetype"] == 1 for r in found),
        timeout=60,
        what="the VM's running usage to be listed",
    )
    running = next(r for r in records if r["usageid"] == vm["id"] and r["usagetype"] == 1)
    assert running["account"] == tenant.name and running["accountid"] == tenant.account_id
    assert running["domainid"] == tenant.domain_id


async def test_the_root_admin_lists_hosts_and_capacity_and_a_user_is_refused_with_531(
    stack: Stack,
) -> None:
    admin = CloudStack(
        endpoint=f"{stack.url}/client/api", key=ADMIN_KEY, secret=ADMIN_SECRET, timeout=30
    )
    hosts = await call(admin.listHosts, zoneid=str(stack.zone.zone_id), fetch_list=True)
    assert {h["id"] for h in hosts} == {str(h) for h in stack.zone.host_ids}
    assert all(h["type"] == "Routing" and h["zonename"] for h in hosts)
    capacity = await call(admin.listCapacity, zoneid=str(stack.zone.zone_id))
    kinds = {c["name"]: c for c in capacity["capacity"]}
    assert kinds["CPU"]["capacitytotal"] == sum(h["cpunumber"] * h["cpuspeed"] for h in hosts)
    assert kinds["MEMORY"]["capacitytotal"] == sum(h["memorytotal"] for h in hosts)

    async with stack.http() as http:
        tenant = await new_tenant(http)
    user = client_of(stack, tenant, "get")
    with pytest.raises(CloudStackApiException) as refused:
        await call(user.listHosts)
    assert refused.value.error["errorcode"] == 531


async def test_the_root_admin_takes_a_host_into_maintenance_and_back_with_the_cs_client(
    stack: Stack,
) -> None:
    zone = seed_zone(stack.cloud)  # its own hosts: the shared zone's stay in service
    admin = root_admin_client(stack)
    host_id = str(zone.host_ids[0])
    prepared = await call(admin.prepareHostForMaintenance, id=host_id, fetch_result=True)
    assert prepared["host"]["id"] == host_id
    assert prepared["host"]["resourcestate"] == "Maintenance"
    cancelled = await call(admin.cancelHostMaintenance, id=host_id, fetch_result=True)
    assert cancelled["host"]["resourcestate"] == "Enabled"

    async with stack.http() as http:
        tenant = await new_tenant(http)
    user = client_of(stack, tenant, "get")
    with pytest.raises(CloudStackApiException) as refused:
        await call(user.prepareHostForMaintenance, id=host_id)
    assert refused.value.error["errorcode"] == 531


async def test_the_root_admin_migrates_a_vm_with_its_volume_to_another_cluster_with_cs(
    stack: Stack,
) -> None:
    zone = seed_zone(stack.cloud)
    admin = root_admin_client(stack)
    deployed = await call(
        admin.deployVirtualMachine,
        zoneid=str(zone.zone_id),
        serviceofferingid=str(zone.small_offering_id),
        templateid=str(zone.template_id),
        name="cs-traveller",
        fetch_result=True,
    )
    vm_id = uuid.UUID(deployed["virtualmachine"]["id"])
    source = stack.cloud.load(VirtualMachine, vm_id).host_id
    assert source is not None
    home = stack.cloud.load(Host, source).cluster_id
    target = next(h for h in zone.host_ids if stack.cloud.load(Host, h).cluster_id != home)

    # CloudStack's per-volume pool map is refused rather than ignored; nothing moves.
    with pytest.raises(CloudStackApiException) as refused:
        await call(
            admin.migrateVirtualMachineWithVolume,
            virtualmachineid=str(vm_id),
            hostid=str(target),
            **{"migrateto[0].volume": str(vm_id), "migrateto[0].pool": str(zone.pool_ids[1])},
        )
    assert refused.value.error["errorcode"] == 432
    assert "migrateto" in refused.value.error["errortext"]

    moved = await call(
        admin.migrateVirtualMachineWithVolume,
        virtualmachineid=str(vm_id),
        hostid=str(target),
        fetch_result=True,
    )
    assert moved["virtualmachine"]["id"] == str(vm_id)
    assert moved["virtualmachine"]["state"] == "Running"
    vm = stack.cloud.load(VirtualMachine, vm_id)
    assert vm.host_id == target
    root = stack.cloud.load(Volume, vm.root_volume_id)
    assert root.pool_id is not None
    assert (
        stack.cloud.load(PrimaryStorage, root.pool_id).cluster_id
        == stack.cloud.load(Host, target).cluster_id
    )


async def test_the_root_admin_lists_and_archives_alerts_with_cs_and_a_user_is_refused(
    stack: Stack,
) -> None:
    zone = seed_zone(stack.cloud)
    host_id = zone.host_ids[0]
    raised = stack.cloud.decide(
        lambda d: raise_alert(
            d,
            AlertType.HA_ACTION,
            "HA: fencing host h was not confirmed",
            "the BMC did not answer",
            resource_type="Host",
            resource_id=host_id,
            zone_id=zone.zone_id,
            cluster_id=zone.cluster_ids[0],
            at=dt.datetime.now(dt.UTC),
            command_id=f"cs-alert/{uuid.uuid4()}",
        )
    )
    admin = root_admin_client(stack)

    async def listed() -> list[dict[str, Any]]:
        found = await call(admin.listAlerts, type=30, fetch_list=True)
        return [a for a in found if a["id"] == str(raised.id)]

    [alert] = await wait_until(listed, timeout=30, what="the alert listed")
    assert (alert["type"], alert["name"]) == (30, "ALERT.HA.ACTION")
    assert alert["description"] == "HA: fencing host h was not confirmed" and alert["sent"]
    assert (await call(admin.listAlerts, id=str(raised.id)))["alert"][0]["id"] == str(raised.id)
    archived = await call(admin.archiveAlerts, ids=str(raised.id))
    assert archived["success"] is True
    assert await listed() == []
    with pytest.raises(CloudStackApiException) as bad:
        await call(admin.archiveAlerts, ids="not-an-id")
    assert bad.value.error["errorcode"] == 431 and "ids" in bad.value.error["errortext"]

    async with stack.http() as http:
        tenant = await new_tenant(http)
    with pytest.raises(CloudStackApiException) as refused:
        await call(client_of(stack, tenant, "get").listAlerts)
    assert refused.value.error["errorcode"] == 531


async def test_the_root_admin_switches_host_ha_and_lists_it_with_cs_and_a_user_is_refused(
    stack: Stack,
) -> None:
    zone = seed_zone(stack.cloud)  # its own hosts: the shared zone's are never watched
    host_id = str(zone.host_ids[0])
    admin = root_admin_client(stack)
    providers = await call(admin.listHostHAProviders, hypervisor="simulator")
    assert providers["haprovider"] == [{"haprovider": "simulatorhaprovider"}]
    with pytest.raises(CloudStackApiException) as bad:
        await call(admin.listHostHAProviders, hypervisor="hyper-v")
    assert bad.value.error["errorcode"] == 431 and "hypervisor" in bad.value.error["errortext"]

    enabled = await call(admin.enableHAForHost, hostid=host_id, fetch_result=True)
    # No BMC to fence it with: HA is on, but the host is Ineligible.
    assert enabled["hostha"] == {
        "hostid": host_id,
        "haenable": True,
        "hastate": "Ineligible",
        "haprovider": "simulatorhaprovider",
        "status": True,
    }

    async def listed() -> dict[str, Any]:
        found = await call(admin.listHostHAResources, hostid=host_id)
        return dict(found["hostha"][0])

    row = await wait_until(listed, lambda r: r["haenable"], timeout=30, what="HA listed on")
    assert row["hastate"] == "Ineligible"
    disabled = await call(admin.disableHAForHost, hostid=host_id, fetch_result=True)
    assert (disabled["hostha"]["haenable"], disabled["hostha"]["hastate"]) == (False, "Disabled")

    async with stack.http() as http:
        tenant = await new_tenant(http)
    with pytest.raises(CloudStackApiException) as refused:
        await call(client_of(stack, tenant, "get").enableHAForHost, hostid=host_id)
    assert refused.value.error["errorcode"] == 531
