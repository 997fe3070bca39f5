"""Migrating a running VM to another cluster of its zone, its disks with it.

A cluster's hosts reach its cluster-scoped pools only, so a VM that crosses clusters takes each
disk on such a pool to a pool of the target cluster (CloudStack's migrateVirtualMachineWithVolume).
Disks on zone-wide pools stay where they are. The books follow the saga's order: the target
pools reserve room for the disks that move and those disks turn Migrating (so no other job
touches them), the hypervisor moves VM and disks in one operation, then one decision records
the VM on its new host and each disk on its new pool and gives the source host and pools their
room back. A failure before that decision gives back the target pools' room and returns the
disks to Ready where they were.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from uuid import UUID

from domain.cloud import Cloud, Decision
from domain.cluster import Cluster
from domain.errors import IllegalStateTransition, InsufficientCapacity, InvalidParameter
from domain.host import Host
from domain.storage import PrimaryStorage
from domain.virtual_machine import VirtualMachine
from domain.vm_snapshot import (
    VmSnapshot,
    VmSnapshotIndex,
    VmSnapshotState,
    vm_snapshot_index_id_for,
)
from domain.volume import Volume, VolumeEvent, VolumeState
from domain.volume_attachments import VolumeAttachments, attachments_id_for
from domain.zone import Zone


@dataclass(frozen=True)
class DiskMovePlan:
    volume_id: UUID
    source_pool_id: UUID
    target_pool_id: UUID


def check_target_cluster(cloud: Cloud, vm: VirtualMachine, source: Host, target: Host) -> None:
    """A host of another cluster is a valid target when that cluster is in the VM's zone and
    runs the same hypervisor: a disk image does not change format on the way."""
    here = cloud.load(Cluster, source.cluster_id)
    there = cloud.load(Cluster, target.cluster_id)
    if there.zone_id != vm.zone_id:
        raise InvalidParameter(
            f"host {target.name} is in another zone than virtual machine {vm.name}",
            field="host_id",
        )
    if there.hypervisor != here.hypervisor:
        raise InvalidParameter(
            f"host {target.name} runs {there.hypervisor}; virtual machine {vm.name} runs on "
            f"{here.hypervisor}",
            field="host_id",
        )
    _check_no_vm_snapshots(cloud, vm)


def _check_no_vm_snapshots(cloud: Cloud, vm: VirtualMachine) -> None:
    """A VM snapshot lives beside the disks it was taken of; the disks moved without it would
    leave it pointing nowhere. CloudStack refuses the same: delete them first."""
    index = cloud.find(VmSnapshotIndex, vm_snapshot_index_id_for(vm.id))
    for snapshot_id in index.snapshot_ids if index is not None else ():
        snapshot = cloud.find(VmSnapshot, snapshot_id)
        if snapshot is not None and snapshot.state is not VmSnapshotState.REMOVED:
            raise IllegalStateTransition(
                f"virtual machine {vm.name} has VM snapshots ({snapshot.name} ...): it cannot "
                "be migrated with its storage; delete its VM snapshots first",
                field="host_id",
            )


def volumes_of(cloud: Cloud, vm: VirtualMachine) -> list[Volume]:
    """The VM's disks: its root volume, then its data volumes in device order."""
    ids: list[UUID] = [vm.root_volume_id]
    attachments = cloud.find(VolumeAttachments, attachments_id_for(vm.id))
    if attachments is not None:
        ids.extend(v for v in attachments.volume_ids if v not in ids)
    return [cloud.load(Volume, volume_id) for volume_id in ids]


def plan_disk_moves(cloud: Cloud, vm: VirtualMachine, cluster_id: UUID) -> list[DiskMovePlan]:
    """Where each disk the target cluster cannot reach goes: the first enabled pool of that
    cluster with room, counting the disks already placed by this plan; a disk on a zone-wide
    pool stays. The room is reserved, under concurrency, by `reserve_storage`."""
    cluster = cloud.load(Cluster, cluster_id)
    zone = cloud.load(Zone, vm.zone_id)
    reachable = set(cluster.storage_pool_ids) | set(zone.zone_storage_pool_ids)
    candidates = [cloud.load(PrimaryStorage, p) for p in cluster.storage_pool_ids]
    planned: dict[UUID, int] = {}
    moves: list[DiskMovePlan] = []
    for volume in volumes_of(cloud, vm):
        if volume.pool_id is None or volume.pool_id in reachable:
            continue
        if volume.state is not VolumeState.READY:
            raise IllegalStateTransition(
                f"volume {volume.name} of virtual machine {vm.name} is {volume.state}: its disk "
                "cannot move now"
            )
        for pool in candidates:
            if pool.enabled and pool.fits(planned.get(pool.id, 0) + volume.size_bytes):
                planned[pool.id] = planned.get(pool.id, 0) + volume.size_bytes
                moves.append(DiskMovePlan(volume.id, volume.pool_id, pool.id))
                break
        else:
            raise InsufficientCapacity(
                f"no primary storage of cluster {cluster.name} has room for volume {volume.name} "
                f"({volume.size_bytes} bytes)"
            )
    return moves


def reserve_storage(cloud: Cloud, job_id: UUID, moves: Iterable[DiskMovePlan]) -> None:
    """Room on each target pool and the disk Migrating, in one decision: all or none."""

    def decide(d: Decision) -> None:
        for move in moves:
            volume = d.get(Volume, move.volume_id)
            if volume.pool_id == move.target_pool_id:
                continue  # recorded there already: a retry after the migration completed
            if volume.state is VolumeState.READY:
                volume.transition(
                    VolumeEvent.MIGRATION_REQUESTED, f"{job_id}/migration-requested/{volume.id}"
                )
            d.get(PrimaryStorage, move.target_pool_id).allocate(
                volume.id, volume.size_bytes, f"{job_id}/pool-allocate/{volume.id}"
            )

    cloud.decide(decide)


def release_storage(cloud: Cloud, job_id: UUID, moves: Iterable[DiskMovePlan]) -> None:
    """The undo of `reserve_storage`: each disk not recorded on its target goes back to Ready
    where it was, and the target pool's room is given back."""

    def decide(d: Decision) -> None:
        for move in moves:
            volume = d.get(Volume, move.volume_id)
            if volume.pool_id == move.target_pool_id:
                continue
            if volume.state is VolumeState.MIGRATING:
                volume.transition(
                    VolumeEvent.OPERATION_FAILED, f"{job_id}/migration-undone/{volume.id}"
                )
            d.get(PrimaryStorage, move.target_pool_id).release(
                volume.id, f"{job_id}/pool-release/{volume.id}"
            )

    cloud.decide(decide)


def record_disks_moved(
    d: Decision, job_id: UUID, moves: Iterable[DiskMovePlan], paths: Mapping[str, str]
) -> None:
    """Inside the decision that records the VM on its new host: each disk on its new pool
    at the path the hypervisor gave, the source pool's room given back."""
    for move in moves:
        volume = d.get(Volume, move.volume_id)
        if volume.state is VolumeState.MIGRATING:
            path = paths.get(str(volume.id))
            if path is None:
                raise IllegalStateTransition(
                    f"the hypervisor did not say where volume {volume.name} went"
                )
            volume.record_migrated(move.target_pool_id, path, f"{job_id}/migrated/{volume.id}")
        d.get(PrimaryStorage, move.source_pool_id).release(
            volume.id, f"{job_id}/source-release/{volume.id}"
        )
