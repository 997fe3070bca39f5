"""Where a disk lives and who can reach it: the pool a new data disk is made on, and the host a
driver works on a disk through (its running VM's, or one that reaches the pool). Shared by the
volume and volume-snapshot jobs."""

from __future__ import annotations

from uuid import UUID

from domain.cloud import Cloud, Decision
from domain.cluster import Cluster
from domain.errors import InsufficientCapacity, ResourceUnavailable
from domain.host import Host
from domain.storage import PrimaryStorage, StorageScope
from domain.virtual_machine import VirtualMachine, VmState
from domain.volume import Volume
from domain.zone import Zone


def pool_hypervisor(cloud: Cloud, pool: PrimaryStorage) -> str | None:
    if pool.cluster_id is not None:
        return cloud.load(Cluster, pool.cluster_id).hypervisor
    return None


def host_reaching(cloud: Cloud, pool: PrimaryStorage, hypervisor: str | None) -> Host:
    """A host (up ones first) that reaches the pool, for the driver to work on the disk."""
    if pool.scope is StorageScope.CLUSTER and pool.cluster_id is not None:
        cluster_ids = [pool.cluster_id]
    else:
        zone = cloud.load(Zone, pool.zone_id)
        cluster_ids = [
            c
            for c in zone.cluster_ids
            if hypervisor is None or cloud.load(Cluster, c).hypervisor == hypervisor
        ]
    hosts = [cloud.load(Host, h) for c in cluster_ids for h in cloud.load(Cluster, c).host_ids]
    hosts.sort(key=lambda h: not h.can_take_deployments())
    if not hosts:
        raise ResourceUnavailable(f"no host reaches primary storage {pool.name}")
    return hosts[0]


def vm_cluster_id(cloud: Cloud, vm: VirtualMachine) -> UUID | None:
    """The cluster the VM runs in, or would start in (its root disk's, or its last host's)."""
    if vm.host_id is not None:
        return cloud.load(Host, vm.host_id).cluster_id
    root = cloud.load(Volume, vm.root_volume_id)
    if root.pool_id is not None:
        pool = cloud.load(PrimaryStorage, root.pool_id)
        if pool.cluster_id is not None:
            return pool.cluster_id
    last = getattr(vm, "last_host_id", None)
    return cloud.load(Host, last).cluster_id if last is not None else None


def reaches(pool: PrimaryStorage, cluster_id: UUID | None) -> bool:
    return pool.scope is StorageScope.ZONE or cluster_id is None or pool.cluster_id == cluster_id


def pool_for_new_disk(cloud: Cloud, vm: VirtualMachine, size_bytes: int) -> PrimaryStorage:
    """Where an allocated volume is made when first attached: the root disk's pool if it has
    room, then the VM's cluster's other pools, then zone-wide pools."""
    cluster_id = vm_cluster_id(cloud, vm)
    candidates: list[UUID] = []
    root = cloud.load(Volume, vm.root_volume_id)
    if root.pool_id is not None:
        candidates.append(root.pool_id)
    zone = cloud.load(Zone, vm.zone_id)
    cluster_ids = (
        [cluster_id]
        if cluster_id is not None
        else [c for c in zone.cluster_ids if cloud.load(Cluster, c).hypervisor == vm.hypervisor]
    )
    for c in cluster_ids:
        candidates.extend(cloud.load(Cluster, c).storage_pool_ids)
    candidates.extend(zone.zone_storage_pool_ids)
    seen: set[UUID] = set()
    for pool_id in candidates:
        if pool_id in seen:
            continue
        seen.add(pool_id)
        pool = cloud.load(PrimaryStorage, pool_id)
        if pool.enabled and pool.fits(size_bytes):
            return pool
    raise InsufficientCapacity(
        f"no primary storage reachable by virtual machine {vm.name} has room for {size_bytes} bytes"
    )


def host_for_volume(d: Decision, volume: Volume, pool: PrimaryStorage) -> UUID:
    """The host to work on a disk through: its running VM's, or one that reaches the pool."""
    if volume.vm_id is not None:
        vm = d.cloud.find(VirtualMachine, volume.vm_id)
        if vm is not None and vm.state is VmState.RUNNING and vm.host_id is not None:
            return vm.host_id
    hypervisor = volume.hypervisor or pool_hypervisor(d.cloud, pool)
    return host_reaching(d.cloud, pool, hypervisor).id
