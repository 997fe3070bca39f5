"""The virtual machine aggregate and CloudStack's VM state machine.

Every state change is one `Transitioned` event naming the CloudStack event that caused it
(StartRequested, OperationSucceeded, FollowAgentPowerOffReport, ...), so the usage projection and
the audit log read the same vocabulary an operator knows from CloudStack.
"""

from __future__ import annotations

from enum import StrEnum
from uuid import UUID

from eventsourcing.domain import event

from domain.errors import IllegalStateTransition
from domain.state_machine import StateMachine, StateMachineAggregate


class VmState(StrEnum):
    STOPPED = "Stopped"
    STARTING = "Starting"
    RUNNING = "Running"
    STOPPING = "Stopping"
    MIGRATING = "Migrating"
    DESTROYED = "Destroyed"
    EXPUNGING = "Expunging"
    ERROR = "Error"


class VmEvent(StrEnum):
    START_REQUESTED = "StartRequested"
    STOP_REQUESTED = "StopRequested"
    DESTROY_REQUESTED = "DestroyRequested"
    RECOVERY_REQUESTED = "RecoveryRequested"
    EXPUNGE_OPERATION = "ExpungeOperation"
    MIGRATION_REQUESTED = "MigrationRequested"
    STORAGE_MIGRATION_REQUESTED = "StorageMigrationRequested"
    OPERATION_SUCCEEDED = "OperationSucceeded"
    OPERATION_FAILED = "OperationFailed"
    OPERATION_FAILED_TO_ERROR = "OperationFailedToError"
    OPERATION_RETRY = "OperationRetry"
    AGENT_REPORT_RUNNING = "AgentReportRunning"
    AGENT_REPORT_STOPPED = "AgentReportStopped"
    FOLLOW_AGENT_POWER_ON_REPORT = "FollowAgentPowerOnReport"
    FOLLOW_AGENT_POWER_OFF_REPORT = "FollowAgentPowerOffReport"


TRANSITIONAL_STATES = frozenset(
    {VmState.STARTING, VmState.STOPPING, VmState.MIGRATING, VmState.EXPUNGING}
)

_S, _E = VmState, VmEvent
VM_STATE_MACHINE: StateMachine[VmState, VmEvent] = StateMachine(
    "virtual machine",
    VmState,
    {
        (_S.STOPPED, _E.START_REQUESTED): _S.STARTING,
        (_S.STOPPED, _E.DESTROY_REQUESTED): _S.DESTROYED,
        (_S.STOPPED, _E.EXPUNGE_OPERATION): _S.EXPUNGING,
        (_S.STOPPED, _E.OPERATION_FAILED_TO_ERROR): _S.ERROR,
        (_S.STOPPED, _E.STORAGE_MIGRATION_REQUESTED): _S.MIGRATING,
        (_S.STOPPED, _E.FOLLOW_AGENT_POWER_ON_REPORT): _S.RUNNING,
        (_S.STOPPED, _E.STOP_REQUESTED): _S.STOPPED,
        (_S.STOPPED, _E.AGENT_REPORT_STOPPED): _S.STOPPED,
        (_S.STOPPED, _E.OPERATION_FAILED): _S.STOPPED,
        (_S.STOPPED, _E.FOLLOW_AGENT_POWER_OFF_REPORT): _S.STOPPED,
        (_S.STARTING, _E.OPERATION_RETRY): _S.STARTING,
        (_S.STARTING, _E.OPERATION_SUCCEEDED): _S.RUNNING,
        (_S.STARTING, _E.AGENT_REPORT_RUNNING): _S.RUNNING,
        (_S.STARTING, _E.FOLLOW_AGENT_POWER_ON_REPORT): _S.RUNNING,
        (_S.STARTING, _E.OPERATION_FAILED): _S.STOPPED,
        (_S.STARTING, _E.AGENT_REPORT_STOPPED): _S.STOPPED,
        (_S.STARTING, _E.FOLLOW_AGENT_POWER_OFF_REPORT): _S.STOPPED,
        (_S.RUNNING, _E.MIGRATION_REQUESTED): _S.MIGRATING,
        (_S.RUNNING, _E.STOP_REQUESTED): _S.STOPPING,
        (_S.RUNNING, _E.AGENT_REPORT_STOPPED): _S.STOPPED,
        (_S.RUNNING, _E.FOLLOW_AGENT_POWER_OFF_REPORT): _S.STOPPED,
        (_S.MIGRATING, _E.OPERATION_SUCCEEDED): _S.RUNNING,
        (_S.MIGRATING, _E.OPERATION_FAILED): _S.RUNNING,
        (_S.MIGRATING, _E.AGENT_REPORT_RUNNING): _S.RUNNING,
        (_S.MIGRATING, _E.AGENT_REPORT_STOPPED): _S.STOPPED,
        (_S.MIGRATING, _E.FOLLOW_AGENT_POWER_OFF_REPORT): _S.STOPPED,
        (_S.STOPPING, _E.OPERATION_SUCCEEDED): _S.STOPPED,
        (_S.STOPPING, _E.AGENT_REPORT_STOPPED): _S.STOPPED,
        (_S.STOPPING, _E.FOLLOW_AGENT_POWER_OFF_REPORT): _S.STOPPED,
        (_S.STOPPING, _E.OPERATION_FAILED): _S.RUNNING,
        (_S.STOPPING, _E.AGENT_REPORT_RUNNING): _S.RUNNING,
        (_S.DESTROYED, _E.RECOVERY_REQUESTED): _S.STOPPED,
        (_S.DESTROYED, _E.EXPUNGE_OPERATION): _S.EXPUNGING,
        (_S.EXPUNGING, _E.OPERATION_FAILED): _S.EXPUNGING,
        (_S.EXPUNGING, _E.EXPUNGE_OPERATION): _S.EXPUNGING,
        (_S.ERROR, _E.DESTROY_REQUESTED): _S.EXPUNGING,
        (_S.ERROR, _E.EXPUNGE_OPERATION): _S.EXPUNGING,
    },
)

#: States in which the VM occupies a host (and so holds host capacity).
ON_HOST_STATES = frozenset({VmState.STARTING, VmState.RUNNING, VmState.STOPPING, VmState.MIGRATING})


class VirtualMachine(StateMachineAggregate[VmState, VmEvent]):
    state_machine = VM_STATE_MACHINE

    class Event(StateMachineAggregate.Event):
        """Declared, not made by eventsourcing: see StateMachineAggregate.Event."""

    @event("Registered")
    def __init__(
        self,
        name: str,
        display_name: str,
        account_id: UUID,
        zone_id: UUID,
        service_offering_id: UUID,
        template_id: UUID,
        network_id: UUID,
        hypervisor: str,
        cpu_count: int,
        cpu_speed_mhz: int,
        memory_mib: int,
        root_volume_id: UUID,
        ha_enabled: bool,
        job_id: UUID,
    ) -> None:
        self.name = name
        self.display_name = display_name
        self.account_id = account_id
        self.zone_id = zone_id
        self.service_offering_id = service_offering_id
        self.template_id = template_id
        self.network_id = network_id
        self.hypervisor = hypervisor
        self.cpu_count = cpu_count
        self.cpu_speed_mhz = cpu_speed_mhz
        self.memory_mib = memory_mib
        self.root_volume_id = root_volume_id
        self.ha_enabled = ha_enabled
        self.created_by_job = job_id
        self.state = VmState.STOPPED
        self.host_id: UUID | None = None
        self.last_host_id: UUID | None = None
        self.ip_address: str | None = None
        self.mac_address: str | None = None
        self.last_reason: str | None = None

    @property
    def cpu_mhz(self) -> int:
        return self.cpu_count * self.cpu_speed_mhz

    @property
    def is_transitional(self) -> bool:
        return self.state in TRANSITIONAL_STATES

    @property
    def is_removed(self) -> bool:
        """Expunged for good (the last event is `Removed`, so `modified_on` says when). Read
        from `__dict__` so snapshots taken before this attribute existed still load."""
        return bool(self.__dict__.get("_removed", False))

    class Transitioned(Event, StateMachineAggregate.Transitioned):
        """Also says which host the VM is on from now (`host_id`, None: unchanged)."""

        EVENT_FIELD = "vm_event"
        vm_event: str
        old_state: str
        new_state: str
        host_id: UUID | None
        reason: str | None
        command_id: str

    def transition(
        self,
        vm_event: VmEvent,
        command_id: str,
        *,
        host_id: UUID | None = None,
        reason: str | None = None,
    ) -> bool:
        """Apply a state-machine event, on `host_id` when it names the VM's host from now;
        False when this command was already applied."""
        return self._transition(vm_event, command_id, reason=reason, host_id=host_id)

    def _on_transitioned(self, event: StateMachineAggregate.Transitioned) -> None:
        """A VM holds a host exactly while it is on one, and remembers the last it ran on."""
        assert isinstance(event, VirtualMachine.Transitioned)
        super()._on_transitioned(event)
        if event.host_id is not None:
            self.host_id = event.host_id
        if self.state is VmState.RUNNING and self.host_id is not None:
            self.last_host_id = self.host_id
        if self.state not in ON_HOST_STATES:
            self.host_id = None

    def attach_nic(
        self, network_id: UUID, ip_address: str, mac_address: str, command_id: str
    ) -> None:
        if self.has_applied(command_id) or (
            self.ip_address == ip_address and self.network_id == network_id
        ):
            return
        self._nic_attached(network_id, ip_address, mac_address, command_id)

    @event("NicAttached")
    def _nic_attached(
        self, network_id: UUID, ip_address: str, mac_address: str, command_id: str
    ) -> None:
        self.network_id = network_id
        self.ip_address = ip_address
        self.mac_address = mac_address
        self._remember(command_id)

    def detach_nic(self, command_id: str) -> None:
        if self.has_applied(command_id) or self.ip_address is None:
            return
        self._nic_detached(command_id)

    @event("NicDetached")
    def _nic_detached(self, command_id: str) -> None:
        self.ip_address = None
        self.mac_address = None
        self._remember(command_id)

    def forget_last_host(self, host_id: UUID, command_id: str) -> bool:
        """A stopped VM no longer prefers the host it last ran on (the host goes into
        maintenance: CloudStack unassigns its stopped VMs so they start elsewhere). Only while
        the VM is Stopped and that host is still its last one; answers whether it forgot."""
        if (
            self.has_applied(command_id)
            or self.state is not VmState.STOPPED
            or self.last_host_id != host_id
        ):
            return False
        self._last_host_forgotten(host_id, command_id)
        return True

    @event("LastHostForgotten")
    def _last_host_forgotten(self, host_id: UUID, command_id: str) -> None:
        self.last_host_id = None
        self._remember(command_id)

    def record_reboot(self, host_id: UUID, command_id: str) -> None:
        """The hypervisor rebooted the VM: no state change, but an event the audit log shows."""
        if self.has_applied(command_id):
            return
        self._rebooted(host_id, command_id)

    @event("Rebooted")
    def _rebooted(self, host_id: UUID, command_id: str) -> None:
        self._remember(command_id)

    def remove(self, command_id: str) -> None:
        """The end of an expunge: the VM is gone (read models and usage stop counting it).

        Only an Expunging VM that holds no host and no NIC any more can be removed.
        """
        if self.has_applied(command_id) or self.is_removed:
            return
        if self.state is not VmState.EXPUNGING or self.host_id is not None:
            raise IllegalStateTransition(f"virtual machine in state {self.state} cannot be removed")
        self._removed(command_id)

    @event("Removed")
    def _removed(self, command_id: str) -> None:
        self.__dict__["_removed"] = True
        self._remember(command_id)

    # -- scale (a stopped VM to another offering) and restore (a new root volume) --------------
    def change_service_offering(
        self,
        service_offering_id: UUID,
        cpu_count: int,
        cpu_speed_mhz: int,
        memory_mib: int,
        ha_enabled: bool,
        command_id: str,
    ) -> bool:
        """A Stopped VM takes another service offering (CloudStack's scaleVirtualMachine of a
        stopped VM): its cpu and memory are the offering's from its next start. Named
        `ServiceOfferingChanged` so usage splits its intervals at this moment."""
        if self.has_applied(command_id):
            return False
        if self.state is not VmState.STOPPED or self.is_removed:
            raise IllegalStateTransition(
                f"virtual machine {self.name} must be Stopped to change its service offering "
                f"(it is {self.state})"
            )
        self._service_offering_changed(
            self.service_offering_id,
            service_offering_id,
            cpu_count,
            cpu_speed_mhz,
            memory_mib,
            ha_enabled,
            command_id,
        )
        return True

    @event("ServiceOfferingChanged")
    def _service_offering_changed(
        self,
        old_service_offering_id: UUID,
        service_offering_id: UUID,
        cpu_count: int,
        cpu_speed_mhz: int,
        memory_mib: int,
        ha_enabled: bool,
        command_id: str,
    ) -> None:
        self.service_offering_id = service_offering_id
        self.cpu_count = cpu_count
        self.cpu_speed_mhz = cpu_speed_mhz
        self.memory_mib = memory_mib
        self.ha_enabled = ha_enabled
        self._remember(command_id)

    def replace_root_volume(self, root_volume_id: UUID, template_id: UUID, command_id: str) -> bool:
        """The VM boots from another root volume (restoreVirtualMachine), made from
        `template_id`; also the undo of that, with the old volume and template."""
        if self.has_applied(command_id) or (
            self.root_volume_id == root_volume_id and self.template_id == template_id
        ):
            return False
        self._root_volume_replaced(
            self.root_volume_id, root_volume_id, self.template_id, template_id, command_id
        )
        return True

    @event("RootVolumeReplaced")
    def _root_volume_replaced(
        self,
        old_root_volume_id: UUID,
        root_volume_id: UUID,
        old_template_id: UUID,
        template_id: UUID,
        command_id: str,
    ) -> None:
        self.root_volume_id = root_volume_id
        self.template_id = template_id
        self._remember(command_id)
