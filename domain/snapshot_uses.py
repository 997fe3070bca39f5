"""Using a volume snapshot once it is backed up: revert its volume to it, make a new data
volume from it, or make a private template from it. Each is a decision over the event store,
idempotent by a command id built from the job id, like the snapshot's own jobs in
`domain.snapshot_operations` (whose checks and placement these share).

- Revert needs the volume's VM stopped (or the volume detached) and a snapshot of that volume.
- A volume made from a snapshot is a data volume of at least the snapshot's size, made at once
  on a pool of the zone serving the snapshot's hypervisor (the source volume's pool first).
- A template made from a snapshot is private to the account and lives on secondary storage.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from domain.catalog import Template
from domain.cloud import Cloud, Decision
from domain.cluster import Cluster
from domain.disk_placement import host_for_volume, host_reaching, pool_hypervisor
from domain.errors import IllegalStateTransition, InsufficientCapacity, InvalidParameter
from domain.job import Job
from domain.job_results import (
    TemplateFromSnapshot,
    VolumeFromSnapshot,
    succeed_with,
)
from domain.snapshot import (
    Snapshot,
    SnapshotState,
)
from domain.snapshot_operations import (
    check_backed_up,
    host_for_secondary,
    queue_may_end,
)
from domain.storage import PrimaryStorage, SecondaryStorage
from domain.virtual_machine import VirtualMachine, VmState
from domain.volume import Volume, VolumeEvent, VolumeState, VolumeType
from domain.volume_operations import open_job, volume_facts
from domain.volume_requests import (
    RevertSnapshotRequest,
    TemplateFromSnapshotRequest,
    VolumeFromSnapshotRequest,
)
from domain.zone import Zone

_V, _S = VolumeState, SnapshotState


# -- revert ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RevertPlan:
    pool_id: UUID
    host_id: UUID
    secondary_storage_id: UUID
    snapshot_size_bytes: int


def begin_revert(
    cloud: Cloud, request: RevertSnapshotRequest, submitted_at: datetime
) -> RevertPlan:
    job_id, snapshot_id = request.job_id, request.snapshot_id
    cloud.decide(lambda d: open_job(d, request, submitted_at))

    def decide(d: Decision) -> RevertPlan:
        volume = d.get(Volume, request.volume_id)
        snapshot = d.get(Snapshot, snapshot_id)
        job = d.get(Job, job_id)
        if not job.has_applied(f"{job_id}/began"):
            _check_revert(d, volume, snapshot)
        if volume.state is _V.READY:
            volume.transition(VolumeEvent.REVERT_SNAPSHOT_REQUESTED, f"{job_id}/revert-requested")
        job.enter_step(f"reverting to snapshot {snapshot.name}", f"{job_id}/began")
        assert volume.pool_id is not None and snapshot.secondary_storage_id is not None
        return RevertPlan(
            pool_id=volume.pool_id,
            host_id=host_for_volume(d, volume, d.get(PrimaryStorage, volume.pool_id)),
            secondary_storage_id=snapshot.secondary_storage_id,
            snapshot_size_bytes=snapshot.size_bytes,
        )

    return cloud.decide(decide)


def _check_revert(d: Decision, volume: Volume, snapshot: Snapshot) -> None:
    if snapshot.volume_id != volume.id:
        raise InvalidParameter(
            field="snapshot_id",
            message=f"snapshot {snapshot.name} was not taken of volume {volume.name}",
        )
    check_backed_up(snapshot, "revert")
    if volume.state is not _V.READY or volume.pool_id is None:
        raise IllegalStateTransition(
            f"cannot revert volume {volume.name} in state {volume.state} (it must be Ready)"
        )
    if volume.vm_id is not None:
        vm = d.get(VirtualMachine, volume.vm_id)
        if vm.state is not VmState.STOPPED:
            raise IllegalStateTransition(
                f"cannot revert volume {volume.name} while its virtual machine {vm.name} is "
                f"{vm.state}: stop it first"
            )


def undo_revert(cloud: Cloud, job_id: UUID, volume_id: UUID) -> None:
    def decide(d: Decision) -> None:
        volume = d.get(Volume, volume_id)
        if volume.state is _V.REVERT_SNAPSHOTTING:
            volume.transition(VolumeEvent.OPERATION_FAILED, f"{job_id}/revert-undone")

    cloud.decide(decide)


def complete_revert(
    cloud: Cloud, job_id: UUID, volume_id: UUID, snapshot_id: UUID, size_bytes: int
) -> VolumeFromSnapshot:
    """The disk holds the snapshot: Ready again, at the snapshot's size (a volume grown since
    the snapshot shrinks back with it, and its pool holds what the disk now is)."""

    def decide(d: Decision) -> VolumeFromSnapshot:
        volume = d.get(Volume, volume_id)
        if volume.state is _V.REVERT_SNAPSHOTTING:
            if size_bytes != volume.size_bytes:
                volume.record_resized(size_bytes, f"{job_id}/reverted")
            else:
                volume.transition(VolumeEvent.OPERATION_SUCCEEDED, f"{job_id}/reverted")
        if volume.pool_id is not None:
            pool = d.get(PrimaryStorage, volume.pool_id)
            if pool.allocations.get(str(volume.id)) != volume.size_bytes:
                pool.release(volume.id, f"{job_id}/pool-release-old")
                pool.allocate(volume.id, volume.size_bytes, f"{job_id}/pool-allocate-reverted")
        result = VolumeFromSnapshot(**volume_facts(volume), snapshot_id=snapshot_id)
        return succeed_with(d, job_id, result)

    return cloud.decide(decide)


# -- a new volume from a snapshot ----------------------------------------------------------------
@dataclass(frozen=True)
class VolumeFromSnapshotPlan:
    pool_id: UUID
    host_id: UUID
    secondary_storage_id: UUID
    size_bytes: int
    name: str


def begin_volume_from_snapshot(
    cloud: Cloud, request: VolumeFromSnapshotRequest, submitted_at: datetime
) -> VolumeFromSnapshotPlan:
    """Allocate the new data volume, take its bytes on a pool serving the snapshot's hypervisor
    and move it to Creating."""
    job_id, snapshot_id = request.job_id, request.snapshot_id
    cloud.decide(lambda d: open_job(d, request, submitted_at))

    def decide(d: Decision) -> VolumeFromSnapshotPlan:
        snapshot = d.get(Snapshot, snapshot_id)
        job = d.get(Job, job_id)
        if not job.has_applied(f"{job_id}/began"):
            check_backed_up(snapshot, "create a volume")
        volume = d.find(Volume, request.volume_id)
        if volume is None:
            volume = d.add(
                Volume.create_with_id(
                    request.volume_id,
                    name=request.name or f"{snapshot.name}-volume",
                    account_id=request.account_id,
                    zone_id=snapshot.zone_id,
                    volume_type=VolumeType.DATADISK.value,
                    size_bytes=snapshot.size_bytes,
                )
            )
        pool = _pool_for_snapshot_volume(d, volume, snapshot)
        pool.allocate(volume.id, volume.size_bytes, f"{job_id}/pool-allocate")
        if volume.state is _V.ALLOCATED:
            volume.transition(VolumeEvent.CREATE_REQUESTED, f"{job_id}/create-requested")
        job.enter_step(f"making volume {volume.name} from the snapshot", f"{job_id}/began")
        assert snapshot.secondary_storage_id is not None
        return VolumeFromSnapshotPlan(
            pool_id=pool.id,
            host_id=host_reaching(d.cloud, pool, snapshot.hypervisor).id,
            secondary_storage_id=snapshot.secondary_storage_id,
            size_bytes=volume.size_bytes,
            name=volume.name,
        )

    return cloud.decide(decide)


def _pool_for_snapshot_volume(d: Decision, volume: Volume, snapshot: Snapshot) -> PrimaryStorage:
    """The pool already holding this volume's bytes (a retried step), else the snapshot's
    source volume's pool, else any enabled pool of the zone serving the hypervisor with room."""
    zone = d.cloud.load(Zone, snapshot.zone_id)
    candidates: list[UUID] = []
    source = d.find(Volume, snapshot.volume_id)
    if source is not None and source.pool_id is not None:
        candidates.append(source.pool_id)
    candidates += [p for c in zone.cluster_ids for p in d.cloud.load(Cluster, c).storage_pool_ids]
    candidates += list(zone.zone_storage_pool_ids)
    for pool_id in candidates:
        if str(volume.id) in d.get(PrimaryStorage, pool_id).allocations:
            return d.get(PrimaryStorage, pool_id)
    for pool_id in dict.fromkeys(candidates):
        pool = d.get(PrimaryStorage, pool_id)
        serves = pool_hypervisor(d.cloud, pool)
        if pool.enabled and pool.fits(volume.size_bytes) and serves in (None, snapshot.hypervisor):
            return pool
    raise InsufficientCapacity(
        f"no {snapshot.hypervisor} primary storage in the zone has room for "
        f"{volume.size_bytes} bytes"
    )


def undo_volume_from_snapshot(cloud: Cloud, job_id: UUID, volume_id: UUID, pool_id: UUID) -> None:
    """The new volume never came to be: its pool bytes back, the volume record ends Expunged
    (CloudStack keeps removed rows) so nothing half-made is listed as usable."""

    def decide(d: Decision) -> None:
        volume = d.find(Volume, volume_id)
        d.get(PrimaryStorage, pool_id).release(volume_id, f"{job_id}/pool-release")
        if volume is None:
            return
        steps = (
            (_V.CREATING, VolumeEvent.OPERATION_FAILED, "create-failed"),
            (_V.ALLOCATED, VolumeEvent.DESTROY_REQUESTED, "destroy"),
            (_V.DESTROY, VolumeEvent.EXPUNGING_REQUESTED, "expunging"),
        )
        for state, volume_event, name in steps:
            if volume.state is state:
                volume.transition(volume_event, f"{job_id}/{name}", reason="its job failed")
        if volume.state is _V.EXPUNGING:
            volume.record_expunged(f"{job_id}/expunged")

    cloud.decide(decide)


def complete_volume_from_snapshot(
    cloud: Cloud,
    job_id: UUID,
    volume_id: UUID,
    snapshot_id: UUID,
    pool_id: UUID,
    path: str,
    size_bytes: int,
) -> VolumeFromSnapshot:
    def decide(d: Decision) -> VolumeFromSnapshot:
        volume = d.get(Volume, volume_id)
        snapshot = d.get(Snapshot, snapshot_id)
        if volume.state is _V.CREATING:
            volume.record_created(pool_id, path, size_bytes, f"{job_id}/created")
            volume.record_hypervisor(snapshot.hypervisor, f"{job_id}/hypervisor")
        pool = d.get(PrimaryStorage, pool_id)
        if pool.allocations.get(str(volume.id)) != volume.size_bytes:
            pool.release(volume.id, f"{job_id}/pool-release-planned")
            pool.allocate(volume.id, volume.size_bytes, f"{job_id}/pool-allocate-made")
        result = VolumeFromSnapshot(**volume_facts(volume), snapshot_id=snapshot_id)
        return succeed_with(d, job_id, result)

    return cloud.decide(decide)


# -- a template from a snapshot ------------------------------------------------------------------
@dataclass(frozen=True)
class TemplateFromSnapshotPlan:
    host_id: UUID
    secondary_storage_id: UUID


def begin_template_from_snapshot(
    cloud: Cloud, request: TemplateFromSnapshotRequest, submitted_at: datetime
) -> TemplateFromSnapshotPlan:
    """Hold the template's bytes on the snapshot's secondary storage."""
    job_id, snapshot_id, template_id = request.job_id, request.snapshot_id, request.template_id
    cloud.decide(lambda d: open_job(d, request, submitted_at))

    def decide(d: Decision) -> TemplateFromSnapshotPlan:
        snapshot = d.get(Snapshot, snapshot_id)
        job = d.get(Job, job_id)
        if not job.has_applied(f"{job_id}/began"):
            check_backed_up(snapshot, "make a template")
            if d.find(Template, template_id) is not None:
                raise IllegalStateTransition(f"template {template_id} already exists")
        assert snapshot.secondary_storage_id is not None
        storage = d.get(SecondaryStorage, snapshot.secondary_storage_id)
        storage.store(template_id, snapshot.size_bytes, f"{job_id}/secondary-reserve")
        job.enter_step("making the template on secondary storage", f"{job_id}/began")
        return TemplateFromSnapshotPlan(
            host_id=host_for_secondary(d, snapshot), secondary_storage_id=storage.id
        )

    return cloud.decide(decide)


def undo_template_from_snapshot(
    cloud: Cloud, job_id: UUID, template_id: UUID, secondary_storage_id: UUID
) -> None:
    def decide(d: Decision) -> None:
        if d.find(Template, template_id) is None:
            d.get(SecondaryStorage, secondary_storage_id).remove(
                template_id, f"{job_id}/secondary-release"
            )

    cloud.decide(decide)


def complete_template_from_snapshot(
    cloud: Cloud,
    request: TemplateFromSnapshotRequest,
    url: str,
    image_format: str,
    size_bytes: int,
) -> TemplateFromSnapshot:
    """Register the template (private to the account, in the snapshot's zone)."""
    job_id, template_id, snapshot_id = request.job_id, request.template_id, request.snapshot_id

    def decide(d: Decision) -> TemplateFromSnapshot:
        snapshot = d.get(Snapshot, snapshot_id)
        template = d.find(Template, template_id)
        if template is None:
            template = d.add(
                Template.create_with_id(
                    template_id,
                    name=request.name or f"{snapshot.name}-template",
                    display_text=f"from snapshot {snapshot.name}",
                    hypervisor=snapshot.hypervisor,
                    format=image_format,
                    os_type=request.os_type or _os_type_of(d, snapshot),
                    url=url,
                    size_bytes=max(size_bytes, snapshot.size_bytes),
                    zone_id=snapshot.zone_id,
                    account_id=request.account_id,
                    public=False,
                )
            )
        result = TemplateFromSnapshot(
            template_id=template.id,
            snapshot_id=snapshot.id,
            name=template.name,
            url=template.url,
            size_bytes=template.size_bytes,
            removed=queue_may_end(d, snapshot.volume_id),
        )
        return succeed_with(d, job_id, result)

    return cloud.decide(decide)


def _os_type_of(d: Decision, snapshot: Snapshot) -> str:
    """The OS of the VM the snapshot's volume belonged to, through its template."""
    volume = d.find(Volume, snapshot.volume_id)
    template_id = volume.template_id if volume is not None else None
    if template_id is None and volume is not None and volume.vm_id is not None:
        vm = d.find(VirtualMachine, volume.vm_id)
        template_id = vm.template_id if vm is not None else None
    template = d.find(Template, template_id) if template_id is not None else None
    return template.os_type if template is not None else "Other Linux (64-bit)"
