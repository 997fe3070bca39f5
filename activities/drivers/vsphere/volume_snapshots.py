"""Volume snapshots on vSphere: VMDK copies, as CloudStack's VMware resource keeps them.

The snapshot on primary storage is a copy of the volume's disk on its datastore
(`<folder>/snapshots/<snapshot id>.vmdk`), its backup a copy on the zone's secondary storage
mounted on the host as an NFS datastore, and reverts and volumes from a snapshot are copies of
that backup. A disk a running VM writes to is copied under a short disk-only VM snapshot.
"""

from __future__ import annotations

import contextlib
from typing import Any

from pyVmomi import vmodl

from activities.drivers.hypervisor import (
    DriverError,
    HostRef,
    ResourceUnavailableError,
    SecondaryStorageRef,
    StoragePoolRef,
    VolumeInfo,
    VolumeSnapshotInfo,
    VolumeSpec,
)
from activities.drivers.vsphere.disks import scratch_path
from activities.drivers.vsphere.secondary_storage import VSphereSecondaryStorage
from activities.drivers.vsphere.snapshots import (
    VOLUME_SNAPSHOT_MARK,
    VSphereSnapshots,
    volume_snapshot_vm_snapshot_name,
)


class VSphereVolumeSnapshots(VSphereSecondaryStorage, VSphereSnapshots):
    """Copying a volume to a snapshot, backing it up, and restoring volumes from backups."""

    def _snapshot_path(self, pool: StoragePoolRef, snapshot_id: str) -> str:
        return f"[{pool.name}] {self._volume_folder}/snapshots/{snapshot_id}.vmdk"

    def _volume_snapshot_info(
        self, host: HostRef, datacenter: Any, path: str, snapshot_id: str, volume_id: str
    ) -> VolumeSnapshotInfo:
        size = self._disk_size(host, datacenter, path)
        return VolumeSnapshotInfo(snapshot_id, volume_id, path, size)

    def snapshot_volume(
        self, host: HostRef, pool: StoragePoolRef, volume_id: str, snapshot_id: str
    ) -> VolumeSnapshotInfo:
        """Copy the volume's VMDK on its datastore; the copy already made is the answer.

        A disk a running VM writes to is copied the way CloudStack's VMware resource (and any
        vSphere backup) does it: a disk-only VM snapshot freezes the disk's file (writes go to a
        new delta disk from then on), the frozen file is copied, and the VM snapshot is removed
        (ESXi folds the delta back into the disk). The copy is crash-consistent, the VM runs on.
        govmomi's simulator makes VM snapshots without delta disks, but nothing writes to its
        disks either, so the copy made there is as consistent.

        Every attempt first removes the VM snapshot an earlier attempt of this volume snapshot
        left (it crashed, or its RemoveSnapshot_Task failed), whether the copy was made or not:
        left alone, its delta disk grows for ever and, the disk's backing being that delta, it
        would refuse every retry below. A disk still under VM snapshots then is refused: its file
        is not the VM's current disk. Under another volume snapshot's VM snapshot that is
        retryable (534), it goes when that copy is done; under the VM's own VM snapshots it is
        final until someone deletes them.
        """
        action = f"snapshot volume {volume_id} as {snapshot_id}"

        def call() -> VolumeSnapshotInfo:
            content = self._content(host)
            datacenter = self._datacenter(content, host)
            path = self._snapshot_path(pool, snapshot_id)
            volume = self._volume_path(pool, volume_id)
            users = self._users_of(content, volume)
            if self._remove_live_copy_snapshot(users, snapshot_id, action):
                users = self._users_of(content, volume)  # the disks' backings changed
            if not self._disk_exists(content, datacenter, path):
                if not self._disk_exists(content, datacenter, volume):
                    raise DriverError(
                        f"volume {volume_id} is not on datastore {pool.name}", retryable=False
                    )
                for vm, disk in users:
                    if disk.backing.fileName != volume:
                        self._refuse_delta(vm, volume_id)
                running = [vm for vm, _ in users if vm.runtime.powerState != "poweredOff"]
                if running:
                    self._live_copy(
                        host, content, datacenter, running[0], volume, path, snapshot_id, action
                    )
                else:
                    self._copy_disk(host, content, datacenter, volume, path, action)
            return self._volume_snapshot_info(host, datacenter, path, snapshot_id, volume_id)

        return self._call(action, call)  # type: ignore[no-any-return]

    def _refuse_delta(self, vm: Any, volume_id: str) -> None:
        """Refuse to copy a disk `vm` reaches through a delta disk (it is under VM snapshots):
        retryably when only other volume snapshots' transient VM snapshots hold it, for good
        when the VM's own VM snapshots do (or vSphere left the delta to consolidate)."""
        trees = self._snapshots(vm)
        ours = [t.name for t in trees if t.description == VOLUME_SNAPSHOT_MARK]
        if ours and len(ours) == len(trees):
            raise ResourceUnavailableError(
                f"volume {volume_id} is under VM snapshot {ours[0]} of VM {vm.name}, which "
                "another volume snapshot copies a disk under; retry once that copy is done"
            )
        raise DriverError(
            f"volume {volume_id} is under VM snapshots of VM {vm.name} (or a delta disk vSphere "
            "has to consolidate): delete them before snapshotting the volume",
            retryable=False,
        )

    def _remove_live_copy_snapshot(
        self, users: list[tuple[Any, Any]], snapshot_id: str, action: str
    ) -> bool:
        """Remove, from each VM in `users`, the VM snapshot a live copy for `snapshot_id` is made
        under (ESXi folds its delta disk back into the disk); whether there was one.

        Idempotent: a VM snapshot removed meanwhile (by a concurrent attempt) is not an error.
        The VM snapshot of a copy an earlier attempt still makes is removed too: vSphere keeps
        the disk locked while it is copied, so that removal fails with a busy fault (534) and
        the retry comes back after it.
        """
        name = volume_snapshot_vm_snapshot_name(snapshot_id)
        removed = False
        seen: set[str] = set()
        for vm, _ in users:
            if vm._moId in seen:
                continue
            seen.add(vm._moId)
            for tree in [t for t in self._snapshots(vm) if t.name == name]:
                with contextlib.suppress(vmodl.fault.ManagedObjectNotFound):
                    task = tree.snapshot.RemoveSnapshot_Task(removeChildren=False)
                    self._wait_raw(task, action)  # `_call` maps any other fault
                removed = True
        return removed

    def _live_copy(
        self,
        host: HostRef,
        content: Any,
        datacenter: Any,
        vm: Any,
        volume: str,
        path: str,
        snapshot_id: str,
        action: str,
    ) -> None:
        """Copy `volume` while `vm` runs, under a disk-only VM snapshot (see `snapshot_volume`,
        which removes one an interrupted attempt left before it gets here)."""
        name = volume_snapshot_vm_snapshot_name(snapshot_id)
        task = vm.CreateSnapshot_Task(
            name=name, description=VOLUME_SNAPSHOT_MARK, memory=False, quiesce=False
        )
        self._wait(task, action)
        tree = self._snapshot_tree(vm, name)
        if tree is None:
            raise DriverError(f"{action}: VM snapshot {name} of VM {vm.name} vanished")
        try:
            self._copy_disk(host, content, datacenter, volume, path, action)
        finally:
            self._wait(tree.snapshot.RemoveSnapshot_Task(removeChildren=False), action)

    def backup_volume_snapshot(
        self,
        host: HostRef,
        pool: StoragePoolRef,
        volume_id: str,
        snapshot_id: str,
        secondary: SecondaryStorageRef,
    ) -> VolumeSnapshotInfo:
        """Copy the primary snapshot to the secondary datastore; the backup already there (even
        once the primary copy is gone) is the answer."""
        action = f"back up snapshot {snapshot_id} to {secondary.name}"

        def call() -> VolumeSnapshotInfo:
            content = self._content(host)
            datacenter = self._datacenter(content, host)
            datastore = self._secondary_datastore(content, host, secondary)
            backup = self._backup_path(datastore, snapshot_id)
            if not self._disk_exists(content, datacenter, backup):
                primary = self._snapshot_path(pool, snapshot_id)
                if not self._disk_exists(content, datacenter, primary):
                    raise DriverError(
                        f"snapshot {snapshot_id} of volume {volume_id} is not on primary storage "
                        f"{pool.name}; nothing to back up",
                        retryable=False,
                    )
                self._copy_disk(host, content, datacenter, primary, backup, action)
            return self._volume_snapshot_info(host, datacenter, backup, snapshot_id, volume_id)

        return self._call(action, call)  # type: ignore[no-any-return]

    def delete_volume_snapshot(
        self, host: HostRef, pool: StoragePoolRef, volume_id: str, snapshot_id: str
    ) -> None:
        """Delete the copy, its scratch copy, and the VM snapshot a live copy for it left (the
        saga's undo of a `snapshot_volume` that failed removing it)."""
        action = f"delete snapshot {snapshot_id} of volume {volume_id} on {pool.name}"

        def call() -> None:
            content = self._content(host)
            datacenter = self._datacenter(content, host)
            volume = self._volume_path(pool, volume_id)
            self._remove_live_copy_snapshot(self._users_of(content, volume), snapshot_id, action)
            path = self._snapshot_path(pool, snapshot_id)
            self._delete_disk(content, datacenter, path, action)
            self._delete_disk(content, datacenter, scratch_path(path), action)

        self._call(action, call)

    def revert_volume_to_snapshot(
        self,
        host: HostRef,
        pool: StoragePoolRef,
        volume_id: str,
        secondary: SecondaryStorageRef,
        snapshot_id: str,
    ) -> VolumeInfo:
        """Copy the backup over the volume's VMDK: the disk keeps its path (so a stopped VM that
        has it plugged in keeps it) and becomes the snapshot again, size included. Refused for a
        disk a running VM uses, or one under a VM's VM snapshots (they would lose their base)."""
        action = f"revert volume {volume_id} to snapshot {snapshot_id}"

        def call() -> VolumeInfo:
            content = self._content(host)
            datacenter = self._datacenter(content, host)
            datastore = self._secondary_datastore(content, host, secondary)
            backup = self._backup_or_fail(content, datacenter, datastore, secondary, snapshot_id)
            path = self._volume_path(pool, volume_id)
            for vm, disk in self._users_of(content, path):
                if vm.runtime.powerState != "poweredOff":
                    raise DriverError(
                        f"volume {volume_id} is in use by running VM {vm.name}; stop it or "
                        "detach the volume before reverting",
                        retryable=False,
                    )
                if disk.backing.fileName != path:
                    raise DriverError(
                        f"volume {volume_id} is under VM snapshots of VM {vm.name}: delete them "
                        "before reverting the volume",
                        retryable=False,
                    )
            # No disk at `path` is a revert interrupted before its rename: the copy finishes it.
            self._copy_disk(host, content, datacenter, backup, path, action, replace=True)
            size = self._disk_size(host, datacenter, path)
            return VolumeInfo(volume_id, path, size, pool.pool_id)

        return self._call(action, call)  # type: ignore[no-any-return]

    def create_volume_from_snapshot(
        self,
        host: HostRef,
        pool: StoragePoolRef,
        spec: VolumeSpec,
        secondary: SecondaryStorageRef,
        snapshot_id: str,
    ) -> VolumeInfo:
        """Copy the backup to the datastore as a new volume, named as `create_volume` names
        volumes, and grown to `spec.size_bytes` where that is larger."""
        action = f"create volume {spec.volume_id} from snapshot {snapshot_id} on {pool.name}"

        def call() -> VolumeInfo:
            content = self._content(host)
            datacenter = self._datacenter(content, host)
            path = self._volume_path(pool, spec.volume_id)
            if not self._disk_exists(content, datacenter, path):
                datastore = self._secondary_datastore(content, host, secondary)
                backup = self._backup_or_fail(
                    content, datacenter, datastore, secondary, snapshot_id
                )
                self._copy_disk(
                    host, content, datacenter, backup, path, action, size_bytes=spec.size_bytes
                )
            size = self._disk_size(host, datacenter, path)
            return VolumeInfo(spec.volume_id, path, size, pool.pool_id)

        return self._call(action, call)  # type: ignore[no-any-return]
