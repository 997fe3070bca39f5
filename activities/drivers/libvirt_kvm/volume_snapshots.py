"""Volume snapshots on KVM, their backups on secondary storage, and templates made from them.

A primary snapshot is a standalone qcow2 clone of the disk in its own pool
(`snapshot-<id>.qcow2`, the template's backing chain flattened into it). Its backup is a clone
into a directory pool on secondary storage (`<secondary>/snapshots`), templates go to
`<secondary>/templates`: the layout CloudStack's KVM agent keeps on its NFS store. A disk a
running guest holds is copied by QEMU itself (a push-mode backup job) while the guest runs on.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from xml.etree import ElementTree

import libvirt

from activities.drivers.hypervisor import (
    DriverError,
    HostRef,
    SecondaryStorageRef,
    StoragePoolRef,
    TemplateRef,
    UnsupportedOperationError,
    VolumeInfo,
    VolumeSnapshotInfo,
    VolumeSpec,
)
from activities.drivers.libvirt_kvm.domain_xml import disks, escape
from activities.drivers.libvirt_kvm.volumes import (
    LibvirtVolumes,
    define_directory_pool,
    lookup_named,
    refreshed,
    volume_name,
)


def _snapshot_name(snapshot_id: str) -> str:
    return f"snapshot-{snapshot_id}.qcow2"


def _template_name(template_id: str) -> str:
    return f"template-{template_id}.qcow2"


def _clone(
    storage: libvirt.virStoragePool,
    name: str,
    source: libvirt.virStorageVol,
    capacity: int | None = None,
) -> libvirt.virStorageVol:
    """A standalone qcow2 copy of `source` named `name` in `storage`, at least `capacity`."""
    size = max(capacity or 0, source.info()[1])
    xml = (
        f"<volume><name>{escape(name)}</name><capacity unit='bytes'>{size}</capacity>"
        f"<target><format type='qcow2'/></target></volume>"
    )
    try:
        volume = storage.createXMLFrom(xml, source, 0)
    except libvirt.libvirtError as error:
        # A half-written copy (the copy failed midway) must not be
        # mistaken for a finished one by the retry.
        leftover = lookup_named(storage, name)
        if leftover is not None:
            with contextlib.suppress(libvirt.libvirtError):
                leftover.delete(0)
        if (
            error.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL
            and source.storagePoolLookupByVolume().name() != storage.name()
        ):
            # We hold the source: "not found" means this storage driver looks for it in
            # the target pool only (libvirt's test driver does), i.e. no cross-pool copy.
            raise UnsupportedOperationError(
                f"this libvirt storage driver cannot copy volume {source.name()} into pool "
                f"{storage.name()}: it clones volumes only within one pool"
            ) from error
        raise
    if volume.info()[1] < size:
        volume.resize(size, 0)
    return volume


def _volume_snapshot_info(
    volume: libvirt.virStorageVol, snapshot_id: str, volume_id: str
) -> VolumeSnapshotInfo:
    _, capacity, _ = volume.info()
    return VolumeSnapshotInfo(snapshot_id, volume_id, volume.path(), capacity)


def _wait_for_job(domain: libvirt.virDomain) -> None:
    while domain.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE:
        time.sleep(0.1)


def _live_copy(
    storage: libvirt.virStoragePool,
    domain: libvirt.virDomain,
    target: str,
    name: str,
) -> libvirt.virStorageVol:
    """A point-in-time copy of a running guest's disk `target` as volume `name`."""
    _wait_for_job(domain)  # a retry may find its first attempt's job still running
    storage.refresh(0)
    existing = lookup_named(storage, name)
    if existing is not None:
        return existing
    path = Path(ElementTree.fromstring(storage.XMLDesc(0)).findtext("./target/path") or "")
    plan = "".join(
        f"<disk name='{escape(disk.target)}' backup='no'/>"
        if disk.target != target
        else (
            f"<disk name='{escape(target)}' backup='yes' type='file'>"
            f"<target file='{escape(str(path / name))}'/><driver type='qcow2'/></disk>"
        )
        for disk in disks(domain.XMLDesc(0))
    )
    domain.backupBegin(f"<domainbackup mode='push'><disks>{plan}</disks></domainbackup>", None)
    _wait_for_job(domain)
    stats = domain.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    storage.refresh(0)
    copy = lookup_named(storage, name)
    if stats.get("type") != libvirt.VIR_DOMAIN_JOB_COMPLETED or copy is None:
        if copy is not None:
            with contextlib.suppress(libvirt.libvirtError):
                copy.delete(0)
        raise DriverError(
            f"copying disk {target} of running VM {domain.name()} failed: "
            f"{stats.get('errmsg', 'the backup job did not complete')}",
            retryable=True,
        )
    return copy


class LibvirtVolumeSnapshots(LibvirtVolumes):
    """Volume snapshots on primary storage, their backups, and what is made from a backup."""

    def _secondary_pool(
        self, conn: libvirt.virConnect, secondary: SecondaryStorageRef, folder: str
    ) -> libvirt.virStoragePool:
        """The directory pool for `<secondary.path>/<folder>`, defined on first use.

        Found by its target path first: libvirt refuses a second pool on one directory.
        """
        path = str(Path(secondary.path) / folder)
        storage = None
        for candidate in conn.listAllStoragePools(0):
            target = ElementTree.fromstring(candidate.XMLDesc(0)).findtext("./target/path")
            if target is not None and target.rstrip("/") == path.rstrip("/"):
                storage = candidate
                break
        if storage is None:
            name = f"stratus-{folder}-{secondary.store_id}"
            storage = define_directory_pool(conn, name, path)
        return refreshed(storage)

    def snapshot_volume(
        self, host: HostRef, pool: StoragePoolRef, volume_id: str, snapshot_id: str
    ) -> VolumeSnapshotInfo:
        def call() -> VolumeSnapshotInfo:
            conn = self._connection(host)
            storage = self._pool(conn, pool)
            existing = lookup_named(storage, _snapshot_name(snapshot_id))
            if existing is not None:
                return _volume_snapshot_info(existing, snapshot_id, volume_id)
            volume = self._lookup_volume(storage, volume_id)
            if volume is None:
                raise DriverError(f"volume {volume_id} is not in pool {pool.name}")
            name = _snapshot_name(snapshot_id)
            user = self._running_user_of(conn, volume.path())
            if user is None:
                clone = _clone(storage, name, volume)
            else:
                # QEMU holds the image (and its write lock): have QEMU itself copy the disk
                # as it is now, with a push-mode backup job, while the guest runs on.
                clone = _live_copy(storage, user[0], user[1], name)
            return _volume_snapshot_info(clone, snapshot_id, volume_id)

        return self._run(f"snapshot volume {volume_id} as {snapshot_id}", call)

    def backup_volume_snapshot(
        self,
        host: HostRef,
        pool: StoragePoolRef,
        volume_id: str,
        snapshot_id: str,
        secondary: SecondaryStorageRef,
    ) -> VolumeSnapshotInfo:
        def call() -> VolumeSnapshotInfo:
            conn = self._connection(host)
            backups = self._secondary_pool(conn, secondary, "snapshots")
            name = _snapshot_name(snapshot_id)
            existing = lookup_named(backups, name)
            if existing is not None:
                return _volume_snapshot_info(existing, snapshot_id, volume_id)
            snapshot = lookup_named(self._pool(conn, pool), name)
            if snapshot is None:
                raise DriverError(
                    f"snapshot {snapshot_id} of volume {volume_id} is not on primary storage "
                    f"{pool.name}; nothing to back up"
                )
            backup = _clone(backups, name, snapshot)
            return _volume_snapshot_info(backup, snapshot_id, volume_id)

        return self._run(f"back up snapshot {snapshot_id} to {secondary.name}", call)

    def delete_volume_snapshot(
        self, host: HostRef, pool: StoragePoolRef, volume_id: str, snapshot_id: str
    ) -> None:
        def call() -> None:
            storage = self._pool(self._connection(host), pool)
            snapshot = lookup_named(storage, _snapshot_name(snapshot_id))
            if snapshot is not None:
                snapshot.delete(0)

        self._run(f"delete snapshot {snapshot_id} of volume {volume_id} in {pool.name}", call)

    def delete_snapshot_backup(
        self, host: HostRef, secondary: SecondaryStorageRef, snapshot_id: str
    ) -> None:
        def call() -> None:
            backups = self._secondary_pool(self._connection(host), secondary, "snapshots")
            backup = lookup_named(backups, _snapshot_name(snapshot_id))
            if backup is not None:
                backup.delete(0)

        self._run(f"delete backup of snapshot {snapshot_id} on {secondary.name}", call)

    def _backup(
        self, conn: libvirt.virConnect, secondary: SecondaryStorageRef, snapshot_id: str
    ) -> libvirt.virStorageVol:
        backups = self._secondary_pool(conn, secondary, "snapshots")
        backup = lookup_named(backups, _snapshot_name(snapshot_id))
        if backup is None:
            raise DriverError(
                f"snapshot {snapshot_id} has no backup on secondary storage {secondary.name}"
            )
        return backup

    def revert_volume_to_snapshot(
        self,
        host: HostRef,
        pool: StoragePoolRef,
        volume_id: str,
        secondary: SecondaryStorageRef,
        snapshot_id: str,
    ) -> VolumeInfo:
        def call() -> VolumeInfo:
            conn = self._connection(host)
            backup = self._backup(conn, secondary, snapshot_id)
            storage = self._pool(conn, pool)
            volume = self._lookup_volume(storage, volume_id)
            if volume is not None:
                user = self._running_user_of(conn, volume.path())
                if user is not None:
                    raise DriverError(
                        f"volume {volume_id} is in use by running VM {user[0].name()}; stop it "
                        "or detach the volume before reverting"
                    )
                volume.delete(0)
            # No volume here is a revert interrupted between the delete and the copy: finish it.
            # The disk becomes the snapshot again, its size included.
            reverted = _clone(storage, volume_name(volume_id), backup)
            return self._volume_info(reverted, volume_id, pool)

        return self._run(f"revert volume {volume_id} to snapshot {snapshot_id}", call)

    def create_volume_from_snapshot(
        self,
        host: HostRef,
        pool: StoragePoolRef,
        spec: VolumeSpec,
        secondary: SecondaryStorageRef,
        snapshot_id: str,
    ) -> VolumeInfo:
        def call() -> VolumeInfo:
            conn = self._connection(host)
            storage = self._pool(conn, pool)
            existing = self._lookup_volume(storage, spec.volume_id)
            if existing is not None:
                return self._volume_info(existing, spec.volume_id, pool)
            backup = self._backup(conn, secondary, snapshot_id)
            name = volume_name(spec.volume_id)
            volume = _clone(storage, name, backup, spec.size_bytes)
            return self._volume_info(volume, spec.volume_id, pool)

        return self._run(
            f"create volume {spec.volume_id} from snapshot {snapshot_id} in {pool.name}", call
        )

    def create_template_from_snapshot(
        self,
        host: HostRef,
        secondary: SecondaryStorageRef,
        snapshot_id: str,
        template_id: str,
    ) -> TemplateRef:
        def call() -> TemplateRef:
            conn = self._connection(host)
            templates = self._secondary_pool(conn, secondary, "templates")
            name = _template_name(template_id)
            image = lookup_named(templates, name)
            if image is None:
                image = _clone(templates, name, self._backup(conn, secondary, snapshot_id))
            return TemplateRef(
                template_id=template_id,
                name=f"from-snapshot-{snapshot_id}",
                url=Path(image.path()).as_uri(),
                format="QCOW2",
                size_bytes=image.info()[1],
            )

        return self._run(f"create template {template_id} from snapshot {snapshot_id}", call)

    def delete_template(
        self, host: HostRef, secondary: SecondaryStorageRef, template_id: str
    ) -> None:
        def call() -> None:
            conn = self._connection(host)
            templates = self._secondary_pool(conn, secondary, "templates")
            image = lookup_named(templates, _template_name(template_id))
            if image is not None:
                image.delete(0)

        self._run(f"delete template {template_id}", call)
