"""Volume snapshots as the domain sees them: take (createSnapshot), prune by policy and delete.
Each step is a decision over the event store, idempotent by a command id built from the job id
(`f"{job_id}/<step>"`), and moves the job's current step in the same write. Using a snapshot
(revert, a volume or a template from it) is in `domain.snapshot_uses`.

CloudStack's semantics, kept here:
- A snapshot is taken of a Ready volume (on primary storage) whose VM, if any, is Running or
  Stopped. The volume is Snapshotting only until the copy exists on primary storage; the backup
  to the zone's secondary storage then runs with the volume free again. The bytes are reserved
  on secondary storage before anything is copied, so a full store refuses the job up front.
- After the backup the copy on primary storage is deleted; everything later works from the
  backup. A snapshot outlives its volume.
- A policy's snapshot job prunes the policy's oldest backed-up snapshots beyond `max_snaps`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TypedDict
from uuid import UUID

from domain import job_records
from domain.cloud import Cloud, Decision
from domain.cluster import Cluster
from domain.disk_placement import host_for_volume, pool_hypervisor
from domain.errors import IllegalStateTransition, InsufficientCapacity
from domain.host import Host
from domain.job import Job
from domain.job_results import (
    SnapshotJobResult,
    SnapshotTaken,
    succeed_with,
)
from domain.snapshot import (
    SNAPSHOT_STATE_MACHINE,
    Snapshot,
    SnapshotEvent,
    SnapshotIntervalType,
    SnapshotState,
)
from domain.snapshot_policy import SnapshotPolicy
from domain.storage import PrimaryStorage, SecondaryStorage
from domain.virtual_machine import VirtualMachine, VmState
from domain.volume import Volume, VolumeEvent, VolumeState
from domain.volume_operations import open_job
from domain.volume_requests import (
    DeleteSnapshotRequest,
    SnapshotVolumeRequest,
)
from domain.zone import Zone

_V, _S = VolumeState, SnapshotState
#: The VM states a volume may be snapshotted in (CloudStack takes them live or offline).
VM_STATES_FOR_SNAPSHOT = frozenset({VmState.RUNNING, VmState.STOPPED})


class SnapshotFacts(TypedDict):
    """What every snapshot job's result says of the snapshot (`SnapshotJobResult`'s fields)."""

    snapshot_id: UUID
    volume_id: UUID
    state: str
    size_bytes: int
    physical_size_bytes: int


def snapshot_facts(snapshot: Snapshot) -> SnapshotFacts:
    return SnapshotFacts(
        snapshot_id=snapshot.id,
        volume_id=snapshot.volume_id,
        state=snapshot.state.value,
        size_bytes=snapshot.size_bytes,
        physical_size_bytes=snapshot.physical_size_bytes,
    )


def snapshot_result(snapshot: Snapshot) -> SnapshotJobResult:
    return SnapshotJobResult(**snapshot_facts(snapshot))


def _record_step(d: Decision, job_id: UUID, step: str, name: str) -> None:
    job_records.enter_step(d, job_id, step, f"{name}-step")


def queue_may_end(d: Decision, volume_id: UUID) -> bool:
    """A job on a deleted volume's queue (a snapshot outlives its volume) lets that queue end
    again afterwards, as the volume's delete did."""
    volume = d.find(Volume, volume_id)
    return volume is not None and volume.state is _V.EXPUNGED and volume.vm_id is None


# -- checks at submission (from the read models) ---------------------------------------------
def refusal_to_snapshot(
    *, name: str, state: str, vm_state: str | None, vm_name: str | None
) -> Exception | None:
    """What the read models already show: a volume not on primary storage, being deleted, or
    whose VM is neither running nor stopped, cannot be snapshotted. A busy volume queues."""
    volume_state = VolumeState(state)
    if volume_state is _V.ALLOCATED:
        return IllegalStateTransition(
            f"volume {name} is not on primary storage yet (it is created when first attached)"
        )
    if volume_state in (_V.DESTROY, _V.EXPUNGING, _V.EXPUNGED):
        return IllegalStateTransition(f"volume {name} is deleted or being deleted")
    if vm_state is not None and VmState(vm_state) in (
        VmState.DESTROYED,
        VmState.EXPUNGING,
        VmState.ERROR,
    ):
        return IllegalStateTransition(
            f"cannot snapshot volume {name}: its virtual machine {vm_name} is {vm_state}"
        )
    return None


def refusal_for_snapshot_use(
    *, name: str, state: str, purpose: str, deleting: bool = False
) -> Exception | None:
    """A snapshot must be backed up to be used (revert, volume, template); a delete also takes
    one in Error. A busy snapshot is not judged: the job queues and checks again."""
    snapshot_state = SnapshotState(state)
    if snapshot_state is _S.DESTROYED:
        return IllegalStateTransition(f"snapshot {name} has been deleted")
    if deleting:
        if snapshot_state in (_S.ALLOCATED,):
            return IllegalStateTransition(f"snapshot {name} is still being taken")
        return None
    if snapshot_state is _S.ERROR:
        return IllegalStateTransition(f"snapshot {name} failed and cannot be used to {purpose}")
    if snapshot_state is _S.DESTROYING:
        return IllegalStateTransition(f"snapshot {name} is being deleted")
    return None


def check_backed_up(snapshot: Snapshot, purpose: str) -> None:
    if snapshot.state is not _S.BACKED_UP:
        raise IllegalStateTransition(
            f"cannot {purpose} from snapshot {snapshot.name} in state {snapshot.state} "
            "(it must be BackedUp)"
        )


# -- where things are -----------------------------------------------------------------------
def _secondary_holding(d: Decision, zone_id: UUID, object_id: UUID) -> SecondaryStorage | None:
    for storage_id in d.cloud.load(Zone, zone_id).secondary_storage_ids:
        storage = d.get(SecondaryStorage, storage_id)
        if str(object_id) in storage.stored:
            return storage
    return None


def _reserve_secondary(
    d: Decision, job_id: UUID, zone_id: UUID, object_id: UUID, size_bytes: int
) -> SecondaryStorage:
    """Hold the bytes on a secondary storage of the zone with room (once per job)."""
    held = _secondary_holding(d, zone_id, object_id)
    if held is not None:
        return held
    for storage_id in d.cloud.load(Zone, zone_id).secondary_storage_ids:
        storage = d.get(SecondaryStorage, storage_id)
        if storage.used_bytes + size_bytes <= storage.capacity_bytes:
            storage.store(object_id, size_bytes, f"{job_id}/secondary-reserve/{object_id}")
            return storage
    raise InsufficientCapacity(
        f"no secondary storage in the zone has room for {size_bytes} bytes"
        if d.cloud.load(Zone, zone_id).secondary_storage_ids
        else "the zone has no secondary storage"
    )


def host_for_secondary(d: Decision, snapshot: Snapshot) -> UUID:
    """A host to work on a snapshot's backup through (CloudStack uses its secondary storage
    VM): the volume's host if the volume still has a disk, else an up host of the zone serving
    the snapshot's hypervisor."""
    volume = d.find(Volume, snapshot.volume_id)
    if volume is not None and volume.pool_id is not None and volume.state is not _V.EXPUNGED:
        return host_for_volume(d, volume, d.get(PrimaryStorage, volume.pool_id))
    zone = d.cloud.load(Zone, snapshot.zone_id)
    hosts = [
        d.cloud.load(Host, h)
        for c in zone.cluster_ids
        if d.cloud.load(Cluster, c).hypervisor == snapshot.hypervisor
        for h in d.cloud.load(Cluster, c).host_ids
    ]
    hosts.sort(key=lambda h: not h.can_take_deployments())
    if not hosts:
        raise InsufficientCapacity(
            f"no {snapshot.hypervisor} host in the zone can reach snapshot {snapshot.name}"
        )
    return hosts[0].id


def _volume_hypervisor(d: Decision, volume: Volume) -> str:
    if volume.hypervisor is not None:
        return volume.hypervisor
    if volume.vm_id is not None:
        vm = d.find(VirtualMachine, volume.vm_id)
        if vm is not None:
            return str(vm.hypervisor)
    assert volume.pool_id is not None
    return pool_hypervisor(d.cloud, d.get(PrimaryStorage, volume.pool_id)) or "Simulator"


# -- take a snapshot ---------------------------------------------------------------------------
@dataclass(frozen=True)
class SnapshotPlan:
    snapshot_id: UUID
    volume_id: UUID
    pool_id: UUID
    host_id: UUID
    secondary_storage_id: UUID


def begin_snapshot(
    cloud: Cloud, request: SnapshotVolumeRequest, submitted_at: datetime
) -> SnapshotPlan:
    """Check the volume, allocate the snapshot, hold its bytes on secondary storage, and move
    the volume to Snapshotting and the snapshot to Creating."""
    job_id, snapshot_id = request.job_id, request.snapshot_id
    cloud.decide(lambda d: open_job(d, request, submitted_at))

    def decide(d: Decision) -> SnapshotPlan:
        volume = d.get(Volume, request.volume_id)
        job = d.get(Job, job_id)
        began = job.has_applied(f"{job_id}/began")
        if not began:
            _check_snapshot(d, volume)
        policy = d.find(SnapshotPolicy, request.policy_id) if request.policy_id else None
        snapshot = d.find(Snapshot, snapshot_id)
        if snapshot is None:
            snapshot = d.add(
                Snapshot.create_with_id(
                    snapshot_id,
                    volume_id=volume.id,
                    name=request.name or f"{volume.name}_{snapshot_id.hex[:8]}",
                    account_id=volume.account_id,
                    zone_id=volume.zone_id,
                    volume_type=volume.volume_type.value,
                    size_bytes=volume.size_bytes,
                    hypervisor=_volume_hypervisor(d, volume),
                    job_id=job_id,
                    interval_type=(
                        policy.interval_type.value
                        if policy is not None
                        else SnapshotIntervalType.MANUAL.value
                    ),
                    policy_id=policy.id if policy is not None else None,
                )
            )
        if snapshot.state is not _S.ALLOCATED and not began:
            raise IllegalStateTransition(f"snapshot {snapshot.name} was already taken")
        secondary = _reserve_secondary(d, job_id, volume.zone_id, snapshot.id, volume.size_bytes)
        if volume.state is _V.READY:
            volume.transition(VolumeEvent.SNAPSHOT_REQUESTED, f"{job_id}/snapshot-requested")
        if snapshot.state is _S.ALLOCATED:
            snapshot.transition(SnapshotEvent.CREATE_REQUESTED, f"{job_id}/create-requested")
        if policy is not None:
            policy.record_snapshot_taken(snapshot.id, f"{job_id}/policy-snapshot")
        job.enter_step("taking the snapshot on primary storage", f"{job_id}/began")
        assert volume.pool_id is not None
        pool = d.get(PrimaryStorage, volume.pool_id)
        return SnapshotPlan(
            snapshot_id=snapshot.id,
            volume_id=volume.id,
            pool_id=pool.id,
            host_id=host_for_volume(d, volume, pool),
            secondary_storage_id=secondary.id,
        )

    return cloud.decide(decide)


def _check_snapshot(d: Decision, volume: Volume) -> None:
    if volume.state is not _V.READY or volume.pool_id is None:
        raise IllegalStateTransition(
            f"cannot snapshot volume {volume.name} in state {volume.state} (it must be Ready: "
            "on primary storage and not busy)"
        )
    if volume.vm_id is not None:
        vm = d.get(VirtualMachine, volume.vm_id)
        if vm.state not in VM_STATES_FOR_SNAPSHOT:
            raise IllegalStateTransition(
                f"cannot snapshot volume {volume.name}: its virtual machine {vm.name} is "
                f"{vm.state} (it must be Running or Stopped)"
            )


def undo_snapshot(cloud: Cloud, job_id: UUID, volume_id: UUID, snapshot_id: UUID) -> None:
    """The job failed before the backup was recorded: the volume is free again, the snapshot
    ends in Error, its secondary bytes are given back (the copies are already deleted)."""

    def decide(d: Decision) -> None:
        volume = d.find(Volume, volume_id)
        if volume is not None and volume.state is _V.SNAPSHOTTING:
            volume.transition(VolumeEvent.OPERATION_FAILED, f"{job_id}/snapshot-undone")
        snapshot = d.find(Snapshot, snapshot_id)
        if snapshot is None:
            return
        if SNAPSHOT_STATE_MACHINE.allows(snapshot.state, SnapshotEvent.OPERATION_FAILED) and (
            snapshot.state is not _S.DESTROYING
        ):
            snapshot.transition(
                SnapshotEvent.OPERATION_FAILED, f"{job_id}/snapshot-failed", reason="undone"
            )
        snapshot.record_primary_copy_removed(f"{job_id}/primary-copy-undone")
        if snapshot.state is _S.ERROR:
            held = _secondary_holding(d, snapshot.zone_id, snapshot.id)
            if held is not None:
                held.remove(snapshot.id, f"{job_id}/secondary-release")

    cloud.decide(decide)


def record_on_primary(
    cloud: Cloud, job_id: UUID, volume_id: UUID, snapshot_id: UUID, pool_id: UUID, path: str
) -> None:
    """The copy is on primary storage: the volume is free again (Ready) and the backup
    begins (BackingUp)."""

    def decide(d: Decision) -> None:
        snapshot = d.get(Snapshot, snapshot_id)
        if snapshot.state is _S.CREATING:
            snapshot.record_on_primary(pool_id, path, f"{job_id}/on-primary")
        if snapshot.state is _S.CREATED_ON_PRIMARY:
            snapshot.transition(SnapshotEvent.BACKUP_TO_SECONDARY, f"{job_id}/backing-up")
        volume = d.get(Volume, volume_id)
        if volume.state is _V.SNAPSHOTTING:
            volume.transition(VolumeEvent.OPERATION_SUCCEEDED, f"{job_id}/snapshotted")
        _record_step(d, job_id, "backing up to secondary storage", "on-primary")

    cloud.decide(decide)


def record_backed_up(
    cloud: Cloud,
    job_id: UUID,
    snapshot_id: UUID,
    secondary_storage_id: UUID,
    path: str,
    physical_size_bytes: int,
) -> SnapshotJobResult:
    """BackedUp: the job's point of no return (the snapshot exists for the user now)."""

    def decide(d: Decision) -> SnapshotJobResult:
        snapshot = d.get(Snapshot, snapshot_id)
        if snapshot.state is _S.BACKING_UP:
            snapshot.record_backed_up(
                secondary_storage_id, path, physical_size_bytes, f"{job_id}/backed-up"
            )
        _record_step(d, job_id, "removing the copy on primary storage", "backed-up")
        return snapshot_result(snapshot)

    return cloud.decide(decide)


def record_primary_copy_removed(cloud: Cloud, job_id: UUID, snapshot_id: UUID) -> None:
    cloud.decide(
        lambda d: d.get(Snapshot, snapshot_id).record_primary_copy_removed(
            f"{job_id}/primary-copy-removed"
        )
    )


def complete_snapshot(
    cloud: Cloud, job_id: UUID, snapshot_id: UUID, pruned: list[UUID]
) -> SnapshotTaken:
    def decide(d: Decision) -> SnapshotTaken:
        snapshot = d.get(Snapshot, snapshot_id)
        return succeed_with(d, job_id, SnapshotTaken(**snapshot_facts(snapshot), pruned=pruned))

    return cloud.decide(decide)


# -- prune a policy's oldest -------------------------------------------------------------------
@dataclass(frozen=True)
class SnapshotRemovalPlan:
    """A snapshot's copies to delete, and through which host."""

    snapshot_id: UUID
    host_id: UUID
    secondary_storage_id: UUID | None
    primary_pool_id: UUID | None


def _removal_plan(d: Decision, snapshot: Snapshot) -> SnapshotRemovalPlan:
    return SnapshotRemovalPlan(
        snapshot_id=snapshot.id,
        host_id=host_for_secondary(d, snapshot),
        secondary_storage_id=snapshot.secondary_storage_id
        if snapshot.backup_path is not None
        else None,
        primary_pool_id=snapshot.primary_pool_id if snapshot.primary_path is not None else None,
    )


def begin_pruning(cloud: Cloud, job_id: UUID, policy_id: UUID) -> list[SnapshotRemovalPlan]:
    """After a policy's snapshot is backed up: its oldest backed-up snapshots beyond
    `max_snaps` go Destroying (CloudStack deletes the oldest while the count exceeds it)."""

    def decide(d: Decision) -> list[SnapshotRemovalPlan]:
        policy = d.find(SnapshotPolicy, policy_id)
        if policy is None:
            return []
        kept = [
            s
            for s in (d.find(Snapshot, sid) for sid in policy.snapshot_ids)
            if s is not None and s.state in (_S.BACKED_UP, _S.DESTROYING)
        ]
        # Those this job already marked (a retried step) count as going.
        going = [s for s in kept if s.has_applied(f"{job_id}/prune/{s.id}")]
        alive = [s for s in kept if s not in going and s.state is _S.BACKED_UP]
        excess = max(0, len(alive) - policy.max_snaps)
        for snapshot in alive[:excess]:
            snapshot.transition(
                SnapshotEvent.DESTROY_REQUESTED,
                f"{job_id}/prune/{snapshot.id}",
                reason=f"policy keeps at most {policy.max_snaps}",
            )
            going.append(snapshot)
        if going:
            pruning = f"pruning {len(going)} old snapshot(s) of the policy"
            _record_step(d, job_id, pruning, "pruning")
        return [_removal_plan(d, s) for s in going if s.state is _S.DESTROYING]

    return cloud.decide(decide)


# -- delete ----------------------------------------------------------------------------------
def begin_delete_snapshot(
    cloud: Cloud, request: DeleteSnapshotRequest, submitted_at: datetime
) -> SnapshotRemovalPlan:
    """BackedUp → Destroying (a failure goes back to BackedUp); one in Error is deleted from
    Error, its copies removed first."""
    job_id, snapshot_id = request.job_id, request.snapshot_id
    cloud.decide(lambda d: open_job(d, request, submitted_at))

    def decide(d: Decision) -> SnapshotRemovalPlan:
        snapshot = d.get(Snapshot, snapshot_id)
        job = d.get(Job, job_id)
        if not job.has_applied(f"{job_id}/began") and snapshot.state not in (
            _S.BACKED_UP,
            _S.ERROR,
            # A delete that failed past its point of no return: this one finishes it.
            _S.DESTROYING,
        ):
            raise IllegalStateTransition(
                f"cannot delete snapshot {snapshot.name} in state {snapshot.state} "
                "(it must be BackedUp or Error)"
            )
        if snapshot.state is _S.BACKED_UP:
            snapshot.transition(SnapshotEvent.DESTROY_REQUESTED, f"{job_id}/destroy-requested")
        job.enter_step("deleting the snapshot's copies", f"{job_id}/began")
        return _removal_plan(d, snapshot)

    return cloud.decide(decide)


def undo_delete_snapshot(cloud: Cloud, job_id: UUID, snapshot_id: UUID) -> None:
    def decide(d: Decision) -> None:
        snapshot = d.get(Snapshot, snapshot_id)
        # Only what this job began: a snapshot an earlier delete left Destroying stays so.
        if snapshot.state is _S.DESTROYING and snapshot.has_applied(f"{job_id}/destroy-requested"):
            snapshot.transition(SnapshotEvent.OPERATION_FAILED, f"{job_id}/destroy-undone")

    cloud.decide(decide)


def finish_snapshot_removal(cloud: Cloud, job_id: UUID, snapshot_id: UUID) -> SnapshotJobResult:
    """The copies are gone: Destroyed, the secondary storage's bytes back. Named per snapshot
    so a policy job removing several records each once."""
    prefix = f"{job_id}/removed/{snapshot_id}"

    def decide(d: Decision) -> SnapshotJobResult:
        snapshot = d.get(Snapshot, snapshot_id)
        snapshot.record_primary_copy_removed(f"{prefix}/primary")
        if snapshot.state is _S.DESTROYING:
            snapshot.transition(SnapshotEvent.OPERATION_SUCCEEDED, f"{prefix}/destroyed")
        elif snapshot.state is _S.ERROR:
            snapshot.transition(SnapshotEvent.DESTROY_REQUESTED, f"{prefix}/destroyed")
        held = _secondary_holding(d, snapshot.zone_id, snapshot.id)
        if held is not None:
            held.remove(snapshot.id, f"{prefix}/secondary-release")
        return snapshot_result(snapshot)

    return cloud.decide(decide)


def complete_delete_snapshot(cloud: Cloud, job_id: UUID, snapshot_id: UUID) -> SnapshotJobResult:
    def decide(d: Decision) -> SnapshotJobResult:
        snapshot = d.get(Snapshot, snapshot_id)
        removed = queue_may_end(d, snapshot.volume_id)
        return succeed_with(
            d, job_id, SnapshotJobResult(**snapshot_facts(snapshot), removed=removed)
        )

    return cloud.decide(decide)


def keep_snapshot_after_failed_removal(
    cloud: Cloud, job_id: UUID, snapshot_id: UUID, reason: str
) -> None:
    """A policy's pruning could not delete an old snapshot: it is BackedUp again (and the next
    run tries again); the new snapshot stays taken."""

    def decide(d: Decision) -> None:
        snapshot = d.get(Snapshot, snapshot_id)
        if snapshot.state is _S.DESTROYING:
            snapshot.transition(
                SnapshotEvent.OPERATION_FAILED,
                f"{job_id}/prune-failed/{snapshot_id}",
                reason=reason,
            )

    cloud.decide(decide)
