"""Which data volumes are plugged into a VM, and at which device: one small aggregate per VM.

The VM aggregate knows only its root volume, and the event store cannot be queried for "every
volume whose vm_id is X". Keeping the VM's device slots in an aggregate of their own (id derived
from the VM id) gives attach a place to reserve a device id under optimistic concurrency (two
attaches racing for device 1 cannot both win) and gives the expunge path the list of data
volumes to detach.
"""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import event

from domain.aggregate import CloudAggregate
from domain.errors import ResourceAllocationError
from domain.ids import derived_id

#: Data disks count from 1 (0 is the root disk); CloudStack keeps device 3 for the CD-ROM.
DATA_DEVICE_IDS: tuple[int, ...] = tuple(d for d in range(1, 16) if d != 3)


def attachments_id_for(vm_id: UUID) -> UUID:
    return derived_id(vm_id, "volume-attachments")


class VolumeAttachments(CloudAggregate):
    @event("Opened")
    def __init__(self, vm_id: UUID) -> None:
        self.vm_id = vm_id
        #: device id (as text, for JSON-friendly state) -> volume id
        self.devices: dict[str, UUID] = {}

    @property
    def volume_ids(self) -> list[UUID]:
        return [self.devices[d] for d in sorted(self.devices, key=int)]

    def device_of(self, volume_id: UUID) -> int | None:
        for device, held in self.devices.items():
            if held == volume_id:
                return int(device)
        return None

    def reserve(self, volume_id: UUID, command_id: str) -> int:
        """The device the volume is (or will be) plugged in at: the lowest free one."""
        held = self.device_of(volume_id)
        if held is not None:
            return held
        free = [d for d in DATA_DEVICE_IDS if str(d) not in self.devices]
        if not free:
            raise ResourceAllocationError(
                f"virtual machine {self.vm_id} already has {len(DATA_DEVICE_IDS)} data volumes"
            )
        self._reserved(volume_id, free[0], command_id)
        return free[0]

    @event("DeviceReserved")
    def _reserved(self, volume_id: UUID, device_id: int, command_id: str) -> None:
        self.devices[str(device_id)] = volume_id
        self._remember(command_id)

    def release(self, volume_id: UUID, command_id: str) -> None:
        if self.has_applied(command_id) or self.device_of(volume_id) is None:
            return
        self._released(volume_id, command_id)

    @event("DeviceReleased")
    def _released(self, volume_id: UUID, command_id: str) -> None:
        device = self.device_of(volume_id)
        if device is not None:
            del self.devices[str(device)]
        self._remember(command_id)
