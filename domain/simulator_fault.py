"""Faults an admin injects into the simulator hypervisor, like CloudStack's configureSimulator.

They live in the event store, not in the simulator's memory, so the API process that accepts
the configuration and the worker process that runs the simulator see the same faults, and the
configuration is audited like every other change.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any
from uuid import UUID

from eventsourcing.domain import event

from domain.aggregate import CloudAggregate
from domain.errors import InvalidParameter
from domain.ids import named_id

SIMULATOR_CONFIGURATION_ID = named_id("simulator", "configuration")


class FaultAction(StrEnum):
    FAIL = "fail"
    DELAY = "delay"


class SimulatorOperation(StrEnum):
    """What the simulator can be told to fail or delay: its driver operations, or all."""

    ALL = "*"
    HOST_CAPACITY = "host_capacity"
    LIST_VMS = "list_vms"
    FIND_VM = "find_vm"
    CREATE_VOLUME = "create_volume"
    DELETE_VOLUME = "delete_volume"
    COPY_VOLUME = "copy_volume"
    DEFINE_VM = "define_vm"
    START_VM = "start_vm"
    STOP_VM = "stop_vm"
    REBOOT_VM = "reboot_vm"
    DESTROY_VM = "destroy_vm"
    CREATE_SNAPSHOT = "create_snapshot"
    REVERT_SNAPSHOT = "revert_snapshot"
    DELETE_SNAPSHOT = "delete_snapshot"
    ATTACH_VOLUME = "attach_volume"
    DETACH_VOLUME = "detach_volume"
    RESIZE_VOLUME = "resize_volume"
    MIGRATE_VM = "migrate_vm"
    SNAPSHOT_VOLUME = "snapshot_volume"
    BACKUP_VOLUME_SNAPSHOT = "backup_volume_snapshot"
    DELETE_VOLUME_SNAPSHOT = "delete_volume_snapshot"
    DELETE_SNAPSHOT_BACKUP = "delete_snapshot_backup"
    REVERT_VOLUME_TO_SNAPSHOT = "revert_volume_to_snapshot"
    CREATE_VOLUME_FROM_SNAPSHOT = "create_volume_from_snapshot"
    CREATE_TEMPLATE_FROM_SNAPSHOT = "create_template_from_snapshot"
    DELETE_TEMPLATE = "delete_template"


class SimulatorConfiguration(CloudAggregate):
    @event("Created")
    def __init__(self) -> None:
        self.faults: dict[str, dict[str, Any]] = {}

    def add_fault(
        self,
        fault_id: UUID,
        operation: str,
        action: str,
        host_id: UUID | None,
        delay_seconds: float,
        error_code: int,
        message: str,
        command_id: str,
    ) -> None:
        if self.has_applied(command_id) or str(fault_id) in self.faults:
            return
        FaultAction(action)
        if delay_seconds < 0:
            raise InvalidParameter("delay_seconds must not be negative")
        self._fault_added(
            fault_id, operation, action, host_id, delay_seconds, error_code, message, command_id
        )

    @event("FaultAdded")
    def _fault_added(
        self,
        fault_id: UUID,
        operation: str,
        action: str,
        host_id: UUID | None,
        delay_seconds: float,
        error_code: int,
        message: str,
        command_id: str,
    ) -> None:
        self.faults[str(fault_id)] = {
            "fault_id": str(fault_id),
            "operation": operation,
            "action": action,
            "host_id": str(host_id) if host_id else None,
            "delay_seconds": delay_seconds,
            "error_code": error_code,
            "message": message,
        }
        self._remember(command_id)

    def remove_fault(self, fault_id: UUID, command_id: str) -> None:
        if self.has_applied(command_id) or str(fault_id) not in self.faults:
            return
        self._fault_removed(fault_id, command_id)

    @event("FaultRemoved")
    def _fault_removed(self, fault_id: UUID, command_id: str) -> None:
        self.faults.pop(str(fault_id), None)
        self._remember(command_id)
