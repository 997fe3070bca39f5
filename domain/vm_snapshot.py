"""The VM snapshot aggregate and CloudStack's VM snapshot state machine.

A VM snapshot (createVMSnapshot) captures a VM's disks, and with `memory` its running state, on
the hypervisor. Its id is derived from the job that creates it, so the API answers it at once
and a repeated create finds the same aggregate. The states and events are CloudStack's
(`VMSnapshot.State`): a failed create ends in Error, a failed revert goes back to Ready, a
failed delete ends in Error (deleted again from there).
"""

from __future__ import annotations

from enum import StrEnum
from uuid import UUID

from eventsourcing.domain import event

from domain.aggregate import CloudAggregate
from domain.ids import derived_id
from domain.state_machine import StateMachine, StateMachineAggregate


class VmSnapshotState(StrEnum):
    ALLOCATED = "Allocated"
    CREATING = "Creating"
    READY = "Ready"
    REVERTING = "Reverting"
    EXPUNGING = "Expunging"
    REMOVED = "Removed"
    ERROR = "Error"


class VmSnapshotEvent(StrEnum):
    CREATE_REQUESTED = "CreateRequested"
    OPERATION_SUCCEEDED = "OperationSucceeded"
    OPERATION_FAILED = "OperationFailed"
    REVERT_REQUESTED = "RevertRequested"
    EXPUNGE_REQUESTED = "ExpungeRequested"


_S, _E = VmSnapshotState, VmSnapshotEvent
VM_SNAPSHOT_STATE_MACHINE: StateMachine[VmSnapshotState, VmSnapshotEvent] = StateMachine(
    "VM snapshot",
    VmSnapshotState,
    {
        (_S.ALLOCATED, _E.CREATE_REQUESTED): _S.CREATING,
        (_S.CREATING, _E.OPERATION_SUCCEEDED): _S.READY,
        (_S.CREATING, _E.OPERATION_FAILED): _S.ERROR,
        (_S.READY, _E.REVERT_REQUESTED): _S.REVERTING,
        (_S.REVERTING, _E.OPERATION_SUCCEEDED): _S.READY,
        (_S.REVERTING, _E.OPERATION_FAILED): _S.READY,
        (_S.READY, _E.EXPUNGE_REQUESTED): _S.EXPUNGING,
        (_S.ERROR, _E.EXPUNGE_REQUESTED): _S.EXPUNGING,
        (_S.EXPUNGING, _E.EXPUNGE_REQUESTED): _S.EXPUNGING,
        (_S.EXPUNGING, _E.OPERATION_SUCCEEDED): _S.REMOVED,
        (_S.EXPUNGING, _E.OPERATION_FAILED): _S.ERROR,
    },
)

#: The states a job in progress leaves a snapshot in; its failure record moves it on.
IN_PROGRESS = frozenset({_S.CREATING, _S.REVERTING, _S.EXPUNGING})


def vm_snapshot_id_for(job_id: UUID) -> UUID:
    """The id of the snapshot a createVMSnapshot job makes, known before the job runs."""
    return derived_id(job_id, "vm-snapshot")


class VmSnapshot(StateMachineAggregate[VmSnapshotState, VmSnapshotEvent]):
    state_machine = VM_SNAPSHOT_STATE_MACHINE

    class Event(StateMachineAggregate.Event):
        """Declared, not made by eventsourcing: see StateMachineAggregate.Event."""

    @event("Allocated")
    def __init__(
        self,
        vm_id: UUID,
        name: str,
        account_id: UUID,
        zone_id: UUID,
        memory_requested: bool,
        job_id: UUID,
    ) -> None:
        self.vm_id = vm_id
        self.name = name
        self.account_id = account_id
        self.zone_id = zone_id
        self.memory_requested = memory_requested
        #: Whether the hypervisor captured memory: a revert then gives a running VM.
        self.memory = False
        self.created_by_job = job_id
        self.state = VmSnapshotState.ALLOCATED
        self.last_reason: str | None = None

    class Transitioned(Event, StateMachineAggregate.Transitioned):
        EVENT_FIELD = "snapshot_event"
        snapshot_event: str
        old_state: str
        new_state: str
        reason: str | None
        command_id: str

    @property
    def is_removed(self) -> bool:
        return self.state is VmSnapshotState.REMOVED

    def record_created(self, memory: bool, command_id: str) -> None:
        """The hypervisor made it: Creating -> Ready, with what it really captured."""
        if self.has_applied(command_id):
            return
        new_state = self.state_after(_E.OPERATION_SUCCEEDED)
        self._created(memory, self.state.value, new_state.value, command_id)

    @event("Created")
    def _created(self, memory: bool, old_state: str, new_state: str, command_id: str) -> None:
        self.memory = memory
        self.state = VmSnapshotState(new_state)
        self._remember(command_id)


def vm_snapshot_index_id_for(vm_id: UUID) -> UUID:
    """The id of the VM's snapshot index (one per VM, made with its first snapshot)."""
    return derived_id(vm_id, "vm-snapshots")


class VmSnapshotIndex(CloudAggregate):
    """Which snapshots a VM has: the event store cannot be asked for "every VM snapshot whose
    vm_id is X", and expunging a VM must remove them all. One small aggregate per VM, its id
    derived from the VM's, written in the same decision that allocates a snapshot."""

    @event("Opened")
    def __init__(self, vm_id: UUID) -> None:
        self.vm_id = vm_id
        self.snapshot_ids: list[UUID] = []

    def add(self, snapshot_id: UUID, command_id: str) -> None:
        if self.has_applied(command_id) or snapshot_id in self.snapshot_ids:
            return
        self._added(snapshot_id, command_id)

    @event("SnapshotAdded")
    def _added(self, snapshot_id: UUID, command_id: str) -> None:
        self.snapshot_ids.append(snapshot_id)
        self._remember(command_id)
