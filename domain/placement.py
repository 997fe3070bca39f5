"""Deployment planning: which host (and primary storage pool) a VM goes to.

Pure code over a snapshot of the zone, so it is unit-tested without a database. The rules are
CloudStack's FirstFit planner: the VM's last host first, then clusters and hosts in order; a
host fits when used + requested <= total × overprovisioning factor for cpu and memory; a
cluster whose allocated share would pass its disable threshold is skipped; hosts, clusters and
pools that already failed this deployment are in the avoid set. The snapshot may be a moment
old: the host aggregate re-checks capacity under optimistic concurrency when it reserves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from uuid import UUID

from domain.errors import InsufficientCapacity

#: CloudStack's `start.retry`: how many hosts a deployment tries before it gives up.
START_RETRY_ATTEMPTS = 10

#: Hosts carrying this tag take only HA restarts (CloudStack's `ha.tag`).
HA_TAG = "ha"


@dataclass(frozen=True)
class HostSnapshot:
    host_id: UUID
    name: str
    cluster_id: UUID
    cpu_total_mhz: int
    cpu_used_mhz: int
    memory_total_mib: int
    memory_used_mib: int
    available: bool = True
    tags: frozenset[str] = frozenset()


@dataclass(frozen=True)
class PoolSnapshot:
    pool_id: UUID
    name: str
    capacity_bytes: int
    allocated_bytes: int
    overprovisioning: float = 1.0
    enabled: bool = True

    def fits(self, size_bytes: int) -> bool:
        return self.enabled and (
            self.allocated_bytes + size_bytes <= self.capacity_bytes * self.overprovisioning
        )


@dataclass(frozen=True)
class ClusterSnapshot:
    cluster_id: UUID
    name: str
    pod_id: UUID
    hypervisor: str
    hosts: tuple[HostSnapshot, ...]
    pools: tuple[PoolSnapshot, ...]
    cpu_overprovisioning: float = 1.0
    memory_overprovisioning: float = 1.0
    disable_threshold: float = 0.85
    enabled: bool = True


@dataclass(frozen=True)
class AvoidSet:
    """What this deployment must not try again: grows with each failed attempt."""

    host_ids: frozenset[UUID] = frozenset()
    cluster_ids: frozenset[UUID] = frozenset()
    pool_ids: frozenset[UUID] = frozenset()

    def with_host(self, host_id: UUID) -> AvoidSet:
        return AvoidSet(self.host_ids | {host_id}, self.cluster_ids, self.pool_ids)

    def with_cluster(self, cluster_id: UUID) -> AvoidSet:
        return AvoidSet(self.host_ids, self.cluster_ids | {cluster_id}, self.pool_ids)

    def with_pool(self, pool_id: UUID) -> AvoidSet:
        return AvoidSet(self.host_ids, self.cluster_ids, self.pool_ids | {pool_id})


@dataclass(frozen=True)
class DeploymentRequest:
    cpu_mhz: int
    memory_mib: int
    root_disk_bytes: int
    hypervisor: str
    last_host_id: UUID | None = None
    host_tags: frozenset[str] = frozenset()
    is_ha_restart: bool = False
    #: Set when the root volume already lives on a pool: the VM must run where it can reach it.
    required_pool_id: UUID | None = None
    avoid: AvoidSet = field(default_factory=AvoidSet)


@dataclass(frozen=True)
class DeploymentPlan:
    host_id: UUID
    cluster_id: UUID
    pod_id: UUID
    pool_id: UUID


class FirstFitPlanner:
    """Takes the first host, in cluster then host order, that fits and is not avoided."""

    def plan(
        self,
        request: DeploymentRequest,
        clusters: Sequence[ClusterSnapshot],
        zone_pools: Sequence[PoolSnapshot] = (),
    ) -> DeploymentPlan:
        candidates = [c for c in clusters if self._cluster_is_eligible(request, c)]
        last_host_plan = self._plan_on_last_host(request, candidates, zone_pools)
        if last_host_plan is not None:
            return last_host_plan
        for cluster in candidates:
            pool = self._pool_for(request, cluster, zone_pools)
            if pool is None:
                continue
            for host in cluster.hosts:
                if self._host_fits(request, cluster, host):
                    return DeploymentPlan(host.host_id, cluster.cluster_id, cluster.pod_id, pool)
        raise InsufficientCapacity(
            f"no host in the zone can take {request.cpu_mhz} MHz / {request.memory_mib} MiB "
            f"with a {request.root_disk_bytes}-byte root disk on {request.hypervisor}"
            f" (avoiding {len(request.avoid.host_ids)} hosts, "
            f"{len(request.avoid.cluster_ids)} clusters, {len(request.avoid.pool_ids)} pools)"
        )

    def _plan_on_last_host(
        self,
        request: DeploymentRequest,
        clusters: Sequence[ClusterSnapshot],
        zone_pools: Sequence[PoolSnapshot],
    ) -> DeploymentPlan | None:
        if request.last_host_id is None:
            return None
        for cluster in clusters:
            for host in cluster.hosts:
                if host.host_id == request.last_host_id and self._host_fits(request, cluster, host):
                    pool = self._pool_for(request, cluster, zone_pools)
                    if pool is not None:
                        return DeploymentPlan(
                            host.host_id, cluster.cluster_id, cluster.pod_id, pool
                        )
        return None

    @staticmethod
    def _cluster_is_eligible(request: DeploymentRequest, cluster: ClusterSnapshot) -> bool:
        if not cluster.enabled or cluster.hypervisor != request.hypervisor:
            return False
        if cluster.cluster_id in request.avoid.cluster_ids:
            return False
        return not cluster_passes_disable_threshold(cluster, request)

    @staticmethod
    def _host_fits(
        request: DeploymentRequest, cluster: ClusterSnapshot, host: HostSnapshot
    ) -> bool:
        if not host.available or host.host_id in request.avoid.host_ids:
            return False
        if HA_TAG in host.tags and not request.is_ha_restart:
            return False
        if not request.host_tags <= host.tags:
            return False
        return (
            host.cpu_used_mhz + request.cpu_mhz <= host.cpu_total_mhz * cluster.cpu_overprovisioning
            and host.memory_used_mib + request.memory_mib
            <= host.memory_total_mib * cluster.memory_overprovisioning
        )

    @staticmethod
    def _pool_for(
        request: DeploymentRequest,
        cluster: ClusterSnapshot,
        zone_pools: Sequence[PoolSnapshot],
    ) -> UUID | None:
        for pool in (*cluster.pools, *zone_pools):
            if request.required_pool_id is not None:
                if pool.pool_id == request.required_pool_id:
                    return pool.pool_id
                continue
            if pool.pool_id not in request.avoid.pool_ids and pool.fits(request.root_disk_bytes):
                return pool.pool_id
        return None


def cluster_passes_disable_threshold(cluster: ClusterSnapshot, request: DeploymentRequest) -> bool:
    """True when placing the request would take the cluster past its disable threshold.

    CloudStack compares allocated (with the request) to total × overprovisioning, for cpu and
    for memory, over the cluster's usable hosts.
    """
    hosts = [h for h in cluster.hosts if h.available]
    if not hosts:
        return True
    cpu_total = sum(h.cpu_total_mhz for h in hosts) * cluster.cpu_overprovisioning
    memory_total = sum(h.memory_total_mib for h in hosts) * cluster.memory_overprovisioning
    cpu_allocated = sum(h.cpu_used_mhz for h in hosts) + request.cpu_mhz
    memory_allocated = sum(h.memory_used_mib for h in hosts) + request.memory_mib
    return (
        cpu_allocated / cpu_total > cluster.disable_threshold
        or memory_allocated / memory_total > cluster.disable_threshold
    )
