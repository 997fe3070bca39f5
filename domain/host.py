"""Hosts and the capacity reserved on them.

Capacity is reserved on the host aggregate, keyed by the VM that holds it, and saved under
optimistic concurrency: two deployments racing for the last room on a host both load version n,
one saves n+1, the other's save fails with IntegrityError, reloads and decides again against the
new total. A host can therefore never be committed beyond total × overprovisioning factor.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from uuid import UUID

from eventsourcing.domain import event

from domain.aggregate import CloudAggregate
from domain.errors import InsufficientCapacity, InvalidParameter

#: The hypervisor type of bare-metal hosts (domain.catalog.HypervisorType.BAREMETAL).
BARE_METAL = "BareMetal"


class HostStatus(StrEnum):
    UP = "Up"
    DOWN = "Down"
    DISCONNECTED = "Disconnected"


class ResourceState(StrEnum):
    ENABLED = "Enabled"
    DISABLED = "Disabled"
    PREPARE_FOR_MAINTENANCE = "PrepareForMaintenance"
    MAINTENANCE = "Maintenance"


@dataclass(frozen=True)
class Reservation:
    cpu_mhz: int
    memory_mib: int


class Host(CloudAggregate):
    @event("Added")
    def __init__(
        self,
        name: str,
        zone_id: UUID,
        pod_id: UUID,
        cluster_id: UUID,
        hypervisor: str,
        address: str,
        cpu_count: int,
        cpu_speed_mhz: int,
        memory_mib: int,
        tags: list[str] | None = None,
    ) -> None:
        if cpu_count <= 0 or cpu_speed_mhz <= 0 or memory_mib <= 0:
            raise InvalidParameter("host cpu_count, cpu_speed_mhz and memory_mib must be positive")
        self.name = name
        self.zone_id = zone_id
        self.pod_id = pod_id
        self.cluster_id = cluster_id
        self.hypervisor = hypervisor
        self.address = address
        self.cpu_count = cpu_count
        self.cpu_speed_mhz = cpu_speed_mhz
        self.memory_mib = memory_mib
        self.tags: list[str] = list(tags or [])
        self.status = HostStatus.UP
        self.resource_state = ResourceState.ENABLED
        self.reservations: dict[str, dict[str, int]] = {}

    @property
    def cpu_total_mhz(self) -> int:
        return self.cpu_count * self.cpu_speed_mhz

    @property
    def cpu_used_mhz(self) -> int:
        return sum(r["cpu_mhz"] for r in self.reservations.values())

    @property
    def memory_used_mib(self) -> int:
        return sum(r["memory_mib"] for r in self.reservations.values())

    def reservation_for(self, vm_id: UUID) -> Reservation | None:
        held = self.reservations.get(str(vm_id))
        return Reservation(**held) if held else None

    @property
    def is_exclusive(self) -> bool:
        """A bare-metal host is the machine itself: it runs one instance, whatever its size."""
        return self.hypervisor == BARE_METAL

    def can_take_deployments(self) -> bool:
        if self.is_exclusive and self.reservations:
            return False
        return self.status is HostStatus.UP and self.resource_state is ResourceState.ENABLED

    def fits(
        self,
        cpu_mhz: int,
        memory_mib: int,
        cpu_overprovisioning: float,
        memory_overprovisioning: float,
    ) -> bool:
        return (
            self.cpu_used_mhz + cpu_mhz <= self.cpu_total_mhz * cpu_overprovisioning
            and self.memory_used_mib + memory_mib <= self.memory_mib * memory_overprovisioning
        )

    def reserve_capacity(
        self,
        vm_id: UUID,
        cpu_mhz: int,
        memory_mib: int,
        cpu_overprovisioning: float,
        memory_overprovisioning: float,
        command_id: str,
    ) -> None:
        """Hold room for a VM. Holding it again for the same VM is a no-op, not a double."""
        if self.has_applied(command_id) or str(vm_id) in self.reservations:
            return
        if not self.can_take_deployments():
            raise InsufficientCapacity(
                f"host {self.name} is {self.status}/{self.resource_state} and takes no VMs"
            )
        if not self.fits(cpu_mhz, memory_mib, cpu_overprovisioning, memory_overprovisioning):
            raise InsufficientCapacity(
                f"host {self.name} has no room for {cpu_mhz} MHz / {memory_mib} MiB "
                f"(used {self.cpu_used_mhz}/{self.cpu_total_mhz * cpu_overprovisioning:.0f} MHz,"
                f" {self.memory_used_mib}/{self.memory_mib * memory_overprovisioning:.0f} MiB)"
            )
        self._capacity_reserved(vm_id, cpu_mhz, memory_mib, command_id)

    def record_reported_usage(
        self, vm_id: UUID, cpu_mhz: int, memory_mib: int, command_id: str
    ) -> None:
        """A VM the hypervisor reports running here holds its room, whatever the factors or
        the host's state say: reality wins over the books (power-state sync)."""
        if self.has_applied(command_id) or str(vm_id) in self.reservations:
            return
        self._capacity_reserved(vm_id, cpu_mhz, memory_mib, command_id)

    @event("CapacityReserved")
    def _capacity_reserved(
        self, vm_id: UUID, cpu_mhz: int, memory_mib: int, command_id: str
    ) -> None:
        self.reservations[str(vm_id)] = {"cpu_mhz": cpu_mhz, "memory_mib": memory_mib}
        self._remember(command_id)

    def release_capacity(self, vm_id: UUID, command_id: str) -> None:
        """Give back a VM's room. Releasing what is not held is a no-op (undo runs twice)."""
        if self.has_applied(command_id) or str(vm_id) not in self.reservations:
            return
        self._capacity_released(vm_id, command_id)

    @event("CapacityReleased")
    def _capacity_released(self, vm_id: UUID, command_id: str) -> None:
        self.reservations.pop(str(vm_id), None)
        self._remember(command_id)

    @event("StatusChanged")
    def set_status(self, status: str) -> None:
        self.status = HostStatus(status)

    @event("ResourceStateChanged")
    def set_resource_state(self, resource_state: str) -> None:
        self.resource_state = ResourceState(resource_state)
