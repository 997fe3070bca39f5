"""Clusters: homogeneous hosts of one hypervisor type sharing primary storage.

Overprovisioning factors and the allocation disable threshold are cluster settings in
CloudStack (cpu.overprovisioning.factor, cluster.*.allocated.capacity.disablethreshold), so they
live here and the host applies them when it reserves capacity.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import event

from domain.aggregate import CloudAggregate
from domain.errors import InvalidParameter
from domain.host_ha import HaSettings
from domain.zone import AllocationState

DEFAULT_DISABLE_THRESHOLD = 0.85


class Cluster(CloudAggregate):
    #: Host HA settings of the cluster's hosts (HaSettings fields); None: CloudStack's defaults.
    #: A class-level default: clusters recorded before host HA existed.
    ha_settings: dict[str, Any] | None = None

    @event("Created")
    def __init__(
        self,
        name: str,
        zone_id: UUID,
        pod_id: UUID,
        hypervisor: str,
        cpu_overprovisioning: float = 1.0,
        memory_overprovisioning: float = 1.0,
        disable_threshold: float = DEFAULT_DISABLE_THRESHOLD,
        agent_task_queue: str | None = None,
    ) -> None:
        check_overprovisioning(cpu_overprovisioning, memory_overprovisioning, disable_threshold)
        self.name = name
        self.zone_id = zone_id
        self.pod_id = pod_id
        self.hypervisor = hypervisor
        self.cpu_overprovisioning = cpu_overprovisioning
        self.memory_overprovisioning = memory_overprovisioning
        self.disable_threshold = disable_threshold
        self.agent_task_queue = agent_task_queue
        self.allocation_state = AllocationState.ENABLED
        self.host_ids: list[UUID] = []
        self.storage_pool_ids: list[UUID] = []

    def add_host(self, host_id: UUID) -> None:
        if host_id not in self.host_ids:
            self._host_added(host_id)

    @event("HostAdded")
    def _host_added(self, host_id: UUID) -> None:
        self.host_ids.append(host_id)

    def add_storage_pool(self, pool_id: UUID) -> None:
        if pool_id not in self.storage_pool_ids:
            self._storage_pool_added(pool_id)

    @event("StoragePoolAdded")
    def _storage_pool_added(self, pool_id: UUID) -> None:
        self.storage_pool_ids.append(pool_id)

    def configure_overprovisioning(
        self, cpu: float, memory: float, disable_threshold: float
    ) -> None:
        check_overprovisioning(cpu, memory, disable_threshold)
        self._overprovisioning_configured(cpu, memory, disable_threshold)

    @event("OverprovisioningConfigured")
    def _overprovisioning_configured(
        self, cpu: float, memory: float, disable_threshold: float
    ) -> None:
        self.cpu_overprovisioning = cpu
        self.memory_overprovisioning = memory
        self.disable_threshold = disable_threshold

    @event("AllocationStateChanged")
    def set_allocation_state(self, allocation_state: str) -> None:
        self.allocation_state = AllocationState(allocation_state)

    def change_allocation_state(self, allocation_state: str, command_id: str) -> bool:
        """Enable or disable the cluster for new VMs (updateCluster allocationstate); a repeat
        of this command, or the state it already has, changes nothing."""
        wanted = AllocationState(allocation_state)
        if self.has_applied(command_id) or self.allocation_state is wanted:
            return False
        self._allocation_changed(wanted.value, command_id)
        return True

    @event("AllocationChanged")
    def _allocation_changed(self, allocation_state: str, command_id: str) -> None:
        self.allocation_state = AllocationState(allocation_state)
        self._remember(command_id)

    @property
    def ha(self) -> HaSettings:
        return HaSettings.model_validate(self.ha_settings or {})

    def configure_ha(self, settings: HaSettings, command_id: str) -> bool:
        """Set the host-HA settings of the cluster; the same again records nothing."""
        wanted = settings.model_dump()
        if self.has_applied(command_id) or wanted == self.ha.model_dump():
            return False
        self._ha_configured(wanted, command_id)
        return True

    @event("HaConfigured")
    def _ha_configured(self, settings: dict[str, Any], command_id: str) -> None:
        self.ha_settings = settings
        self._remember(command_id)


def check_overprovisioning(cpu: float, memory: float, disable_threshold: float) -> None:
    if cpu < 1.0 or memory < 1.0:
        raise InvalidParameter("overprovisioning factors must be at least 1.0")
    if not 0.0 < disable_threshold <= 1.0:
        raise InvalidParameter("disable_threshold must be in (0, 1]")
