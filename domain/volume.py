"""The volume aggregate and CloudStack's volume state machine."""

from __future__ import annotations

from enum import StrEnum
from uuid import UUID

from eventsourcing.domain import event

from domain.state_machine import StateMachine, StateMachineAggregate


class VolumeState(StrEnum):
    ALLOCATED = "Allocated"
    CREATING = "Creating"
    READY = "Ready"
    RESIZING = "Resizing"
    SNAPSHOTTING = "Snapshotting"
    REVERT_SNAPSHOTTING = "RevertSnapshotting"
    MIGRATING = "Migrating"
    ATTACHING = "Attaching"
    DESTROY = "Destroy"
    EXPUNGING = "Expunging"
    EXPUNGED = "Expunged"


class VolumeEvent(StrEnum):
    CREATE_REQUESTED = "CreateRequested"
    OPERATION_SUCCEEDED = "OperationSucceeded"
    OPERATION_FAILED = "OperationFailed"
    RESIZE_REQUESTED = "ResizeRequested"
    SNAPSHOT_REQUESTED = "SnapshotRequested"
    REVERT_SNAPSHOT_REQUESTED = "RevertSnapshotRequested"
    MIGRATION_REQUESTED = "MigrationRequested"
    ATTACH_REQUESTED = "AttachRequested"
    DESTROY_REQUESTED = "DestroyRequested"
    EXPUNGING_REQUESTED = "ExpungingRequested"
    RECOVER_REQUESTED = "RecoverRequested"


class VolumeType(StrEnum):
    ROOT = "ROOT"
    DATADISK = "DATADISK"


TRANSITIONAL_STATES = frozenset(
    {
        VolumeState.CREATING,
        VolumeState.RESIZING,
        VolumeState.SNAPSHOTTING,
        VolumeState.REVERT_SNAPSHOTTING,
        VolumeState.MIGRATING,
        VolumeState.ATTACHING,
        VolumeState.EXPUNGING,
    }
)

_S, _E = VolumeState, VolumeEvent
_BUSY_FROM_READY = {
    _E.RESIZE_REQUESTED: _S.RESIZING,
    _E.SNAPSHOT_REQUESTED: _S.SNAPSHOTTING,
    _E.REVERT_SNAPSHOT_REQUESTED: _S.REVERT_SNAPSHOTTING,
    _E.MIGRATION_REQUESTED: _S.MIGRATING,
    _E.ATTACH_REQUESTED: _S.ATTACHING,
}
VOLUME_STATE_MACHINE: StateMachine[VolumeState, VolumeEvent] = StateMachine(
    "volume",
    VolumeState,
    {
        (_S.ALLOCATED, _E.CREATE_REQUESTED): _S.CREATING,
        (_S.ALLOCATED, _E.DESTROY_REQUESTED): _S.DESTROY,
        (_S.CREATING, _E.OPERATION_SUCCEEDED): _S.READY,
        (_S.CREATING, _E.OPERATION_FAILED): _S.ALLOCATED,
        (_S.READY, _E.DESTROY_REQUESTED): _S.DESTROY,
        **{(_S.READY, ev): busy for ev, busy in _BUSY_FROM_READY.items()},
        **{(busy, _E.OPERATION_SUCCEEDED): _S.READY for busy in _BUSY_FROM_READY.values()},
        **{(busy, _E.OPERATION_FAILED): _S.READY for busy in _BUSY_FROM_READY.values()},
        (_S.DESTROY, _E.EXPUNGING_REQUESTED): _S.EXPUNGING,
        (_S.DESTROY, _E.RECOVER_REQUESTED): _S.READY,
        (_S.EXPUNGING, _E.OPERATION_SUCCEEDED): _S.EXPUNGED,
        (_S.EXPUNGING, _E.OPERATION_FAILED): _S.EXPUNGING,
    },
)


class Volume(StateMachineAggregate[VolumeState, VolumeEvent]):
    state_machine = VOLUME_STATE_MACHINE

    class Event(StateMachineAggregate.Event):
        """Declared, not made by eventsourcing: see StateMachineAggregate.Event."""

    @event("Allocated")
    def __init__(
        self,
        name: str,
        account_id: UUID,
        zone_id: UUID,
        volume_type: str,
        size_bytes: int,
        vm_id: UUID | None = None,
        template_id: UUID | None = None,
        disk_offering_id: UUID | None = None,
        device_id: int | None = None,
    ) -> None:
        self.name = name
        self.account_id = account_id
        self.zone_id = zone_id
        self.volume_type = VolumeType(volume_type)
        self.size_bytes = size_bytes
        self.vm_id = vm_id
        self.template_id = template_id
        self.disk_offering_id = disk_offering_id
        self.device_id = device_id
        self.state = VolumeState.ALLOCATED
        self.pool_id: UUID | None = None
        self.path: str | None = None
        self.last_reason: str | None = None

    class Transitioned(Event, StateMachineAggregate.Transitioned):
        EVENT_FIELD = "volume_event"
        volume_event: str
        old_state: str
        new_state: str
        reason: str | None
        command_id: str

    @property
    def is_transitional(self) -> bool:
        return self.state in TRANSITIONAL_STATES

    def record_created(self, pool_id: UUID, path: str, size_bytes: int, command_id: str) -> bool:
        """Creating → Ready, with where the disk now lives."""
        if self.has_applied(command_id):
            return False
        new_state = self.state_after(VolumeEvent.OPERATION_SUCCEEDED)
        self._created(pool_id, path, size_bytes, new_state.value, command_id)
        return True

    @event("Created")
    def _created(
        self, pool_id: UUID, path: str, size_bytes: int, new_state: str, command_id: str
    ) -> None:
        self.pool_id = pool_id
        self.path = path
        self.size_bytes = size_bytes
        self.state = VolumeState(new_state)
        self._remember(command_id)

    # -- data volume operations (attach, detach, resize, migrate, delete) ------------------------
    # Each records the stable state it leaves the volume in, so a projection or the usage meter
    # reads one event rather than pairing a transition with a change of facts.

    @property
    def hypervisor(self) -> str | None:
        """The hypervisor format the disk was made for (None until made, or for volumes made
        before it was recorded: their pool's cluster says it)."""
        return self.__dict__.get("_hypervisor")

    def record_hypervisor(self, hypervisor: str, command_id: str) -> bool:
        if self.has_applied(command_id):
            return False
        self._hypervisor_recorded(hypervisor, command_id)
        return True

    @event("HypervisorRecorded")
    def _hypervisor_recorded(self, hypervisor: str, command_id: str) -> None:
        self.__dict__["_hypervisor"] = hypervisor
        self._remember(command_id)

    def record_attached(self, vm_id: UUID, device_id: int, command_id: str) -> bool:
        """Attaching → Ready, plugged into `vm_id` at `device_id`."""
        if self.has_applied(command_id):
            return False
        new_state = self.state_after(VolumeEvent.OPERATION_SUCCEEDED)
        self._attached(vm_id, device_id, new_state.value, command_id)
        return True

    @event("Attached")
    def _attached(self, vm_id: UUID, device_id: int, new_state: str, command_id: str) -> None:
        self.vm_id = vm_id
        self.device_id = device_id
        self.state = VolumeState(new_state)
        self._remember(command_id)

    def record_detached(self, command_id: str, *, reason: str | None = None) -> bool:
        """Unplugged from its VM; the volume and its data stay (CloudStack has no Detaching
        state: the state does not change)."""
        if self.has_applied(command_id) or self.vm_id is None:
            return False
        self._detached(self.vm_id, reason, command_id)
        return True

    @event("Detached")
    def _detached(self, from_vm_id: UUID, reason: str | None, command_id: str) -> None:
        self.vm_id = None
        self.device_id = None
        self._remember(command_id)

    def record_resized(self, new_size_bytes: int, command_id: str) -> bool:
        """Resizing → Ready at the new size; an Allocated volume (no disk yet) stays Allocated.
        Named `Resized` with `new_size_bytes` so VOLUME usage follows it."""
        if self.has_applied(command_id):
            return False
        new_state = (
            self.state
            if self.state is VolumeState.ALLOCATED
            else self.state_after(VolumeEvent.OPERATION_SUCCEEDED)
        )
        self._resized(self.size_bytes, new_size_bytes, new_state.value, command_id)
        return True

    @event("Resized")
    def _resized(
        self, old_size_bytes: int, new_size_bytes: int, new_state: str, command_id: str
    ) -> None:
        self.size_bytes = new_size_bytes
        self.state = VolumeState(new_state)
        self._remember(command_id)

    def record_migrated(self, pool_id: UUID, path: str, command_id: str) -> bool:
        """Migrating → Ready, the disk now on `pool_id`."""
        if self.has_applied(command_id):
            return False
        new_state = self.state_after(VolumeEvent.OPERATION_SUCCEEDED)
        self._migrated(self.pool_id, pool_id, path, new_state.value, command_id)
        return True

    @event("Migrated")
    def _migrated(
        self,
        from_pool_id: UUID | None,
        pool_id: UUID,
        path: str,
        new_state: str,
        command_id: str,
    ) -> None:
        self.pool_id = pool_id
        self.path = path
        self.state = VolumeState(new_state)
        self._remember(command_id)

    def record_expunged(self, command_id: str) -> bool:
        """Expunging → Expunged: the disk is deleted and the pool's bytes are given back.
        Named `Expunged` so VOLUME usage closes on it."""
        if self.has_applied(command_id):
            return False
        new_state = self.state_after(VolumeEvent.OPERATION_SUCCEEDED)
        self._expunged(self.pool_id, new_state.value, command_id)
        return True

    @event("Expunged")
    def _expunged(self, pool_id: UUID | None, new_state: str, command_id: str) -> None:
        self.vm_id = None
        self.device_id = None
        self.state = VolumeState(new_state)
        self._remember(command_id)
