"""Primary storage (where running disks live) and secondary storage (templates, snapshots).

A primary storage pool reserves capacity per volume, like a host per VM, so that two volumes
racing for the last free bytes cannot both be placed.
"""

from __future__ import annotations

from enum import StrEnum
from uuid import UUID

from eventsourcing.domain import event

from domain.aggregate import CloudAggregate
from domain.errors import InsufficientCapacity, InvalidParameter


class StorageScope(StrEnum):
    CLUSTER = "CLUSTER"
    ZONE = "ZONE"


class PrimaryStorage(CloudAggregate):
    @event("Added")
    def __init__(
        self,
        name: str,
        zone_id: UUID,
        scope: str,
        path: str,
        capacity_bytes: int,
        pod_id: UUID | None = None,
        cluster_id: UUID | None = None,
        overprovisioning: float = 2.0,
        tags: list[str] | None = None,
    ) -> None:
        if capacity_bytes <= 0:
            raise InvalidParameter("capacity_bytes must be positive")
        if StorageScope(scope) is StorageScope.CLUSTER and cluster_id is None:
            raise InvalidParameter("a cluster-scoped pool needs cluster_id")
        self.name = name
        self.zone_id = zone_id
        self.scope = StorageScope(scope)
        self.path = path
        self.capacity_bytes = capacity_bytes
        self.pod_id = pod_id
        self.cluster_id = cluster_id
        self.overprovisioning = overprovisioning
        self.tags: list[str] = list(tags or [])
        self.enabled = True
        self.allocations: dict[str, int] = {}

    @property
    def allocated_bytes(self) -> int:
        return sum(self.allocations.values())

    def fits(self, size_bytes: int) -> bool:
        return self.allocated_bytes + size_bytes <= self.capacity_bytes * self.overprovisioning

    def allocate(self, volume_id: UUID, size_bytes: int, command_id: str) -> None:
        if self.has_applied(command_id) or str(volume_id) in self.allocations:
            return
        if not self.enabled or not self.fits(size_bytes):
            raise InsufficientCapacity(
                f"primary storage {self.name} has no room for {size_bytes} bytes"
            )
        self._allocated(volume_id, size_bytes, command_id)

    @event("CapacityAllocated")
    def _allocated(self, volume_id: UUID, size_bytes: int, command_id: str) -> None:
        self.allocations[str(volume_id)] = size_bytes
        self._remember(command_id)

    def release(self, volume_id: UUID, command_id: str) -> None:
        if self.has_applied(command_id) or str(volume_id) not in self.allocations:
            return
        self._released(volume_id, command_id)

    @event("CapacityReleased")
    def _released(self, volume_id: UUID, command_id: str) -> None:
        self.allocations.pop(str(volume_id), None)
        self._remember(command_id)


class SecondaryStorage(CloudAggregate):
    @event("Added")
    def __init__(self, name: str, zone_id: UUID, url: str, capacity_bytes: int) -> None:
        if capacity_bytes <= 0:
            raise InvalidParameter("capacity_bytes must be positive")
        self.name = name
        self.zone_id = zone_id
        self.url = url
        self.capacity_bytes = capacity_bytes
        self.stored: dict[str, int] = {}

    @property
    def used_bytes(self) -> int:
        return sum(self.stored.values())

    def store(self, object_id: UUID, size_bytes: int, command_id: str) -> None:
        """Account for a template or snapshot backup kept here."""
        if self.has_applied(command_id) or str(object_id) in self.stored:
            return
        if self.used_bytes + size_bytes > self.capacity_bytes:
            raise InsufficientCapacity(f"secondary storage {self.name} is full")
        self._stored(object_id, size_bytes, command_id)

    @event("ObjectStored")
    def _stored(self, object_id: UUID, size_bytes: int, command_id: str) -> None:
        self.stored[str(object_id)] = size_bytes
        self._remember(command_id)

    def remove(self, object_id: UUID, command_id: str) -> None:
        if self.has_applied(command_id) or str(object_id) not in self.stored:
            return
        self._removed(object_id, command_id)

    @event("ObjectRemoved")
    def _removed(self, object_id: UUID, command_id: str) -> None:
        self.stored.pop(str(object_id), None)
        self._remember(command_id)
