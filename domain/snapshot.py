"""The volume snapshot aggregate and CloudStack's snapshot state machine.

A volume snapshot (createSnapshot) is taken on primary storage, then backed up to the zone's
secondary storage, after which the primary copy is removed (CloudStack's
`snapshot.backup.to.secondary`): Allocated → Creating → CreatedOnPrimary → BackingUp →
BackedUp, any failure on the way → Error; BackedUp → Destroying → Destroyed, a failed delete
back to BackedUp. A snapshot outlives its volume: it can still be listed, deleted, and turned
into a new volume or a template after the volume is gone. Its id is derived from the job that
takes it, so the API answers it at once and a repeated create finds the same aggregate.
"""

from __future__ import annotations

from enum import StrEnum
from uuid import UUID

from eventsourcing.domain import event

from domain.ids import derived_id
from domain.state_machine import StateMachine, StateMachineAggregate


class SnapshotState(StrEnum):
    ALLOCATED = "Allocated"
    CREATING = "Creating"
    CREATED_ON_PRIMARY = "CreatedOnPrimary"
    BACKING_UP = "BackingUp"
    BACKED_UP = "BackedUp"
    DESTROYING = "Destroying"
    DESTROYED = "Destroyed"
    ERROR = "Error"


class SnapshotEvent(StrEnum):
    CREATE_REQUESTED = "CreateRequested"
    OPERATION_SUCCEEDED = "OperationSucceeded"
    OPERATION_FAILED = "OperationFailed"
    BACKUP_TO_SECONDARY = "BackupToSecondary"
    DESTROY_REQUESTED = "DestroyRequested"


class SnapshotIntervalType(StrEnum):
    """What took the snapshot: a user (MANUAL) or a recurring policy of that interval."""

    MANUAL = "MANUAL"
    HOURLY = "HOURLY"
    DAILY = "DAILY"
    WEEKLY = "WEEKLY"
    MONTHLY = "MONTHLY"


_S, _E = SnapshotState, SnapshotEvent
SNAPSHOT_STATE_MACHINE: StateMachine[SnapshotState, SnapshotEvent] = StateMachine(
    "snapshot",
    SnapshotState,
    {
        (_S.ALLOCATED, _E.CREATE_REQUESTED): _S.CREATING,
        (_S.ALLOCATED, _E.OPERATION_FAILED): _S.ERROR,
        (_S.CREATING, _E.OPERATION_SUCCEEDED): _S.CREATED_ON_PRIMARY,
        (_S.CREATING, _E.OPERATION_FAILED): _S.ERROR,
        (_S.CREATED_ON_PRIMARY, _E.BACKUP_TO_SECONDARY): _S.BACKING_UP,
        (_S.CREATED_ON_PRIMARY, _E.OPERATION_FAILED): _S.ERROR,
        (_S.BACKING_UP, _E.OPERATION_SUCCEEDED): _S.BACKED_UP,
        (_S.BACKING_UP, _E.OPERATION_FAILED): _S.ERROR,
        (_S.BACKED_UP, _E.DESTROY_REQUESTED): _S.DESTROYING,
        (_S.DESTROYING, _E.OPERATION_SUCCEEDED): _S.DESTROYED,
        (_S.DESTROYING, _E.OPERATION_FAILED): _S.BACKED_UP,
        # A snapshot that failed (its job's undos removed what it had made) is deleted at once.
        (_S.ERROR, _E.DESTROY_REQUESTED): _S.DESTROYED,
    },
)

#: The states a job in progress leaves a snapshot in; its failure record moves it on.
IN_PROGRESS = frozenset({_S.CREATING, _S.CREATED_ON_PRIMARY, _S.BACKING_UP, _S.DESTROYING})


def snapshot_id_for(job_id: UUID) -> UUID:
    """The id of the snapshot a createSnapshot job takes, known before the job runs."""
    return derived_id(job_id, "snapshot")


class Snapshot(StateMachineAggregate[SnapshotState, SnapshotEvent]):
    state_machine = SNAPSHOT_STATE_MACHINE

    class Event(StateMachineAggregate.Event):
        """Declared, not made by eventsourcing: see StateMachineAggregate.Event."""

    @event("Allocated")
    def __init__(
        self,
        volume_id: UUID,
        name: str,
        account_id: UUID,
        zone_id: UUID,
        volume_type: str,
        size_bytes: int,
        hypervisor: str,
        job_id: UUID,
        interval_type: str = SnapshotIntervalType.MANUAL.value,
        policy_id: UUID | None = None,
    ) -> None:
        self.volume_id = volume_id
        self.name = name
        self.account_id = account_id
        self.zone_id = zone_id
        self.volume_type = volume_type
        #: The volume's (virtual) size when the snapshot was taken: what a volume made from it
        #: gets at least.
        self.size_bytes = size_bytes
        self.hypervisor = hypervisor
        self.created_by_job = job_id
        self.interval_type = SnapshotIntervalType(interval_type)
        self.policy_id = policy_id
        self.state = SnapshotState.ALLOCATED
        self.primary_pool_id: UUID | None = None
        self.primary_path: str | None = None
        self.secondary_storage_id: UUID | None = None
        self.backup_path: str | None = None
        #: What the backup occupies on secondary storage (SNAPSHOT usage meters it).
        self.physical_size_bytes = 0
        self.last_reason: str | None = None

    class Transitioned(Event, StateMachineAggregate.Transitioned):
        EVENT_FIELD = "snapshot_event"
        snapshot_event: str
        old_state: str
        new_state: str
        reason: str | None
        command_id: str

    @property
    def is_backed_up(self) -> bool:
        return self.state is SnapshotState.BACKED_UP

    @property
    def is_removed(self) -> bool:
        return self.state is SnapshotState.DESTROYED

    def record_on_primary(self, pool_id: UUID, path: str, command_id: str) -> None:
        """Creating → CreatedOnPrimary: the point-in-time copy exists on the volume's pool."""
        if self.has_applied(command_id):
            return
        new_state = self.state_after(_E.OPERATION_SUCCEEDED)
        self._created_on_primary(pool_id, path, new_state.value, command_id)

    @event("CreatedOnPrimary")
    def _created_on_primary(
        self, pool_id: UUID, path: str, new_state: str, command_id: str
    ) -> None:
        self.primary_pool_id = pool_id
        self.primary_path = path
        self.state = SnapshotState(new_state)
        self._remember(command_id)

    def record_backed_up(
        self, secondary_storage_id: UUID, path: str, physical_size_bytes: int, command_id: str
    ) -> None:
        """BackingUp → BackedUp: the copy is on the zone's secondary storage. Named `BackedUp`
        with `physical_size_bytes` so SNAPSHOT usage opens on it."""
        if self.has_applied(command_id):
            return
        new_state = self.state_after(_E.OPERATION_SUCCEEDED)
        self._backed_up(
            secondary_storage_id, path, physical_size_bytes, new_state.value, command_id
        )

    @event("BackedUp")
    def _backed_up(
        self,
        secondary_storage_id: UUID,
        path: str,
        physical_size_bytes: int,
        new_state: str,
        command_id: str,
    ) -> None:
        self.secondary_storage_id = secondary_storage_id
        self.backup_path = path
        self.physical_size_bytes = physical_size_bytes
        self.state = SnapshotState(new_state)
        self._remember(command_id)

    def record_primary_copy_removed(self, command_id: str) -> None:
        """The copy on primary storage is deleted (after the backup, or by an undo)."""
        if self.has_applied(command_id) or self.primary_path is None:
            return
        self._primary_copy_removed(command_id)

    @event("PrimaryCopyRemoved")
    def _primary_copy_removed(self, command_id: str) -> None:
        self.primary_pool_id = None
        self.primary_path = None
        self._remember(command_id)
