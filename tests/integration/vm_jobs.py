"""Helpers for the VM operation tests: submit jobs to a VM's queue as the API does, and check
that a VM's books (capacity, IP, storage) agree with the hypervisor and its state."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any
from uuid import UUID

from temporalio import activity
from temporalio.exceptions import ApplicationError

from domain.cloud import Cloud
from domain.deployment import virtual_machine_id_for
from domain.guest_network import GuestNetwork
from domain.host import Host
from domain.job import Job
from domain.job_requests import (
    DeploymentOrder,
    DeployVirtualMachineRequest,
    JobQueue,
    VmJobAccepted,
    VmJobSubmission,
    VmOperation,
)
from domain.storage import PrimaryStorage
from domain.virtual_machine import TRANSITIONAL_STATES, VirtualMachine, VmState
from domain.vm_requests import vm_operation_request
from domain.volume import Volume, VolumeState
from tests.support import Harness, enqueue, outcome
from workers.demo_cloud import DemoCloud


async def submit(
    harness: Harness,
    zone: DemoCloud,
    vm_id: UUID,
    operation: VmOperation,
    *,
    job_id: UUID | None = None,
    expunge_retry_seconds: float = 0.5,
    **options: Any,
) -> VmJobAccepted:
    job_id = job_id or uuid.uuid4()
    request = vm_operation_request(
        operation,
        job_id=job_id,
        vm_id=vm_id,
        account_id=zone.admin_account_id,
        summary=f"{operation.value} {vm_id}",
        **options,
    )
    return await _submit(
        harness,
        zone,
        vm_id,
        VmJobSubmission(
            job_id=job_id,
            job_type=operation.job_type,
            account_id=zone.admin_account_id,
            zone_id=zone.zone_id,
            summary=request.summary,
            fingerprint=operation.value,
            operation=request,
        ),
        expunge_retry_seconds,
    )


async def deploy(
    harness: Harness,
    zone: DemoCloud,
    name: str = "vm",
    *,
    expunge_retry_seconds: float = 0.5,
    offering_id: UUID | None = None,
) -> tuple[UUID, UUID]:
    """Deploy through the VM's queue, as the API does; (job id, vm id) once it runs."""
    job_id = uuid.uuid4()
    vm_id = virtual_machine_id_for(job_id)
    order = DeploymentOrder(
        account_id=zone.admin_account_id,
        zone_id=zone.zone_id,
        service_offering_id=offering_id or zone.small_offering_id,
        template_id=zone.template_id,
        network_id=zone.network_id,
        name=name,
        display_name=name,
    )
    await _submit(
        harness,
        zone,
        vm_id,
        VmJobSubmission(
            job_id=job_id,
            job_type="DeployVirtualMachine",
            account_id=zone.admin_account_id,
            zone_id=zone.zone_id,
            summary=f"deploy {name}",
            deployment=DeployVirtualMachineRequest(
                job_id=job_id, order=order, summary=f"deploy {name}", waits_for_turn=True
            ),
        ),
        expunge_retry_seconds,
    )
    return job_id, vm_id


async def _submit(
    harness: Harness,
    zone: DemoCloud,
    vm_id: UUID,
    submission: VmJobSubmission,
    expunge_retry_seconds: float,
) -> VmJobAccepted:
    """As the API submits, with a short retry of an incomplete expunge."""
    queue = JobQueue.of_vm(vm_id, zone.admin_account_id, zone.zone_id)
    state = queue.state.model_copy(update={"expunge_retry_seconds": expunge_retry_seconds})
    return await enqueue(harness, replace(queue, state=state), submission)


def job_of(cloud: Cloud, job_id: UUID) -> Job:
    return cloud.load(Job, job_id)


def fail_in(workflow_type: str, step: str, *, once: bool = False) -> Callable[..., Any]:
    """The named step fails for good, but only in jobs of this workflow type (the deploy that
    sets the VM up is left alone); with `once`, only the first time in any job."""
    failed: set[str] = set()

    def around(name: str, call: Callable[[], Any]) -> Any:
        info = activity.info()
        if name == step and info.workflow_type == workflow_type and not (once and name in failed):
            failed.add(name)
            raise ApplicationError(
                f"injected failure at {step}", 530, type="InjectedFailure", non_retryable=True
            )
        return call()

    return around


async def migrate(
    harness: Harness,
    zone: DemoCloud,
    vm_id: UUID,
    host_id: UUID | None = None,
    job_id: UUID | None = None,
) -> tuple[UUID, str, Any]:
    """A migrate job (to `host_id`, or where the planner chooses) and how it ended."""
    accepted = await submit(
        harness, zone, vm_id, VmOperation.MIGRATE, host_id=host_id, job_id=job_id
    )
    status, value = await outcome(harness.client, accepted.job_id)
    return accepted.job_id, status, value


def vm(cloud: Cloud, vm_id: UUID) -> VirtualMachine:
    return cloud.load(VirtualMachine, vm_id)


def cluster_of(cloud: Cloud, host_id: UUID | None) -> UUID:
    assert host_id is not None
    return cloud.load(Host, host_id).cluster_id


def problems_of(cloud: Cloud, zone: DemoCloud, harness: Harness, vm_id: UUID) -> list[str]:
    """Where the VM's books and the hypervisor disagree with its state. Empty when consistent.

    Running: capacity on its host only, defined and powered on there. Stopped, Destroyed, Error:
    no capacity and on no hypervisor. Until expunged it keeps its IP and (once made) its disk;
    expunged: nothing at all is left. Never in a transitional state once its jobs ended.
    """
    vm = cloud.load(VirtualMachine, vm_id)
    volume = cloud.load(Volume, vm.root_volume_id)
    found: list[str] = []
    held = [h for h in zone.host_ids if cloud.load(Host, h).reservation_for(vm_id) is not None]
    on_hypervisor = [
        (h, v.power_state.value)
        for h in zone.host_ids
        for v in harness.driver.vms_on(str(h))
        if v.vm_id == str(vm_id)
    ]
    ip_held = [
        ip
        for ip, owner in cloud.load(GuestNetwork, vm.network_id).allocations.items()
        if owner == str(vm_id)
    ]
    pool_bytes = {
        p: cloud.load(PrimaryStorage, p).allocations.get(str(volume.id), 0) for p in zone.pool_ids
    }
    disks = [
        p
        for p in zone.pool_ids
        for d in harness.driver.volumes_on(str(p))
        if d.volume_id == str(volume.id)
    ]
    if vm.is_transitional and not vm.is_removed:
        found.append(f"left in transitional state {vm.state}")
    if vm.is_removed:
        if held or on_hypervisor or ip_held or any(pool_bytes.values()) or disks:
            found.append(
                f"removed but holds capacity {held}, hypervisor {on_hypervisor}, IP {ip_held}, "
                f"pool bytes {pool_bytes}, disks {disks}"
            )
        if volume.state is not VolumeState.EXPUNGED:
            found.append(f"removed but its volume is {volume.state}")
        return found
    if vm.state is VmState.RUNNING:
        if held != [vm.host_id]:
            found.append(f"Running on {vm.host_id} but capacity held on {held}")
        if on_hypervisor != [(vm.host_id, "PowerOn")]:
            found.append(f"Running on {vm.host_id} but hypervisor shows {on_hypervisor}")
    elif vm.state not in TRANSITIONAL_STATES:
        if held:
            found.append(f"{vm.state} but capacity held on {held}")
        if on_hypervisor:
            found.append(f"{vm.state} but on the hypervisor: {on_hypervisor}")
    if vm.state is not VmState.ERROR:
        if not ip_held:
            found.append(f"{vm.state} but lost its IP")
        if volume.state is not VolumeState.READY or len(disks) != 1:
            found.append(f"{vm.state} but its volume is {volume.state} on {disks}")
    return found
