"""Helpers for the volume operation tests: submit volume jobs to the right queue as the API
does (the VM's while attached, the volume's own otherwise), and check that a volume's books
(state, pool bytes, device, attachment) agree with the simulator."""

from __future__ import annotations

import uuid
from typing import Any
from uuid import UUID

from domain.cloud import Cloud
from domain.job_requests import (
    JobQueue,
    VmJobAccepted,
    VmJobSubmission,
    VolumeCreation,
    VolumeOperation,
)
from domain.storage import PrimaryStorage
from domain.volume import Volume, VolumeState
from domain.volume_attachments import VolumeAttachments, attachments_id_for
from domain.volume_operations import volume_id_for
from domain.volume_requests import volume_operation_request
from tests.support import Harness, enqueue, outcome
from workers.demo_cloud import DemoCloud

GIB = 1024**3


async def submit_volume_job(
    harness: Harness,
    zone: DemoCloud,
    volume_id: UUID,
    operation: VolumeOperation,
    *,
    job_id: UUID | None = None,
    route_by: UUID | None = None,
    **options: Any,
) -> VmJobAccepted:
    """Into the VM's queue while the volume is attached, its own queue otherwise; `route_by`
    names the volume whose queue it is when that is not `volume_id` (a snapshot's source)."""
    job_id = job_id or uuid.uuid4()
    request = volume_operation_request(
        operation,
        job_id=job_id,
        volume_id=volume_id,
        account_id=zone.admin_account_id,
        summary=f"{operation.value} {volume_id}",
        **options,
    )
    queue_volume_id = route_by or volume_id
    volume = harness.cloud.find(Volume, queue_volume_id)
    attached_to = volume.vm_id if volume is not None else None
    queue = (
        JobQueue.of_vm(attached_to, zone.admin_account_id, zone.zone_id)
        if attached_to is not None
        else JobQueue.of_volume(queue_volume_id, zone.admin_account_id, zone.zone_id)
    )
    return await enqueue(
        harness,
        queue,
        VmJobSubmission(
            job_id=job_id,
            job_type=operation.job_type,
            account_id=zone.admin_account_id,
            zone_id=zone.zone_id,
            summary=request.summary,
            fingerprint=operation.value,
            volume=request,
        ),
    )


async def run_volume_job(
    harness: Harness, zone: DemoCloud, volume_id: UUID, operation: VolumeOperation, **kw: Any
) -> tuple[UUID, str, Any]:
    accepted = await submit_volume_job(harness, zone, volume_id, operation, **kw)
    status, value = await outcome(harness.client, accepted.job_id)
    return accepted.job_id, status, value


async def create_volume(
    harness: Harness, zone: DemoCloud, name: str = "data", size_bytes: int = 5 * GIB
) -> UUID:
    job_id = uuid.uuid4()
    volume_id = volume_id_for(job_id)
    creation = VolumeCreation(
        name=name,
        zone_id=zone.zone_id,
        disk_offering_id=zone.disk_offering_id,
        size_bytes=size_bytes,
    )
    _, status, value = await run_volume_job(
        harness, zone, volume_id, VolumeOperation.CREATE, job_id=job_id, creation=creation
    )
    assert status == "succeeded", value
    return volume_id


def volume(cloud: Cloud, volume_id: UUID) -> Volume:
    return cloud.load(Volume, volume_id)


def volume_problems(cloud: Cloud, zone: DemoCloud, harness: Harness, volume_id: UUID) -> list[str]:
    """Where the volume's books and the simulator disagree. Empty when consistent.

    A volume is never left busy; Allocated/Expunged: no disk, no pool bytes; Ready: exactly one
    disk, on its pool, of its size, and its pool (only) holds its size; attached: its device is
    reserved for it on its VM and, when the VM runs, plugged in there; detached: plugged nowhere.
    """
    vol = volume(cloud, volume_id)
    found: list[str] = []
    disks = [
        (p, d.size_bytes)
        for p in zone.pool_ids
        for d in harness.driver.volumes_on(str(p))
        if d.volume_id == str(volume_id)
    ]
    held = {
        p: cloud.load(PrimaryStorage, p).allocations[str(volume_id)]
        for p in zone.pool_ids
        if str(volume_id) in cloud.load(PrimaryStorage, p).allocations
    }
    plugged = [
        vm_id
        for vm_id, attached in harness.driver.__dict__.get("_attachments", {}).items()
        if str(volume_id) in attached and vm_id in defined_vms(harness)
    ]
    if vol.is_transitional:
        found.append(f"left in transitional state {vol.state}")
    if vol.state in (VolumeState.ALLOCATED, VolumeState.EXPUNGED):
        if disks or held:
            found.append(f"{vol.state} but disks {disks}, pool bytes {held}")
    elif vol.state is VolumeState.READY:
        if disks != [(vol.pool_id, vol.size_bytes)]:
            found.append(f"Ready on {vol.pool_id} ({vol.size_bytes}) but disks are {disks}")
        if held != {vol.pool_id: vol.size_bytes}:
            found.append(f"Ready on {vol.pool_id} ({vol.size_bytes}) but pools hold {held}")
    if vol.vm_id is None:
        if plugged:
            found.append(f"detached but plugged into {plugged}")
    else:
        devices = cloud.find(VolumeAttachments, attachments_id_for(vol.vm_id))
        if devices is None or devices.device_of(volume_id) != vol.device_id:
            found.append(f"attached at {vol.device_id} but the VM's devices say otherwise")
    return found


def devices_of(cloud: Cloud, vm_id: UUID) -> dict[str, UUID]:
    found = cloud.find(VolumeAttachments, attachments_id_for(vm_id))
    return dict(found.devices) if found is not None else {}


def defined_vms(harness: Harness) -> set[str]:
    """VMs the simulator has defined on some host: a plug into a VM undefined since (stopped,
    destroyed) is gone with it, whatever the simulator's attachment table remembers."""
    return {
        vm.spec.vm_id
        for hosts in harness.driver.__dict__.get("_vms", {}).values()
        for vm in hosts.values()
    }
