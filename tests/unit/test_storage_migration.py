"""Migration with storage across clusters, on the in-memory event store: which targets are
valid, where each disk goes, and that the books hold each disk's room in exactly one pool
whatever step the job stops at."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest

from domain import inventory, storage_migration, vm_operations
from domain.cloud import Cloud
from domain.cluster import Cluster
from domain.errors import IllegalStateTransition, InsufficientCapacity, InvalidParameter
from domain.host import Host
from domain.storage import PrimaryStorage
from domain.virtual_machine import VirtualMachine, VmEvent, VmState
from domain.vm_snapshot import VmSnapshotIndex, VmSnapshotState, vm_snapshot_index_id_for
from domain.volume import Volume, VolumeEvent, VolumeState
from domain.volume_attachments import VolumeAttachments, attachments_id_for
from tests.unit.builders import bring_to, new_job, new_vm, new_vm_snapshot, new_volume, seed_pod

GIB = 1024**3


@dataclass
class TwoClusters:
    cloud: Cloud
    zone_id: uuid.UUID
    source: Host
    target: Host
    source_pool: PrimaryStorage
    target_pools: list[PrimaryStorage]
    zone_pool: PrimaryStorage
    vm: VirtualMachine


def host_in(cloud: Cloud, cluster: Cluster, name: str) -> Host:
    return inventory.add_host(
        cloud,
        uuid.uuid4(),
        cluster.id,
        name,
        address="127.0.0.1",
        cpu_count=8,
        cpu_speed_mhz=2000,
        memory_mib=16384,
    )


def seeded(
    cloud: Cloud, *, target_pool_gib: tuple[int, ...] = (100,), target_hypervisor: str = "Simulator"
) -> TwoClusters:
    pod = seed_pod(cloud)
    zone_id = pod.zone_id
    here = inventory.add_cluster(cloud, uuid.uuid4(), pod.id, "here", "Simulator")
    there = inventory.add_cluster(cloud, uuid.uuid4(), pod.id, "there", target_hypervisor)

    def pool(cluster: Cluster, name: str, gib: int) -> PrimaryStorage:
        return inventory.add_cluster_storage(
            cloud,
            uuid.uuid4(),
            cluster.id,
            name,
            path=f"/{name}",
            capacity_bytes=gib * GIB,
            overprovisioning=1.0,
        )

    source_pool = pool(here, "here-1", 100)
    targets = [pool(there, f"there-{n}", gib) for n, gib in enumerate(target_pool_gib, 1)]
    zone_pool = inventory.add_zone_storage(
        cloud, uuid.uuid4(), zone_id, "zone-wide", path="/zone", capacity_bytes=100 * GIB
    )
    source, target = host_in(cloud, here, "h1"), host_in(cloud, there, "t1")
    root = new_volume(zone_id=zone_id, size_bytes=10 * GIB)
    vm = new_vm(zone_id=zone_id, root_volume_id=root.id)
    bring_to(vm, VmState.RUNNING, host_id=source.id)
    cloud.save(vm)
    bring_to(root, VolumeState.CREATING)
    root.record_created(source_pool.id, f"/here-1/{root.id}", 10 * GIB, "deploy/created")
    source_pool.allocate(root.id, root.size_bytes, "deploy/allocate")
    cloud.save(root, source_pool)
    return TwoClusters(
        cloud,
        zone_id,
        source,
        target,
        cloud.load(PrimaryStorage, source_pool.id),
        targets,
        zone_pool,
        cloud.load(VirtualMachine, vm.id),
    )


def attach(world: TwoClusters, pool: PrimaryStorage, gib: int) -> Volume:
    cloud = world.cloud
    volume = new_volume(zone_id=world.zone_id, volume_type="DATADISK", size_bytes=gib * GIB)
    bring_to(volume, VolumeState.CREATING)
    volume.record_created(pool.id, f"{pool.path}/{volume.id}", gib * GIB, "create")
    pool = cloud.load(PrimaryStorage, pool.id)
    pool.allocate(volume.id, volume.size_bytes, f"allocate/{volume.id}")
    attachments = cloud.find(VolumeAttachments, attachments_id_for(world.vm.id))
    if attachments is None:
        attachments = VolumeAttachments.create_with_id(
            attachments_id_for(world.vm.id), vm_id=world.vm.id
        )
    attachments.reserve(volume.id, f"device/{volume.id}")
    cloud.save(volume, pool, attachments)
    return volume


def allocations(cloud: Cloud, volume_id: uuid.UUID, pools: list[PrimaryStorage]) -> list[str]:
    return [p.name for p in pools if str(volume_id) in cloud.load(PrimaryStorage, p.id).allocations]


def test_a_host_of_another_cluster_is_a_target_whose_pools_take_the_cluster_scoped_disks(
    memory_cloud: Cloud,
) -> None:
    world = seeded(memory_cloud, target_pool_gib=(15, 100))
    data = attach(world, world.source_pool, 20)
    shared = attach(world, world.zone_pool, 5)
    job = new_job()
    memory_cloud.save(job)
    plan = vm_operations.plan_migration(memory_cloud, job.id, world.vm.id, world.target.id)
    assert plan.host_id == world.target.id
    vm = memory_cloud.load(VirtualMachine, world.vm.id)
    moves = storage_migration.plan_disk_moves(memory_cloud, vm, world.target.cluster_id)
    # The root disk (10 GiB) fits the first pool; the 20 GiB data disk only the second; the
    # disk on zone-wide storage is reachable from there and stays.
    small, large = world.target_pools
    assert [(m.volume_id, m.target_pool_id) for m in moves] == [
        (vm.root_volume_id, small.id),
        (data.id, large.id),
    ]
    assert shared.id not in {m.volume_id for m in moves}


def test_the_first_pool_counts_the_disks_this_plan_already_put_there(memory_cloud: Cloud) -> None:
    world = seeded(memory_cloud, target_pool_gib=(25, 100))
    data = attach(world, world.source_pool, 10)
    moves = storage_migration.plan_disk_moves(memory_cloud, world.vm, world.target.cluster_id)
    small, large = world.target_pools
    # 10 + 10 GiB fit the 25 GiB pool together.
    assert [m.target_pool_id for m in moves] == [small.id, small.id]
    attach(world, world.source_pool, 10)
    moves = storage_migration.plan_disk_moves(
        memory_cloud, memory_cloud.load(VirtualMachine, world.vm.id), world.target.cluster_id
    )
    assert [m.target_pool_id for m in moves] == [small.id, small.id, large.id]
    assert data.id == moves[1].volume_id


def test_no_pool_with_room_refuses_with_insufficient_capacity_naming_the_disk(
    memory_cloud: Cloud,
) -> None:
    world = seeded(memory_cloud, target_pool_gib=(5,))
    with pytest.raises(InsufficientCapacity, match="no primary storage of cluster there"):
        storage_migration.plan_disk_moves(memory_cloud, world.vm, world.target.cluster_id)


def test_a_cluster_of_another_hypervisor_is_refused_naming_the_host(memory_cloud: Cloud) -> None:
    world = seeded(memory_cloud, target_hypervisor="KVM")
    job = new_job()
    memory_cloud.save(job)
    with pytest.raises(InvalidParameter, match="runs KVM") as refused:
        vm_operations.plan_migration(memory_cloud, job.id, world.vm.id, world.target.id)
    assert refused.value.field == "host_id"


def test_a_vm_with_vm_snapshots_is_refused_until_they_are_removed(memory_cloud: Cloud) -> None:
    world = seeded(memory_cloud)
    snapshot = new_vm_snapshot(vm_id=world.vm.id, name="before-upgrade")
    index = VmSnapshotIndex.create_with_id(vm_snapshot_index_id_for(world.vm.id), vm_id=world.vm.id)
    index.add(snapshot.id, "index")
    memory_cloud.save(snapshot, index)
    job = new_job()
    memory_cloud.save(job)
    with pytest.raises(IllegalStateTransition, match="has VM snapshots \\(before-upgrade") as no:
        vm_operations.plan_migration(memory_cloud, job.id, world.vm.id, world.target.id)
    assert no.value.field == "host_id"
    bring_to(snapshot, VmSnapshotState.REMOVED)
    memory_cloud.save(snapshot)
    plan = vm_operations.plan_migration(memory_cloud, job.id, world.vm.id, world.target.id)
    assert plan.host_id == world.target.id


def test_a_disk_busy_with_another_operation_is_not_moved(memory_cloud: Cloud) -> None:
    world = seeded(memory_cloud)
    root = memory_cloud.load(Volume, world.vm.root_volume_id)
    root.transition(VolumeEvent.SNAPSHOT_REQUESTED, "snapshot/requested")
    memory_cloud.save(root)
    with pytest.raises(IllegalStateTransition, match="cannot move now"):
        storage_migration.plan_disk_moves(memory_cloud, world.vm, world.target.cluster_id)


def test_reserve_then_release_leaves_the_disk_ready_where_it_was_and_twice_changes_nothing(
    memory_cloud: Cloud,
) -> None:
    world = seeded(memory_cloud)
    job = uuid.uuid4()
    moves = storage_migration.plan_disk_moves(memory_cloud, world.vm, world.target.cluster_id)
    pools = [world.source_pool, *world.target_pools]
    root_id = world.vm.root_volume_id
    for _ in range(2):
        storage_migration.reserve_storage(memory_cloud, job, moves)
    assert memory_cloud.load(Volume, root_id).state is VolumeState.MIGRATING
    assert allocations(memory_cloud, root_id, pools) == ["here-1", "there-1"]
    for _ in range(2):
        storage_migration.release_storage(memory_cloud, job, moves)
    root = memory_cloud.load(Volume, root_id)
    assert root.state is VolumeState.READY and root.pool_id == world.source_pool.id
    assert allocations(memory_cloud, root_id, pools) == ["here-1"]
    transitions = [
        e.volume_event
        for e in memory_cloud.events.get(root_id)
        if isinstance(e, Volume.Transitioned) and e.command_id.startswith(str(job))
    ]
    assert transitions == ["MigrationRequested", "OperationFailed"]  # once each


def test_completing_records_vm_and_disks_on_the_target_in_one_decision(memory_cloud: Cloud) -> None:
    world = seeded(memory_cloud)
    record = new_job()
    memory_cloud.save(record)
    job = record.id
    vm_id, root_id = world.vm.id, world.vm.root_volume_id
    target_host = memory_cloud.load(Host, world.target.id)
    target_host.reserve_capacity(vm_id, 1000, 512, 1.0, 1.0, f"{job}/reserve")
    source_host = memory_cloud.load(Host, world.source.id)
    source_host.reserve_capacity(vm_id, 1000, 512, 1.0, 1.0, "deploy/reserve")
    vm = memory_cloud.load(VirtualMachine, vm_id)
    vm.transition(VmEvent.MIGRATION_REQUESTED, f"{job}/migrating")
    memory_cloud.save(target_host, source_host, vm)
    moves = storage_migration.plan_disk_moves(memory_cloud, vm, world.target.cluster_id)
    storage_migration.reserve_storage(memory_cloud, job, moves)
    paths = {str(root_id): f"/there-1/{root_id}"}
    for _ in range(2):
        vm_operations.complete_migration(
            memory_cloud, job, vm_id, world.source.id, world.target.id, moves, paths
        )
    root = memory_cloud.load(Volume, root_id)
    assert root.state is VolumeState.READY and root.pool_id == world.target_pools[0].id
    assert root.path == f"/there-1/{root_id}"
    assert allocations(memory_cloud, root_id, [world.source_pool, *world.target_pools]) == [
        "there-1"
    ]
    vm = memory_cloud.load(VirtualMachine, vm_id)
    assert vm.state is VmState.RUNNING and vm.host_id == world.target.id
    assert memory_cloud.load(Host, world.source.id).reservation_for(vm_id) is None
    # A release after completion (a late undo) leaves the disk where it now is.
    storage_migration.release_storage(memory_cloud, job, moves)
    assert memory_cloud.load(Volume, root_id).pool_id == world.target_pools[0].id
