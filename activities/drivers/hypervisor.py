"""The contract every hypervisor backend fulfils.

Activities talk to hypervisors only through `HypervisorDriver`. Each backend (the simulator,
libvirt, vSphere, XenServer, bare metal over IPMI) is one adapter behind this protocol, and one
contract test suite proves them all. Every mutating call is idempotent by the Stratus id it is
given: a VM or a volume is found by its Stratus id before anything is created, so an activity
that runs twice (Temporal delivers activities at least once) never makes a second VM or disk.

Credentials never cross this boundary: a driver is built at the worker from its configuration,
and the refs below carry only names, addresses and ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable


class PowerState(StrEnum):
    """What a hypervisor says about a VM, in CloudStack's power-report vocabulary."""

    POWERED_ON = "PowerOn"
    POWERED_OFF = "PowerOff"
    UNKNOWN = "PowerUnknown"


@dataclass(frozen=True)
class HostRef:
    """Where a host is: enough for a driver to reach it, never a secret."""

    host_id: str
    name: str
    address: str
    cluster_id: str
    hypervisor: str


@dataclass(frozen=True)
class StoragePoolRef:
    """A primary storage pool as the hypervisor sees it (a libvirt pool, a datastore, an SR)."""

    pool_id: str
    name: str
    path: str
    scope: str = "CLUSTER"


@dataclass(frozen=True)
class TemplateRef:
    """The image a root volume is made from."""

    template_id: str
    name: str
    url: str
    format: str
    size_bytes: int


@dataclass(frozen=True)
class VolumeSpec:
    """A disk to create on primary storage; `volume_id` is its Stratus id."""

    volume_id: str
    name: str
    size_bytes: int
    template: TemplateRef | None = None


@dataclass(frozen=True)
class VolumeInfo:
    volume_id: str
    path: str
    size_bytes: int
    pool_id: str


@dataclass(frozen=True)
class VolumeMove:
    """One disk of a VM that moves with it: from its pool to one the target host reaches."""

    volume_id: str
    source: StoragePoolRef
    target: StoragePoolRef


@dataclass(frozen=True)
class NicSpec:
    mac_address: str
    ip_address: str
    network_id: str
    vlan: int | None = None
    device_id: int = 0


@dataclass(frozen=True)
class VirtualMachineSpec:
    """Everything a hypervisor needs to define a VM; `vm_id` is its Stratus id."""

    vm_id: str
    name: str
    cpu_count: int
    cpu_speed_mhz: int
    memory_mib: int
    root_volume: VolumeInfo
    nics: tuple[NicSpec, ...] = ()
    data_volumes: tuple[VolumeInfo, ...] = ()
    os_type: str = "Other Linux (64-bit)"


@dataclass(frozen=True)
class VirtualMachineInfo:
    vm_id: str
    name: str
    power_state: PowerState
    host_id: str


@dataclass(frozen=True)
class HostCapacity:
    """What a host reports about itself, as the agent does on connect."""

    cpu_count: int
    cpu_speed_mhz: int
    memory_mib: int
    vm_count: int = 0
    extra: dict[str, str] = field(default_factory=dict)


class DriverError(Exception):
    """A backend refused or failed. `code` is the CloudStack error code the job reports.

    Whether a retry can help is decided per error, never by default: the backend knows whether
    the host is busy (retry) or the request can never succeed (do not).
    """

    code = 530
    retryable = False

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable


class ResourceUnavailableError(DriverError):
    """The host, pool or backend cannot do it now (CloudStack 534): try another host."""

    code = 534
    retryable = True


class InsufficientHostCapacityError(DriverError):
    """The hypervisor itself has no room, whatever our books say (CloudStack 533)."""

    code = 533
    retryable = False


class UnsupportedOperationError(DriverError):
    """This backend cannot do this at all (CloudStack 432), e.g. live migration on bare metal."""

    code = 432
    retryable = False


class DriverTimeoutError(DriverError):
    """The backend did not answer in time: the outcome is unknown, ask it before retrying."""

    code = 530
    retryable = True


@runtime_checkable
class HypervisorDriver(Protocol):
    """One backend. Implementations are synchronous: activities run them in a thread pool."""

    hypervisor: str

    def host_capacity(self, host: HostRef) -> HostCapacity: ...

    def list_vms(self, host: HostRef) -> list[VirtualMachineInfo]: ...

    def find_vm(self, host: HostRef, vm_id: str) -> VirtualMachineInfo | None: ...

    def create_volume(self, host: HostRef, pool: StoragePoolRef, spec: VolumeSpec) -> VolumeInfo:
        """Create the disk, or return the one already made under this volume id."""
        ...

    def delete_volume(self, host: HostRef, pool: StoragePoolRef, volume_id: str) -> None:
        """Remove the disk; a disk already gone is not an error."""
        ...

    def define_vm(self, host: HostRef, spec: VirtualMachineSpec) -> VirtualMachineInfo:
        """Define the VM, or return the one already defined under this vm id."""
        ...

    def start_vm(self, host: HostRef, vm_id: str) -> VirtualMachineInfo:
        """Power the VM on; one already running is success."""
        ...

    def stop_vm(self, host: HostRef, vm_id: str, *, forced: bool = False) -> VirtualMachineInfo:
        """Power the VM off; one already off is success."""
        ...

    def reboot_vm(self, host: HostRef, vm_id: str) -> VirtualMachineInfo: ...

    def destroy_vm(self, host: HostRef, vm_id: str) -> None:
        """Power off and undefine; a VM already gone is not an error. Disks are kept."""
        ...

    # Issue 4: snapshots, volume attachment, resize and migration. A backend that cannot do one
    # raises UnsupportedOperationError (432) so the job fails clearly instead of pretending.

    def create_snapshot(
        self, host: HostRef, vm_id: str, snapshot_id: str, *, memory: bool
    ) -> SnapshotInfo:
        """Snapshot the VM, or return the snapshot already made under this snapshot id."""
        ...

    def list_snapshots(self, host: HostRef, vm_id: str) -> list[SnapshotInfo]:
        """The VM's snapshots made by Stratus, so a retried job can see what already exists."""
        ...

    def revert_snapshot(self, host: HostRef, vm_id: str, snapshot_id: str) -> VirtualMachineInfo:
        """Bring the VM back to the snapshot; the power state follows `SnapshotInfo.memory`."""
        ...

    def delete_snapshot(self, host: HostRef, vm_id: str, snapshot_id: str) -> None:
        """Remove the snapshot; one already gone is not an error."""
        ...

    def attach_volume(
        self, host: HostRef, vm_id: str, volume: VolumeInfo, *, device_id: int
    ) -> VolumeAttachment:
        """Plug the volume in; one already attached to this VM is success."""
        ...

    def detach_volume(self, host: HostRef, vm_id: str, volume_id: str) -> None:
        """Unplug the volume (it is kept); one not attached is not an error."""
        ...

    def list_volume_attachments(self, host: HostRef, vm_id: str) -> list[VolumeAttachment]:
        """What the hypervisor has plugged into the VM, root disk included."""
        ...

    def resize_volume(
        self, host: HostRef, pool: StoragePoolRef, volume_id: str, size_bytes: int
    ) -> VolumeInfo:
        """Grow the disk to `size_bytes`; already that size is success, shrinking is refused."""
        ...

    def migrate_vm(
        self, source_host: HostRef, target_host: HostRef, vm_id: str
    ) -> VirtualMachineInfo:
        """Move a running VM to `target_host` on shared storage; one already there is success."""
        ...

    def migrate_vm_with_storage(
        self,
        source_host: HostRef,
        target_host: HostRef,
        vm_id: str,
        moves: Sequence[VolumeMove],
    ) -> list[VolumeInfo]:
        """Move a running VM to `target_host` (another cluster's) and each disk in `moves` to its
        target pool, live, in one operation; answers the moved disks where they now are. A VM
        already on the target with its disks moved is success; a failure leaves the VM running
        on its source with its disks where they were (the backend's own live storage migration
        copies first and switches over last)."""
        ...

    def copy_volume(
        self,
        host: HostRef,
        source_pool: StoragePoolRef,
        target_pool: StoragePoolRef,
        volume_id: str,
    ) -> VolumeInfo:
        """Copy the (detached or offline) disk to `target_pool` under the same volume id, through
        `host`; a copy already there is success. The source is left for the caller to delete
        once the move is recorded."""
        ...

    # Volume snapshots (issue 3): taken on primary storage, backed up to the zone's secondary
    # storage, then the primary copy is removed (CloudStack's snapshot.backup.to.secondary).
    # Operations that need only secondary storage still run through a host of the zone, as
    # CloudStack's go through its secondary storage VM. A backend that cannot do one raises
    # UnsupportedOperationError (432).

    def snapshot_volume(
        self, host: HostRef, pool: StoragePoolRef, volume_id: str, snapshot_id: str
    ) -> VolumeSnapshotInfo:
        """Take a point-in-time copy of the disk on its pool (the VM may be running); a snapshot
        already taken under this snapshot id is success."""
        ...

    def backup_volume_snapshot(
        self,
        host: HostRef,
        pool: StoragePoolRef,
        volume_id: str,
        snapshot_id: str,
        secondary: SecondaryStorageRef,
    ) -> VolumeSnapshotInfo:
        """Copy the primary snapshot to secondary storage; a backup already there is success."""
        ...

    def delete_volume_snapshot(
        self, host: HostRef, pool: StoragePoolRef, volume_id: str, snapshot_id: str
    ) -> None:
        """Remove the snapshot's copy on primary storage; one already gone is not an error."""
        ...

    def delete_snapshot_backup(
        self, host: HostRef, secondary: SecondaryStorageRef, snapshot_id: str
    ) -> None:
        """Remove the snapshot's backup on secondary storage; one already gone is not an error."""
        ...

    def revert_volume_to_snapshot(
        self,
        host: HostRef,
        pool: StoragePoolRef,
        volume_id: str,
        secondary: SecondaryStorageRef,
        snapshot_id: str,
    ) -> VolumeInfo:
        """Overwrite the disk (its VM stopped, or detached) with the backed-up snapshot; the
        disk keeps its volume id and pool. Reverting twice gives the same disk."""
        ...

    def create_volume_from_snapshot(
        self,
        host: HostRef,
        pool: StoragePoolRef,
        spec: VolumeSpec,
        secondary: SecondaryStorageRef,
        snapshot_id: str,
    ) -> VolumeInfo:
        """Make a new disk (`spec.volume_id`) on `pool` from the backed-up snapshot, at least
        `spec.size_bytes` large; the disk already made under this volume id is success."""
        ...

    def create_template_from_snapshot(
        self,
        host: HostRef,
        secondary: SecondaryStorageRef,
        snapshot_id: str,
        template_id: str,
    ) -> TemplateRef:
        """Make a template image on secondary storage from the backed-up snapshot; the one
        already made under this template id is success. The ref's url is where deployments
        will copy it from."""
        ...

    def delete_template(
        self, host: HostRef, secondary: SecondaryStorageRef, template_id: str
    ) -> None:
        """Remove a template image made by `create_template_from_snapshot` (the undo of a
        template job that could not be registered); one already gone is not an error."""
        ...


# --- Snapshots, volume attachment and migration (issue 4) ---------------------------------------


@dataclass(frozen=True)
class SnapshotInfo:
    """A VM snapshot as the hypervisor holds it; `snapshot_id` is its Stratus id.

    `memory` says whether the running state was captured: reverting such a snapshot gives a
    running VM, reverting a disk-only one gives a stopped VM (as CloudStack's VM snapshots do).
    """

    snapshot_id: str
    vm_id: str
    memory: bool


@dataclass(frozen=True)
class VolumeAttachment:
    """A volume plugged into a VM. `device_id` 0 is the root disk, data disks count from 1."""

    vm_id: str
    volume_id: str
    device_id: int


# --- Volume snapshots (issue 3) -------------------------------------------------------------------


@dataclass(frozen=True)
class SecondaryStorageRef:
    """The zone's secondary storage (an NFS export in CloudStack): where snapshot backups and
    templates live. `path` is where a host reaches it (its mount point or directory)."""

    store_id: str
    name: str
    url: str
    path: str


@dataclass(frozen=True)
class VolumeSnapshotInfo:
    """A volume snapshot as the backend holds it, on primary storage or backed up on
    secondary storage; `snapshot_id` is its Stratus id, `size_bytes` what it occupies."""

    snapshot_id: str
    volume_id: str
    path: str
    size_bytes: int


class RefusesStorageMigration:
    """What a backend that cannot yet move a running VM's disks between pools answers:
    refused (CloudStack 432) before anything is touched, with the reason the backend sets in
    `storage_migration_refusal`, so a migrate job across clusters fails saying why and unwinds."""

    storage_migration_refusal: str

    def migrate_vm_with_storage(
        self,
        source_host: HostRef,
        target_host: HostRef,
        vm_id: str,
        moves: Sequence[VolumeMove],
    ) -> list[VolumeInfo]:
        raise UnsupportedOperationError(
            f"cannot migrate VM {vm_id} with its storage from {source_host.name} to "
            f"{target_host.name}: {self.storage_migration_refusal}"
        )


class RefusesVolumeSnapshots:
    """What a backend that cannot copy a disk to secondary storage answers: every
    volume-snapshot call refused with its reason (CloudStack 432), so the job fails naming why
    instead of half-making a snapshot; a template from a snapshot is never made, so deleting
    one has nothing to do. The backend sets `volume_snapshot_refusal`."""

    volume_snapshot_refusal: str

    def _refuse_volume_snapshots(self) -> UnsupportedOperationError:
        return UnsupportedOperationError(self.volume_snapshot_refusal)

    def snapshot_volume(
        self, host: HostRef, pool: StoragePoolRef, volume_id: str, snapshot_id: str
    ) -> VolumeSnapshotInfo:
        raise self._refuse_volume_snapshots()

    def backup_volume_snapshot(
        self,
        host: HostRef,
        pool: StoragePoolRef,
        volume_id: str,
        snapshot_id: str,
        secondary: SecondaryStorageRef,
    ) -> VolumeSnapshotInfo:
        raise self._refuse_volume_snapshots()

    def delete_volume_snapshot(
        self, host: HostRef, pool: StoragePoolRef, volume_id: str, snapshot_id: str
    ) -> None:
        raise self._refuse_volume_snapshots()

    def delete_snapshot_backup(
        self, host: HostRef, secondary: SecondaryStorageRef, snapshot_id: str
    ) -> None:
        raise self._refuse_volume_snapshots()

    def revert_volume_to_snapshot(
        self,
        host: HostRef,
        pool: StoragePoolRef,
        volume_id: str,
        secondary: SecondaryStorageRef,
        snapshot_id: str,
    ) -> VolumeInfo:
        raise self._refuse_volume_snapshots()

    def create_volume_from_snapshot(
        self,
        host: HostRef,
        pool: StoragePoolRef,
        spec: VolumeSpec,
        secondary: SecondaryStorageRef,
        snapshot_id: str,
    ) -> VolumeInfo:
        raise self._refuse_volume_snapshots()

    def create_template_from_snapshot(
        self,
        host: HostRef,
        secondary: SecondaryStorageRef,
        snapshot_id: str,
        template_id: str,
    ) -> TemplateRef:
        raise self._refuse_volume_snapshots()

    def delete_template(
        self, host: HostRef, secondary: SecondaryStorageRef, template_id: str
    ) -> None:
        """Templates from snapshots are never made here: there is nothing to delete."""
