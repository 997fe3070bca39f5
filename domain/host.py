"""Hosts and the capacity reserved on them.

Capacity is reserved on the host aggregate, keyed by the VM that holds it, and saved under
optimistic concurrency: two deployments racing for the last room on a host both load version n,
one saves n+1, the other's save fails with IntegrityError, reloads and decides again against the
new total. A host can therefore never be committed beyond total × overprovisioning factor.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from eventsourcing.domain import event

from domain.aggregate import CloudAggregate
from domain.errors import IllegalStateTransition, InsufficientCapacity, InvalidParameter
from domain.host_ha import NOT_PLACEABLE, HaState, HaStatus

#: How many of its moves in the HA machine a host keeps (`Host.ha_history`).
HA_HISTORY_LENGTH = 20
#: The hypervisor type of bare-metal hosts (domain.catalog.HypervisorType.BAREMETAL).
BARE_METAL = "BareMetal"


class HostStatus(StrEnum):
    UP = "Up"
    DOWN = "Down"
    DISCONNECTED = "Disconnected"


class ResourceState(StrEnum):
    """CloudStack's resource (allocation) states of a host: whether it takes new VMs."""

    ENABLED = "Enabled"
    DISABLED = "Disabled"
    PREPARE_FOR_MAINTENANCE = "PrepareForMaintenance"
    MAINTENANCE = "Maintenance"
    ERROR_IN_MAINTENANCE = "ErrorInMaintenance"

    @property
    def in_maintenance(self) -> bool:
        return self in _MAINTENANCE_STATES


_MAINTENANCE_STATES = frozenset(
    {
        ResourceState.PREPARE_FOR_MAINTENANCE,
        ResourceState.MAINTENANCE,
        ResourceState.ERROR_IN_MAINTENANCE,
    }
)


@dataclass(frozen=True)
class Reservation:
    cpu_mhz: int
    memory_mib: int


class Host(CloudAggregate):
    #: The job that is taking (or took) the host into maintenance, and what the host's
    #: allocation state was before it (cancelling an unfinished maintenance goes back to it).
    #: Class-level defaults: hosts recorded (and snapshotted) before maintenance existed.
    maintenance_job_id: UUID | None = None
    state_before_maintenance: ResourceState | None = None
    #: Why the host is in ErrorInMaintenance: one line per VM that could not be moved.
    maintenance_errors: tuple[str, ...] | list[str] = ()
    #: Out-of-band management: how its BMC is reached (never the login: that is the agent's),
    #: whether power actions are allowed, and what the BMC last reported (domain/out_of_band.py).
    oobm_driver: str | None = None
    oobm_address: str | None = None
    oobm_enabled: bool = False
    power_state: str = "Unknown"
    power_state_at: datetime | None = None
    #: The power action job that holds the host's BMC (one at a time), and since when.
    power_action_job_id: UUID | None = None
    power_action_since: datetime | None = None
    #: Host HA (domain/host_ha.py): whether it is on for this host, and where the host is in
    #: the HA state machine (HaStatus.recorded()).
    ha_enabled: bool = False
    ha_status: dict[str, Any] | None = None
    #: The host's last HA_HISTORY_LENGTH moves in the HA machine, oldest first: state, since
    #: and reason of each (what an operator reads to see how a host came to be Fenced).
    ha_history: tuple[dict[str, Any], ...] | list[dict[str, Any]] = ()

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
        if self.ha_state in NOT_PLACEABLE:
            return False
        return self.status is HostStatus.UP and self.resource_state is ResourceState.ENABLED

    @property
    def ha(self) -> HaStatus:
        return HaStatus.from_recorded(self.ha_status)

    @property
    def ha_state(self) -> HaState:
        return self.ha.state

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

    # -- allocation state and maintenance (CloudStack's ResourceState machine) -----------------
    def change_allocation_state(self, allocation_state: str, command_id: str) -> bool:
        """Enable or disable the host for new VMs (updateHost allocationstate). A host in
        maintenance is taken out of it by cancelling the maintenance, never by this. Answers
        whether anything changed: the same state again is a no-op, and so is a repeat of this
        command (a late retry of an older Disable must not undo a later Enable)."""
        wanted = ResourceState(allocation_state)
        if wanted not in (ResourceState.ENABLED, ResourceState.DISABLED):
            raise InvalidParameter(
                f"allocation state must be Enabled or Disabled, not {allocation_state}",
                field="allocation_state",
            )
        if self.has_applied(command_id):
            return False
        if self.resource_state.in_maintenance:
            raise IllegalStateTransition(
                f"host {self.name} is in {self.resource_state}: cancel its maintenance first",
                field="host_id",
            )
        if self.resource_state is wanted:
            return False
        self._allocation_changed(wanted.value, command_id)
        return True

    @event("AllocationChanged")
    def _allocation_changed(self, resource_state: str, command_id: str) -> None:
        self.resource_state = ResourceState(resource_state)
        self._remember(command_id)

    def check_may_enter_maintenance(self) -> None:
        """A host already being prepared, or in Maintenance, is refused; one left in
        ErrorInMaintenance may be asked again (CloudStack's AdminAskMaintenance): the VMs
        that would not move may move now."""
        if self.resource_state in (
            ResourceState.PREPARE_FOR_MAINTENANCE,
            ResourceState.MAINTENANCE,
        ):
            raise IllegalStateTransition(
                f"host {self.name} is already in {self.resource_state}"
                + (f" (job {self.maintenance_job_id})" if self.maintenance_job_id else ""),
                field="host_id",
            )

    def prepare_for_maintenance(self, job_id: UUID, command_id: str) -> None:
        """PrepareForMaintenance: the host takes no new VMs while its VMs are moved away."""
        if self.has_applied(command_id) or self.maintenance_job_id == job_id:
            return
        self.check_may_enter_maintenance()
        before = (
            self.state_before_maintenance or ResourceState.ENABLED
            if self.resource_state is ResourceState.ERROR_IN_MAINTENANCE
            else self.resource_state
        )
        self._maintenance_prepared(job_id, before.value, command_id)

    @event("MaintenancePrepared")
    def _maintenance_prepared(self, job_id: UUID, state_before: str, command_id: str) -> None:
        self.maintenance_job_id = job_id
        self.state_before_maintenance = ResourceState(state_before)
        self.maintenance_errors = []
        self.resource_state = ResourceState.PREPARE_FOR_MAINTENANCE
        self._remember(command_id)

    def enter_maintenance(self, job_id: UUID, command_id: str) -> None:
        """Maintenance: only once no VM holds room here any more."""
        if self.has_applied(command_id) or (
            self.resource_state is ResourceState.MAINTENANCE and self.maintenance_job_id == job_id
        ):
            return
        self._check_preparing(job_id)
        if self.reservations:
            raise IllegalStateTransition(
                f"host {self.name} still holds {len(self.reservations)} VM(s): "
                + ", ".join(sorted(self.reservations))
            )
        self._maintenance_entered(job_id, command_id)

    @event("MaintenanceEntered")
    def _maintenance_entered(self, job_id: UUID, command_id: str) -> None:
        self.resource_state = ResourceState.MAINTENANCE
        self._remember(command_id)

    def fail_maintenance(self, job_id: UUID, errors: list[str], command_id: str) -> None:
        """ErrorInMaintenance: some VM could not be moved; the reasons stay on the host."""
        if self.has_applied(command_id) or (
            self.resource_state is ResourceState.ERROR_IN_MAINTENANCE
            and self.maintenance_job_id == job_id
        ):
            return
        self._check_preparing(job_id)
        self._maintenance_failed(job_id, list(errors), command_id)

    @event("MaintenanceFailed")
    def _maintenance_failed(self, job_id: UUID, errors: list[str], command_id: str) -> None:
        self.resource_state = ResourceState.ERROR_IN_MAINTENANCE
        self.maintenance_errors = list(errors)
        self._remember(command_id)

    def abandon_maintenance(self, job_id: UUID, command_id: str) -> None:
        """The undo of PrepareForMaintenance: back to the state before it, if this job's
        maintenance is still being prepared (nothing to do otherwise: undo runs twice)."""
        if (
            self.has_applied(command_id)
            or self.maintenance_job_id != job_id
            or self.resource_state is not ResourceState.PREPARE_FOR_MAINTENANCE
        ):
            return
        before = self.state_before_maintenance or ResourceState.ENABLED
        self._maintenance_cancelled(job_id, before.value, command_id)

    def cancel_maintenance(self, command_id: str) -> bool:
        """cancelHostMaintenance: back in service (Enabled), from any maintenance state.
        Answers whether the host was in maintenance."""
        if self.has_applied(command_id):
            return True
        if not self.resource_state.in_maintenance:
            return False
        self._maintenance_cancelled(
            self.maintenance_job_id, ResourceState.ENABLED.value, command_id
        )
        return True

    @event("MaintenanceCancelled")
    def _maintenance_cancelled(
        self, job_id: UUID | None, resource_state: str, command_id: str
    ) -> None:
        self.resource_state = ResourceState(resource_state)
        self.maintenance_errors = []
        self.state_before_maintenance = None
        self._remember(command_id)

    # -- out-of-band management -----------------------------------------------------------------
    def configure_out_of_band(
        self, driver: str | None, address: str | None, enabled: bool | None, *, command_id: str
    ) -> None:
        """Set what is given; the same settings again record nothing."""
        if self.has_applied(command_id):
            return
        wanted = (
            driver if driver is not None else self.oobm_driver,
            address if address is not None else self.oobm_address,
            enabled if enabled is not None else self.oobm_enabled,
        )
        if wanted[2] and (wanted[0] is None or wanted[1] is None):
            raise InvalidParameter(
                f"host {self.name} has no out-of-band management to enable: configure its "
                "driver and address first",
                field="host_id",
            )
        if wanted != (self.oobm_driver, self.oobm_address, self.oobm_enabled):
            self._out_of_band_configured(*wanted, command_id)

    @event("OutOfBandConfigured")
    def _out_of_band_configured(
        self, driver: str | None, address: str | None, enabled: bool, command_id: str
    ) -> None:
        self.oobm_driver = driver
        self.oobm_address = address
        self.oobm_enabled = enabled
        self._remember(command_id)

    def record_power_action(
        self, action: str, power_state: str, reported_at: datetime, job_id: UUID, command_id: str
    ) -> None:
        """What a power action (or a power-state read) found, and when the BMC said so:
        audited, whatever it was."""
        if self.has_applied(command_id):
            return
        self._power_action_recorded(action, power_state, reported_at, job_id, command_id)

    @event("PowerActionRecorded")
    def _power_action_recorded(
        self, action: str, power_state: str, reported_at: datetime, job_id: UUID, command_id: str
    ) -> None:
        self.power_state = power_state
        self.power_state_at = reported_at
        self._remember(command_id)

    def claim_power_actions(self, job_id: UUID, at: datetime, command_id: str) -> None:
        """The BMC is this job's until it releases it (the caller has checked it is free)."""
        if self.has_applied(command_id) or self.power_action_job_id == job_id:
            return
        self._power_actions_claimed(job_id, at, command_id)

    @event("PowerActionsClaimed")
    def _power_actions_claimed(self, job_id: UUID, at: datetime, command_id: str) -> None:
        self.power_action_job_id = job_id
        self.power_action_since = at
        self._remember(command_id)

    def release_power_actions(self, job_id: UUID, command_id: str) -> None:
        """The job is done with the BMC; a job that does not hold it releases nothing."""
        if self.has_applied(command_id) or self.power_action_job_id != job_id:
            return
        self._power_actions_released(job_id, command_id)

    @event("PowerActionsReleased")
    def _power_actions_released(self, job_id: UUID, command_id: str) -> None:
        self.power_action_job_id = None
        self.power_action_since = None
        self._remember(command_id)

    # -- host HA ------------------------------------------------------------------------------
    def change_ha(self, enabled: bool, status: HaStatus, command_id: str) -> bool:
        """Record HA switched on or off, or the host moved in the HA machine; the same again
        (or a command applied already) records nothing."""
        if self.has_applied(command_id):
            return False
        recorded = status.recorded()
        if enabled == self.ha_enabled and recorded == self.ha_status:
            return False
        self._ha_changed(enabled, recorded, command_id)
        return True

    @event("HaChanged")
    def _ha_changed(self, enabled: bool, status: dict[str, Any], command_id: str) -> None:
        before = (self.ha_status or {}).get("state"), self.ha_enabled
        self.ha_enabled = enabled
        self.ha_status = status
        if (status.get("state"), enabled) != before:
            move = {k: status.get(k) for k in ("state", "since", "reason")}
            moves = [*self.ha_history, {**move, "ha_enabled": enabled}]
            self.ha_history = moves[-HA_HISTORY_LENGTH:]
        self._remember(command_id)

    def _check_preparing(self, job_id: UUID) -> None:
        if (
            self.resource_state is not ResourceState.PREPARE_FOR_MAINTENANCE
            or self.maintenance_job_id != job_id
        ):
            raise IllegalStateTransition(
                f"host {self.name} is {self.resource_state}, not being prepared for maintenance "
                f"by job {job_id}"
            )
