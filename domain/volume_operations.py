"""Operations on a data volume, as the domain sees them: create, attach, detach, resize,
migrate, delete. Each step is a decision over the event store, idempotent by a command id built
from the job id (`f"{job_id}/<step>"`), and moves the job's current step in the same write.

CloudStack's semantics, kept here:
- createVolume only allocates: the disk is made on primary storage when the volume is first
  attached, on a pool the VM's cluster reaches (the root volume's pool first).
- A volume attaches to a Running or Stopped VM of the same zone and account whose hypervisor
  matches the disk's; a Running VM gets the disk plugged in on its host, a Stopped one (defined
  on no hypervisor) only on the books. The root volume never detaches.
- Resize grows; shrinking needs an explicit `shrink_ok`. A volume with no disk yet only changes
  its size; one on storage reserves the new size on its pool before the disk is grown.
- Migrate moves the disk of a detached volume, or of one whose VM is stopped, to another pool.
- Delete refuses an attached volume (536); it is the point of no return of the job.
- On a VM's expunge, its data volumes are detached and survive (the root volume is expunged).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TypedDict
from uuid import UUID

from domain import job_records
from domain.catalog import DiskOffering
from domain.cloud import Cloud, Decision
from domain.cluster import Cluster
from domain.disk_placement import (
    host_for_volume,
    host_reaching,
    pool_for_new_disk,
    pool_hypervisor,
    reaches,
    vm_cluster_id,
)
from domain.errors import (
    IllegalStateTransition,
    InvalidParameter,
    ResourceInUse,
)
from domain.job import Job
from domain.job_records import JobTicket
from domain.job_results import DeletedVolume, VolumeJobResult, succeed_with
from domain.snapshot import IN_PROGRESS as SNAPSHOT_IN_PROGRESS
from domain.snapshot import Snapshot, SnapshotEvent, SnapshotState
from domain.storage import PrimaryStorage
from domain.virtual_machine import VirtualMachine, VmState
from domain.volume import VOLUME_STATE_MACHINE, Volume, VolumeEvent, VolumeState, VolumeType
from domain.volume_attachments import VolumeAttachments, attachments_id_for
from domain.volume_requests import (
    VOLUME_RESOURCE,
    AttachVolumeRequest,
    CreateVolumeRequest,
    DeleteVolumeRequest,
    DetachVolumeRequest,
    MigrateVolumeRequest,
    ResizeVolumeRequest,
    SnapshotJobRequest,
    VolumeOperation,
    VolumeRequest,
)
from domain.volume_rules import (
    VM_STATES_FOR_ATTACHMENT,
    check_allowed,
    check_new_size,
)
from domain.zone import Zone

_V = VolumeState
#: What a failed job's volume goes back to: every busy state fails back to a stable one.
_FAILS_BACK = frozenset(
    {
        _V.CREATING,
        _V.ATTACHING,
        _V.RESIZING,
        _V.MIGRATING,
        _V.SNAPSHOTTING,
        _V.REVERT_SNAPSHOTTING,
    }
)


def volume_id_for(job_id: UUID) -> UUID:
    from domain.ids import derived_id

    return derived_id(job_id, "volume")


# -- the job -------------------------------------------------------------------------------
def _zone_of(d: Decision, request: VolumeRequest) -> UUID | None:
    if isinstance(request, CreateVolumeRequest):
        return request.creation.zone_id
    volume = d.find(Volume, request.volume_id)
    return volume.zone_id if volume is not None else None


def job_ticket(d: Decision, request: VolumeRequest, submitted_at: datetime) -> JobTicket:
    return JobTicket(
        job_id=request.job_id,
        job_type=request.operation.job_type,
        account_id=request.account_id,
        resource_type=VOLUME_RESOURCE,
        resource_id=request.volume_id,
        zone_id=_zone_of(d, request),
        summary=request.summary,
        submitted_at=submitted_at,
    )


def open_job(d: Decision, request: VolumeRequest, submitted_at: datetime) -> Job:
    return job_records.open_job(d, job_ticket(d, request, submitted_at))


def record_queued_job_cancelled(
    cloud: Cloud, request: VolumeRequest, submitted_at: datetime, reason: str
) -> None:
    cloud.decide(
        lambda d: job_records.end_unsuccessfully(
            d, job_ticket(d, request, submitted_at), 0, reason, cancelled=True
        )
    )


def fail(
    cloud: Cloud,
    request: VolumeRequest,
    submitted_at: datetime,
    error_code: int,
    error_text: str,
    *,
    cancelled: bool,
) -> str | None:
    """The final word on a job that did not succeed, after its undos ran: a volume still busy
    (the undos could not run: a terminated job) fails back to its stable state."""
    job_id = request.job_id

    def decide(d: Decision) -> str | None:
        volume = d.find(Volume, request.volume_id)
        if volume is not None and volume.state in _FAILS_BACK:
            volume.transition(VolumeEvent.OPERATION_FAILED, f"{job_id}/failed", reason=error_text)
        snapshot = (
            d.find(Snapshot, request.snapshot_id)
            if isinstance(request, SnapshotJobRequest)
            else None
        )
        if snapshot is not None and snapshot.state in SNAPSHOT_IN_PROGRESS - {
            SnapshotState.DESTROYING
        }:
            # Taking it failed → Error. A delete that failed past its point of no return stays
            # Destroying (its copies may be gone): deleting it again finishes it.
            snapshot.transition(
                SnapshotEvent.OPERATION_FAILED, f"{job_id}/snapshot-failed", reason=error_text
            )
        job_records.end_unsuccessfully(
            d, job_ticket(d, request, submitted_at), error_code, error_text, cancelled=cancelled
        )
        return volume.state.value if volume is not None else None

    return cloud.decide(decide)


class VolumeFacts(TypedDict):
    """What every volume job's result says of the volume (`VolumeJobResult`'s fields)."""

    volume_id: UUID
    state: str
    size_bytes: int
    pool_id: UUID | None
    virtual_machine_id: UUID | None
    device_id: int | None


def volume_facts(volume: Volume) -> VolumeFacts:
    return VolumeFacts(
        volume_id=volume.id,
        state=volume.state.value,
        size_bytes=volume.size_bytes,
        pool_id=volume.pool_id,
        virtual_machine_id=volume.vm_id,
        device_id=volume.device_id,
    )


def _succeed(d: Decision, job_id: UUID, volume: Volume) -> VolumeJobResult:
    return succeed_with(d, job_id, VolumeJobResult(**volume_facts(volume)))


def _step(d: Decision, job_id: UUID, step: str, name: str) -> None:
    job_records.enter_step(d, job_id, step, f"{name}-step")


# -- create ----------------------------------------------------------------------------------
def validate_creation(
    cloud: Cloud, zone_id: UUID, disk_offering_id: UUID, size_bytes: int | None
) -> tuple[DiskOffering, int]:
    """Refuse, before any job starts, a volume that can never be created. Returns the offering
    and the size the volume will have."""
    zone = cloud.find(Zone, zone_id)
    if zone is None:
        raise InvalidParameter(field="zone_id", message=f"zone {zone_id} not found")
    offering = cloud.find(DiskOffering, disk_offering_id)
    if offering is None:
        raise InvalidParameter(
            field="disk_offering_id", message=f"disk offering {disk_offering_id} not found"
        )
    if not offering.active:
        raise InvalidParameter(
            field="disk_offering_id", message=f"disk offering {offering.name} is inactive"
        )
    if offering.customized:
        if size_bytes is None or size_bytes <= 0:
            raise InvalidParameter(
                field="size_gib",
                message=f"disk offering {offering.name} is customized: give a positive size",
            )
        return offering, size_bytes
    if size_bytes is not None and size_bytes != offering.size_bytes:
        raise InvalidParameter(
            field="size_gib",
            message=f"disk offering {offering.name} has a fixed size; leave size_gib out",
        )
    return offering, offering.size_bytes


def create(cloud: Cloud, request: CreateVolumeRequest, submitted_at: datetime) -> VolumeJobResult:
    """Record the volume Allocated (no disk yet: it is made when first attached)."""
    creation = request.creation
    validate_creation(cloud, creation.zone_id, creation.disk_offering_id, creation.size_bytes)

    def decide(d: Decision) -> VolumeJobResult:
        open_job(d, request, submitted_at)
        volume = d.find(Volume, request.volume_id)
        if volume is None:
            volume = d.add(
                Volume.create_with_id(
                    request.volume_id,
                    name=creation.name,
                    account_id=request.account_id,
                    zone_id=creation.zone_id,
                    volume_type=VolumeType.DATADISK.value,
                    size_bytes=creation.size_bytes,
                    disk_offering_id=creation.disk_offering_id,
                )
            )
        return _succeed(d, request.job_id, volume)

    return cloud.decide(decide)


# -- attach ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class AttachPlan:
    vm_id: UUID
    device_id: int
    #: The pool the disk is on, or is about to be made on.
    pool_id: UUID
    #: Whether this job makes the disk (the volume was only allocated).
    creates_disk: bool
    #: The host the disk is made through (when `creates_disk`).
    create_host_id: UUID | None
    #: The VM's host when it runs (the disk is plugged in there), else None.
    vm_host_id: UUID | None


def begin_attach(cloud: Cloud, request: AttachVolumeRequest, submitted_at: datetime) -> AttachPlan:
    """Check the VM and the volume, reserve the device, and either take the pool's bytes and
    move an allocated volume to Creating or move a ready one to Attaching."""
    job_id, vm_id = request.job_id, request.vm_id
    cloud.decide(lambda d: open_job(d, request, submitted_at))

    def decide(d: Decision) -> AttachPlan:
        volume = d.get(Volume, request.volume_id)
        job = d.get(Job, job_id)
        vm = d.cloud.find(VirtualMachine, vm_id)
        if vm is None or vm.is_removed:
            raise IllegalStateTransition(f"virtual machine {vm_id} does not exist any more")
        began = job.has_applied(f"{job_id}/began")
        if not began:
            _check_attach(cloud, volume, vm)
        attachments = d.find(VolumeAttachments, attachments_id_for(vm.id))
        if attachments is None:
            attachments = d.add(
                VolumeAttachments.create_with_id(attachments_id_for(vm.id), vm_id=vm.id)
            )
        device_id = attachments.reserve(volume.id, f"{job_id}/device")
        creates_disk = volume.state is _V.ALLOCATED or (began and volume.state is _V.CREATING)
        if creates_disk:
            pool_id = _begin_disk(d, job_id, volume, vm)
            create_host = host_reaching(cloud, d.get(PrimaryStorage, pool_id), vm.hypervisor)
            create_host_id: UUID | None = vm.host_id if vm.host_id is not None else create_host.id
        else:
            if volume.state is _V.READY:
                volume.transition(VolumeEvent.ATTACH_REQUESTED, f"{job_id}/attach-requested")
            assert volume.pool_id is not None
            pool_id, create_host_id = volume.pool_id, None
        job.enter_step(f"attaching at device {device_id}", f"{job_id}/began")
        return AttachPlan(
            vm_id=vm.id,
            device_id=device_id,
            pool_id=pool_id,
            creates_disk=creates_disk,
            create_host_id=create_host_id,
            vm_host_id=vm.host_id if vm.state is VmState.RUNNING else None,
        )

    return cloud.decide(decide)


def _begin_disk(d: Decision, job_id: UUID, volume: Volume, vm: VirtualMachine) -> UUID:
    """Allocated → Creating on a pool the VM reaches, its bytes taken (once per job)."""
    if volume.state is _V.CREATING:
        held = [
            p
            for p in _pools_holding(d.cloud, volume)
            if d.get(PrimaryStorage, p).allocations.get(str(volume.id))
        ]
        if held:
            return held[0]
    pool = pool_for_new_disk(d.cloud, vm, volume.size_bytes)
    d.get(PrimaryStorage, pool.id).allocate(volume.id, volume.size_bytes, f"{job_id}/pool-allocate")
    if volume.state is _V.ALLOCATED:
        volume.transition(VolumeEvent.CREATE_REQUESTED, f"{job_id}/create-requested")
    return pool.id


def _pools_holding(cloud: Cloud, volume: Volume) -> list[UUID]:
    zone = cloud.load(Zone, volume.zone_id)
    pools = [p for c in zone.cluster_ids for p in cloud.load(Cluster, c).storage_pool_ids]
    return pools + list(zone.zone_storage_pool_ids)


def _check_attach(cloud: Cloud, volume: Volume, vm: VirtualMachine) -> None:
    check_allowed(volume, VolumeOperation.ATTACH)
    if volume.volume_type is not VolumeType.DATADISK:
        raise InvalidParameter(f"volume {volume.name} is a root volume and cannot be attached")
    if volume.vm_id is not None:
        raise ResourceInUse(f"volume {volume.name} is already attached to a virtual machine")
    if vm.state not in VM_STATES_FOR_ATTACHMENT:
        raise IllegalStateTransition(
            f"cannot attach volume {volume.name} to virtual machine {vm.name} in state "
            f"{vm.state} (it must be Running or Stopped)"
        )
    if vm.zone_id != volume.zone_id:
        raise InvalidParameter(
            field="vm_id", message=f"volume {volume.name} and VM {vm.name} are in different zones"
        )
    if vm.account_id != volume.account_id:
        raise InvalidParameter(
            field="vm_id",
            message=f"volume {volume.name} and VM {vm.name} belong to different accounts",
        )
    if volume.pool_id is not None:
        pool = cloud.load(PrimaryStorage, volume.pool_id)
        made_for = volume.hypervisor or pool_hypervisor(cloud, pool)
        if made_for is not None and made_for != vm.hypervisor:
            raise InvalidParameter(
                field="vm_id",
                message=f"volume {volume.name} was created for {made_for}; it cannot be attached "
                f"to {vm.hypervisor} virtual machine {vm.name}",
            )
        if not reaches(pool, vm_cluster_id(cloud, vm)):
            raise InvalidParameter(
                field="vm_id",
                message=f"volume {volume.name} is on primary storage {pool.name}, which the "
                f"cluster of virtual machine {vm.name} does not reach; migrate it first",
            )


def undo_attach(cloud: Cloud, job_id: UUID, volume_id: UUID, vm_id: UUID, pool_id: UUID) -> None:
    """Back to where the attach found it: a made-for-this-job disk's bytes back and the volume
    Allocated again, or Attaching → Ready; the device free."""

    def decide(d: Decision) -> None:
        volume = d.get(Volume, volume_id)
        if volume.state is _V.CREATING:
            volume.transition(VolumeEvent.OPERATION_FAILED, f"{job_id}/create-undone")
            d.get(PrimaryStorage, pool_id).release(volume_id, f"{job_id}/pool-release")
        elif volume.state is _V.ATTACHING:
            volume.transition(VolumeEvent.OPERATION_FAILED, f"{job_id}/attach-undone")
        attachments = d.find(VolumeAttachments, attachments_id_for(vm_id))
        if attachments is not None and volume.vm_id != vm_id:
            attachments.release(volume_id, f"{job_id}/device-release")

    cloud.decide(decide)


def complete_attach(
    cloud: Cloud,
    job_id: UUID,
    volume_id: UUID,
    vm_id: UUID,
    device_id: int,
    created: tuple[UUID, str, int, str] | None,
) -> VolumeJobResult:
    """The disk is made (if it had to be) and plugged in (if the VM runs): record it all in one
    write. `created` is (pool id, path, size, hypervisor) of a disk this job made."""

    def decide(d: Decision) -> VolumeJobResult:
        volume = d.get(Volume, volume_id)
        if created is not None and volume.state is _V.CREATING:
            pool_id, path, size_bytes, hypervisor = created
            volume.record_created(pool_id, path, size_bytes, f"{job_id}/created")
            volume.record_hypervisor(hypervisor, f"{job_id}/hypervisor")
        if volume.state is _V.READY and volume.vm_id is None:
            volume.transition(VolumeEvent.ATTACH_REQUESTED, f"{job_id}/attach-requested")
        if volume.state is _V.ATTACHING:
            volume.record_attached(vm_id, device_id, f"{job_id}/attached")
        return _succeed(d, job_id, volume)

    return cloud.decide(decide)


# -- detach ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class DetachPlan:
    vm_id: UUID
    device_id: int | None
    #: The VM's host when it runs (the disk is unplugged there), else None.
    vm_host_id: UUID | None


def begin_detach(cloud: Cloud, request: DetachVolumeRequest, submitted_at: datetime) -> DetachPlan:
    job_id = request.job_id
    cloud.decide(lambda d: open_job(d, request, submitted_at))

    def decide(d: Decision) -> DetachPlan:
        volume = d.get(Volume, request.volume_id)
        job = d.get(Job, job_id)
        if volume.vm_id is None:
            raise IllegalStateTransition(f"volume {volume.name} is not attached")
        vm = d.get(VirtualMachine, volume.vm_id)
        if not job.has_applied(f"{job_id}/began"):
            check_allowed(volume, VolumeOperation.DETACH)
            if volume.volume_type is not VolumeType.DATADISK:
                raise InvalidParameter(
                    f"volume {volume.name} is a root volume and cannot be detached"
                )
            if vm.state not in VM_STATES_FOR_ATTACHMENT:
                raise IllegalStateTransition(
                    f"cannot detach volume {volume.name} from virtual machine {vm.name} in "
                    f"state {vm.state} (it must be Running or Stopped)"
                )
        job.enter_step(f"detaching from {vm.name}", f"{job_id}/began")
        return DetachPlan(
            vm_id=vm.id,
            device_id=volume.device_id,
            vm_host_id=vm.host_id if vm.state is VmState.RUNNING else None,
        )

    return cloud.decide(decide)


def complete_detach(cloud: Cloud, job_id: UUID, volume_id: UUID) -> VolumeJobResult:
    def decide(d: Decision) -> VolumeJobResult:
        volume = d.get(Volume, volume_id)
        vm_id = volume.vm_id
        volume.record_detached(f"{job_id}/detached")
        if vm_id is not None:
            attachments = d.find(VolumeAttachments, attachments_id_for(vm_id))
            if attachments is not None:
                attachments.release(volume_id, f"{job_id}/device-release")
        return _succeed(d, job_id, volume)

    return cloud.decide(decide)


def detach_from_removed_vm(cloud: Cloud, vm_id: UUID, command_prefix: str) -> list[str]:
    """CloudStack's rule on expunge: the VM's data volumes are detached and survive. The VM is
    gone from its hypervisor already, so this is only the books. Returns the volumes detached."""

    def decide(d: Decision) -> list[str]:
        attachments = d.find(VolumeAttachments, attachments_id_for(vm_id))
        if attachments is None:
            return []
        detached: list[str] = []
        for volume_id in attachments.volume_ids:
            volume = d.get(Volume, volume_id)
            if volume.vm_id == vm_id:
                volume.record_detached(
                    f"{command_prefix}/detach/{volume_id}", reason="its VM was expunged"
                )
            attachments.release(volume_id, f"{command_prefix}/device-release/{volume_id}")
            detached.append(str(volume_id))
        return detached

    return cloud.decide(decide)


# -- resize ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ResizePlan:
    #: None: the volume has no disk yet, only its size changes.
    pool_id: UUID | None
    host_id: UUID | None
    new_size_bytes: int


def begin_resize(cloud: Cloud, request: ResizeVolumeRequest, submitted_at: datetime) -> ResizePlan:
    """Check the size; a ready volume goes Resizing with its pool holding the new size."""
    job_id = request.job_id
    new_size = request.size_bytes
    cloud.decide(lambda d: open_job(d, request, submitted_at))

    def decide(d: Decision) -> ResizePlan:
        volume = d.get(Volume, request.volume_id)
        job = d.get(Job, job_id)
        if not job.has_applied(f"{job_id}/began"):
            check_allowed(volume, VolumeOperation.RESIZE)
            check_new_size(volume.name, volume.size_bytes, new_size, request.shrink_ok)
        job.enter_step(f"resizing to {new_size} bytes", f"{job_id}/began")
        if volume.pool_id is None or volume.state is _V.ALLOCATED:
            return ResizePlan(pool_id=None, host_id=None, new_size_bytes=new_size)
        if volume.state is _V.READY:
            volume.transition(VolumeEvent.RESIZE_REQUESTED, f"{job_id}/resize-requested")
        pool = d.get(PrimaryStorage, volume.pool_id)
        if pool.allocations.get(str(volume.id)) != new_size:
            pool.release(volume.id, f"{job_id}/pool-release-old")
            pool.allocate(volume.id, new_size, f"{job_id}/pool-allocate-new")
        return ResizePlan(
            pool_id=pool.id,
            host_id=host_for_volume(d, volume, pool),
            new_size_bytes=new_size,
        )

    return cloud.decide(decide)


def undo_resize(
    cloud: Cloud, job_id: UUID, volume_id: UUID, *, grown_to: int | None = None
) -> None:
    """Resizing → Ready, the pool holding what the disk really is: its old size, or, when the
    disk was already grown (`grown_to`; a disk is never shrunk back), the new one."""

    def decide(d: Decision) -> None:
        volume = d.get(Volume, volume_id)
        if volume.state is _V.RESIZING:
            if grown_to is not None:
                volume.record_resized(grown_to, f"{job_id}/resized")
            else:
                volume.transition(VolumeEvent.OPERATION_FAILED, f"{job_id}/resize-undone")
        if volume.pool_id is not None:
            pool = d.get(PrimaryStorage, volume.pool_id)
            if pool.allocations.get(str(volume.id)) != volume.size_bytes:
                pool.release(volume.id, f"{job_id}/pool-release-new")
                pool.allocate(volume.id, volume.size_bytes, f"{job_id}/pool-allocate-old")

    cloud.decide(decide)


def complete_resize(
    cloud: Cloud, job_id: UUID, volume_id: UUID, new_size_bytes: int
) -> VolumeJobResult:
    def decide(d: Decision) -> VolumeJobResult:
        volume = d.get(Volume, volume_id)
        if volume.state in (_V.RESIZING, _V.ALLOCATED):
            volume.record_resized(new_size_bytes, f"{job_id}/resized")
        return _succeed(d, job_id, volume)

    return cloud.decide(decide)


# -- migrate ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class MigratePlan:
    source_pool_id: UUID
    target_pool_id: UUID
    host_id: UUID


def begin_migrate(
    cloud: Cloud, request: MigrateVolumeRequest, submitted_at: datetime
) -> MigratePlan:
    """Check the target; Ready → Migrating with the target pool holding the volume's bytes."""
    job_id, target_id = request.job_id, request.pool_id
    cloud.decide(lambda d: open_job(d, request, submitted_at))

    def decide(d: Decision) -> MigratePlan:
        volume = d.get(Volume, request.volume_id)
        job = d.get(Job, job_id)
        target = d.find(PrimaryStorage, target_id)
        if target is None:
            raise InvalidParameter(
                field="pool_id", message=f"primary storage {target_id} not found"
            )
        if not job.has_applied(f"{job_id}/began"):
            _check_migrate(cloud, volume, target)
        assert volume.pool_id is not None
        if volume.state is _V.READY:
            volume.transition(VolumeEvent.MIGRATION_REQUESTED, f"{job_id}/migration-requested")
        target.allocate(volume.id, volume.size_bytes, f"{job_id}/pool-allocate")
        source = d.get(PrimaryStorage, volume.pool_id)
        job.enter_step(f"copying to {target.name}", f"{job_id}/began")
        return MigratePlan(
            source_pool_id=source.id,
            target_pool_id=target.id,
            host_id=host_for_volume(d, volume, source),
        )

    return cloud.decide(decide)


def _check_migrate(cloud: Cloud, volume: Volume, target: PrimaryStorage) -> None:
    check_allowed(volume, VolumeOperation.MIGRATE)
    assert volume.pool_id is not None
    if target.id == volume.pool_id:
        raise InvalidParameter(field="pool_id", message=f"volume {volume.name} is already there")
    if target.zone_id != volume.zone_id:
        raise InvalidParameter(
            field="pool_id", message=f"primary storage {target.name} is in another zone"
        )
    if not target.enabled:
        raise InvalidParameter(
            field="pool_id", message=f"primary storage {target.name} is disabled"
        )
    source = cloud.load(PrimaryStorage, volume.pool_id)
    made_for = volume.hypervisor or pool_hypervisor(cloud, source)
    target_hypervisor = pool_hypervisor(cloud, target)
    if made_for and target_hypervisor and made_for != target_hypervisor:
        raise InvalidParameter(
            field="pool_id",
            message=f"primary storage {target.name} serves {target_hypervisor}; volume "
            f"{volume.name} is a {made_for} disk",
        )
    if volume.vm_id is not None:
        vm = cloud.load(VirtualMachine, volume.vm_id)
        if vm.state is not VmState.STOPPED:
            raise IllegalStateTransition(
                f"volume {volume.name} is attached to virtual machine {vm.name} in state "
                f"{vm.state}: stop it before migrating the volume"
            )
        if volume.volume_type is VolumeType.DATADISK and not reaches(
            target, vm_cluster_id(cloud, vm)
        ):
            raise InvalidParameter(
                field="pool_id",
                message=f"the cluster of virtual machine {vm.name} does not reach primary "
                f"storage {target.name}",
            )


def undo_migrate(cloud: Cloud, job_id: UUID, volume_id: UUID, target_pool_id: UUID) -> None:
    def decide(d: Decision) -> None:
        volume = d.get(Volume, volume_id)
        if volume.state is _V.MIGRATING:
            volume.transition(VolumeEvent.OPERATION_FAILED, f"{job_id}/migration-undone")
        if volume.pool_id != target_pool_id:
            d.get(PrimaryStorage, target_pool_id).release(volume_id, f"{job_id}/pool-release")

    cloud.decide(decide)


def complete_migrate(
    cloud: Cloud, job_id: UUID, volume_id: UUID, target_pool_id: UUID, path: str
) -> None:
    """The copy is made: the volume is on the target now, the source pool's bytes back. The
    source disk is deleted next (the job's point of no return is this record)."""

    def decide(d: Decision) -> None:
        volume = d.get(Volume, volume_id)
        source_id = volume.pool_id
        if volume.state is _V.MIGRATING:
            volume.record_migrated(target_pool_id, path, f"{job_id}/migrated")
        if source_id is not None and source_id != target_pool_id:
            d.get(PrimaryStorage, source_id).release(volume_id, f"{job_id}/source-release")
        _step(d, job_id, "deleting the source disk", "migrated")

    cloud.decide(decide)


def succeed(cloud: Cloud, job_id: UUID, volume_id: UUID) -> VolumeJobResult:
    return cloud.decide(lambda d: _succeed(d, job_id, d.get(Volume, volume_id)))


# -- delete ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeletePlan:
    #: Where the disk is to be deleted; None when the volume never had one.
    pool_id: UUID | None
    host_id: UUID | None


def begin_delete(cloud: Cloud, request: DeleteVolumeRequest, submitted_at: datetime) -> DeletePlan:
    """Destroy → Expunging at once: a deleted volume is not recoverable (the point of no
    return). An attached volume is refused (536)."""
    job_id = request.job_id
    cloud.decide(lambda d: open_job(d, request, submitted_at))

    def decide(d: Decision) -> DeletePlan:
        volume = d.get(Volume, request.volume_id)
        job = d.get(Job, job_id)
        if not job.has_applied(f"{job_id}/began"):
            check_allowed(volume, VolumeOperation.DELETE)
            if volume.vm_id is not None:
                raise ResourceInUse(
                    f"volume {volume.name} is attached to a virtual machine; detach it first"
                )
        for volume_event, step in (
            (VolumeEvent.DESTROY_REQUESTED, "destroy"),
            (VolumeEvent.EXPUNGING_REQUESTED, "expunging"),
        ):
            if VOLUME_STATE_MACHINE.allows(volume.state, volume_event):
                volume.transition(volume_event, f"{job_id}/{step}")
        job.enter_step("deleting", f"{job_id}/began")
        if volume.pool_id is None:
            return DeletePlan(pool_id=None, host_id=None)
        pool = d.get(PrimaryStorage, volume.pool_id)
        return DeletePlan(pool_id=pool.id, host_id=host_for_volume(d, volume, pool))

    return cloud.decide(decide)


def finish_delete(cloud: Cloud, job_id: UUID, volume_id: UUID) -> DeletedVolume:
    """The disk is gone: Expunged, the pool's bytes back, the volume's queue may end."""

    def decide(d: Decision) -> DeletedVolume:
        volume = d.get(Volume, volume_id)
        if volume.state is _V.EXPUNGING:
            volume.record_expunged(f"{job_id}/expunged")
        if volume.pool_id is not None:
            d.get(PrimaryStorage, volume.pool_id).release(volume_id, f"{job_id}/pool-release")
        return succeed_with(d, job_id, DeletedVolume(**volume_facts(volume)))

    return cloud.decide(decide)
