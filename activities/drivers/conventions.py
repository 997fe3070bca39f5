"""What the KVM, vSphere and XenServer adapters do the same way, kept once so they cannot drift.

A backend that names VMs by UUID gets the same UUID for a Stratus id from every adapter (so a VM
moved between backends, or a second adapter looking at the same host, finds it by one lookup).
A backend that keeps a free-text description on a VM snapshot records there whether memory was
captured, in the same words, because reverting must know it. A volume never shrinks. And the
adapters that cannot yet copy a disk between primary storage pools refuse it alike (432), each
naming what it would need, so a volume migration job fails saying why.
"""

from __future__ import annotations

import uuid

from activities.drivers.hypervisor import (
    DriverError,
    HostRef,
    StoragePoolRef,
    UnsupportedOperationError,
    VolumeInfo,
)

#: uuid5 namespace for Stratus ids that are not UUIDs themselves.
STRATUS_UUID_NAMESPACE = uuid.UUID("6b1d1c52-6f1c-4f0a-9d43-3f7f1f3c4a10")
#: The description of a VM snapshot that holds the running state (reverts to a running VM)...
SNAPSHOT_MEMORY_MARK = "stratus memory=yes"
#: ...and of one that holds the disks only (reverts to a stopped VM).
SNAPSHOT_DISK_MARK = "stratus memory=no"


def stratus_uuid(vm_id: str) -> str:
    """The backend UUID for a Stratus vm id: the id itself when it is a UUID."""
    try:
        return str(uuid.UUID(vm_id))
    except ValueError:
        return str(uuid.uuid5(STRATUS_UUID_NAMESPACE, vm_id))


def shrink_refused(volume_id: str, current: int, size_bytes: int) -> DriverError:
    """The answer to a resize below a volume's size: a filesystem on it would be cut short."""
    return DriverError(
        f"volume {volume_id} is {current} bytes; shrinking to {size_bytes} is refused"
    )


class RefusesVolumeCopies:
    """What a backend that cannot copy a disk between primary storage pools answers to
    `copy_volume`: refused (CloudStack 432) with the reason the backend sets in
    `volume_copy_refusal`, before anything is touched."""

    volume_copy_refusal: str

    def copy_volume(
        self,
        host: HostRef,
        source_pool: StoragePoolRef,
        target_pool: StoragePoolRef,
        volume_id: str,
    ) -> VolumeInfo:
        raise UnsupportedOperationError(
            f"cannot move volume {volume_id} from {source_pool.name} to {target_pool.name}: "
            f"{self.volume_copy_refusal}"
        )
