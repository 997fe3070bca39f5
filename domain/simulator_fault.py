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
