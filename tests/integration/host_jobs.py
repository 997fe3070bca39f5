"""Helpers for the host maintenance tests: a host carrying VMs, and its jobs submitted as the
API submits them."""

from __future__ import annotations

import uuid
from typing import Any
from uuid import UUID

from temporalio.client import Client

from domain import inventory
from domain.cloud import Cloud
from domain.host import Host
from domain.host_maintenance import (
    CANCEL_MAINTENANCE_JOB,
    PREPARE_MAINTENANCE_JOB,
    CancelHostMaintenanceRequest,
    HostMaintenanceRequest,
    evacuation_job_id,
)
from domain.ids import named_id
from domain.job import Job
from domain.job_requests import VmOperation
from domain.virtual_machine import VirtualMachine
from tests.integration.vm_jobs import deploy, problems_of, submit
from tests.support import Harness, outcome, running_worker, wait_until
from workers.demo_cloud import DemoCloud
from workflows.host_maintenance import MAX_ROUNDS

#: Every step of a maintenance job that changes the world, in the order it runs them.
STEPS = [
    "host.begin_maintenance",
    "host.unassign_stopped_vms",
    "host.vms_to_move",
    "host.submit_evacuation",
    "host.await_evacuation",
    "host.complete_maintenance",
]


def host(cloud: Cloud, host_id: UUID) -> Host:
    return cloud.load(Host, host_id)


def vm(cloud: Cloud, vm_id: UUID) -> VirtualMachine:
    return cloud.load(VirtualMachine, vm_id)


def ha_offering(cloud: Cloud) -> UUID:
    return inventory.add_service_offering(
        cloud,
        named_id("service_offering", "HA Instance"),
        "HA Instance",
        display_text="1 vCPU, 1 GHz, 512 MiB, restarted by HA",
        cpu_count=1,
        cpu_speed_mhz=1000,
        memory_mib=512,
        ha_enabled=True,
    ).id


async def running(harness: Harness, zone: DemoCloud, name: str, **kwargs: Any) -> UUID:
    job_id, vm_id = await deploy(harness, zone, name, **kwargs)
    status, value = await outcome(harness.client, job_id)
    assert status == "succeeded", value
    return vm_id


async def busy_host(harness: Harness, zone: DemoCloud, ha: UUID) -> tuple[UUID, list[UUID]]:
    """Two running VMs (the second HA-enabled) and a stopped one, all on one host."""
    names = ["plain-a", "ha-b", "stopped-c"]
    vm_ids = [
        await running(harness, zone, n, offering_id=ha if n.startswith("ha") else None)
        for n in names
    ]
    on = {vm(harness.cloud, v).host_id for v in vm_ids}
    assert len(on) == 1, f"first fit put the VMs on {on}"  # the test relies on that
    accepted = await submit(harness, zone, vm_ids[2], VmOperation.STOP)
    assert (await outcome(harness.client, accepted.job_id))[0] == "succeeded"
    host_id = on.pop()
    assert host_id is not None
    return host_id, vm_ids


async def prepare(
    harness: Harness, host_id: UUID, stopped: list[UUID] | None = None
) -> tuple[UUID, str, Any]:
    job_id = uuid.uuid4()
    await harness.client.start_workflow(
        PREPARE_MAINTENANCE_JOB,
        HostMaintenanceRequest(
            job_id=job_id,
            host_id=host_id,
            account_id=uuid.uuid4(),
            summary=f"Prepare host {host_id} for maintenance",
            stopped_vm_ids=stopped or [],
        ),
        id=str(job_id),
        task_queue=harness.task_queue,
    )
    status, value = await outcome(harness.client, job_id)
    return job_id, status, value


async def cancel_maintenance(harness: Harness, host_id: UUID) -> tuple[UUID, str, Any]:
    job_id = uuid.uuid4()
    await harness.client.start_workflow(
        CANCEL_MAINTENANCE_JOB,
        CancelHostMaintenanceRequest(
            job_id=job_id, host_id=host_id, account_id=uuid.uuid4(), summary="cancel maintenance"
        ),
        id=str(job_id),
        task_queue=harness.task_queue,
    )
    status, value = await outcome(harness.client, job_id)
    return job_id, status, value


async def evacuations_ended(cloud: Cloud, job_id: UUID, vm_ids: list[UUID]) -> None:
    """Wait until every migrate job the maintenance submitted has ended: one past its point
    of no return when the maintenance failed finishes on its own, after the maintenance."""
    ids = [evacuation_job_id(job_id, v, n) for v in vm_ids for n in range(1, MAX_ROUNDS + 1)]

    async def running() -> list[UUID]:
        jobs = [(i, cloud.find(Job, i)) for i in ids]
        return [i for i, job in jobs if job is not None and not job.status.is_final]

    await wait_until(running, lambda left: left == [], timeout=60, what="the migrate jobs to end")


def consistent(cloud: Cloud, zone: DemoCloud, harness: Harness, vm_ids: list[UUID]) -> None:
    for vm_id in vm_ids:
        assert problems_of(cloud, zone, harness, vm_id) == [], vm(cloud, vm_id).name


async def prepare_without_faults(client: Client, cloud: Cloud, host_id: UUID) -> str:
    async with running_worker(client, cloud) as harness:
        _, status, value = await prepare(harness, host_id)
        assert status == "succeeded", value
        return str(value["resource_state"])
