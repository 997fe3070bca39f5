"""Zones and pods: the datacenter and the rack.

A zone owns its secondary storage, its guest networks and the list of its clusters, so that the
planner can find every candidate host of a zone from the zone aggregate alone.
"""

from __future__ import annotations

from enum import StrEnum
from uuid import UUID

from eventsourcing.domain import event

from domain.aggregate import CloudAggregate
from domain.errors import ResourceUnavailable


class AllocationState(StrEnum):
    ENABLED = "Enabled"
    DISABLED = "Disabled"


class Zone(CloudAggregate):
    @event("Created")
    def __init__(
        self,
        name: str,
        network_type: str = "Advanced",
        dns1: str = "",
        internal_dns1: str = "",
        description: str = "",
    ) -> None:
        self.name = name
        self.network_type = network_type
        self.dns1 = dns1
        self.internal_dns1 = internal_dns1
        self.description = description
        self.allocation_state = AllocationState.ENABLED
        self.pod_ids: list[UUID] = []
        self.cluster_ids: list[UUID] = []
        self.secondary_storage_ids: list[UUID] = []
        self.zone_storage_pool_ids: list[UUID] = []
        self.network_ids: list[UUID] = []

    def add_pod(self, pod_id: UUID) -> None:
        if pod_id not in self.pod_ids:
            self._pod_added(pod_id)

    @event("PodAdded")
    def _pod_added(self, pod_id: UUID) -> None:
        self.pod_ids.append(pod_id)

    def add_cluster(self, cluster_id: UUID) -> None:
        if cluster_id not in self.cluster_ids:
            self._cluster_added(cluster_id)

    @event("ClusterAdded")
    def _cluster_added(self, cluster_id: UUID) -> None:
        self.cluster_ids.append(cluster_id)

    def add_secondary_storage(self, storage_id: UUID) -> None:
        if storage_id not in self.secondary_storage_ids:
            self._secondary_storage_added(storage_id)

    @event("SecondaryStorageAdded")
    def _secondary_storage_added(self, storage_id: UUID) -> None:
        self.secondary_storage_ids.append(storage_id)

    def add_zone_storage_pool(self, pool_id: UUID) -> None:
        if pool_id not in self.zone_storage_pool_ids:
            self._zone_storage_pool_added(pool_id)

    @event("ZoneStoragePoolAdded")
    def _zone_storage_pool_added(self, pool_id: UUID) -> None:
        self.zone_storage_pool_ids.append(pool_id)

    def add_network(self, network_id: UUID) -> None:
        if network_id not in self.network_ids:
            self._network_added(network_id)

    @event("NetworkAdded")
    def _network_added(self, network_id: UUID) -> None:
        self.network_ids.append(network_id)

    @event("AllocationStateChanged")
    def set_allocation_state(self, allocation_state: str) -> None:
        self.allocation_state = AllocationState(allocation_state)

    def check_accepts_deployments(self) -> None:
        if self.allocation_state is not AllocationState.ENABLED:
            raise ResourceUnavailable(f"zone {self.name} is disabled for allocation")


class Pod(CloudAggregate):
    @event("Created")
    def __init__(
        self, name: str, zone_id: UUID, gateway: str, netmask: str, start_ip: str, end_ip: str
    ) -> None:
        self.name = name
        self.zone_id = zone_id
        self.gateway = gateway
        self.netmask = netmask
        self.start_ip = start_ip
        self.end_ip = end_ip
        self.allocation_state = AllocationState.ENABLED
