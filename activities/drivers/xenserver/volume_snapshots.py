"""Volume snapshots in a XenServer pool and their backups on the secondary storage SR.

As CloudStack does on XenServer: `VDI.snapshot` on the primary SR, the backup a `VDI.copy` of
the snapshot into the SR standing for the zone's secondary storage. VDI.snapshot takes no tags
and the snapshot inherits the disk's `other_config`, so the disk is marked with the snapshot id
first: a snapshot whose answer was lost wears the mark and is found by the retry, or by the
delete that undoes the job. Snapshots carry `stratus_snapshot_id`, backups `stratus_backup_of`.
"""

from __future__ import annotations

from activities.drivers.hypervisor import (
    DriverError,
    HostRef,
    SecondaryStorageRef,
    StoragePoolRef,
    VolumeSnapshotInfo,
)
from activities.drivers.xenserver.connection import Record, _PoolSession
from activities.drivers.xenserver.secondary_storage import XenServerSecondaryStorage
from activities.drivers.xenserver.tags import (
    BACKUP_KEY,
    BACKUP_PREFIX,
    COPY_KEY,
    SNAPSHOT_ID_KEY,
    SNAPSHOT_PENDING_KEY,
    SNAPSHOT_VOLUME_KEY,
    VOLUME_SNAPSHOT_PREFIX,
    copy_for,
)


class XenServerVolumeSnapshots(XenServerSecondaryStorage):
    """Snapshotting a volume, backing the snapshot up, and deleting either."""

    def _backup(
        self, xapi: _PoolSession, secondary: SecondaryStorageRef, snapshot_id: str
    ) -> tuple[str, Record] | None:
        found = self._vdis(
            xapi, self._store_srs(xapi, secondary), BACKUP_KEY, snapshot_id, owned=True
        )
        return found[0] if found else None

    def _backup_or_fail(
        self, xapi: _PoolSession, secondary: SecondaryStorageRef, snapshot_id: str
    ) -> tuple[str, Record]:
        backup = self._backup(xapi, secondary, snapshot_id)
        if backup is None:
            raise DriverError(
                f"snapshot {snapshot_id} has no backup on secondary storage {secondary.name}"
            )
        return backup

    def _backup_info(
        self,
        xapi: _PoolSession,
        secondary: SecondaryStorageRef,
        backup: tuple[str, Record],
        snapshot_id: str,
        volume_id: str,
    ) -> VolumeSnapshotInfo:
        _, record = backup
        location = self._image_location(xapi, record["SR"], record)
        return VolumeSnapshotInfo(
            snapshot_id,
            record["other_config"].get(SNAPSHOT_VOLUME_KEY, volume_id),
            f"{secondary.path.rstrip('/')}/{location}",
            int(record["virtual_size"]),
        )

    def snapshot_volume(
        self, host: HostRef, pool: StoragePoolRef, volume_id: str, snapshot_id: str
    ) -> VolumeSnapshotInfo:
        """XAPI snapshots a disk in use too. VDI.snapshot takes no tags, and the snapshot it
        makes inherits the disk's `other_config`: the disk is marked with the snapshot id first,
        so a snapshot whose answer was lost wears it and the retry (or the delete undoing the
        job) finds it; the snapshot is then retagged in one call and the mark taken off the
        disk."""
        action = f"snapshot volume {volume_id} as {snapshot_id}"

        def work(xapi: _PoolSession) -> VolumeSnapshotInfo:
            sr = self._sr(xapi, pool)
            vdi = self._volume(xapi, volume_id, sr)
            found = self._vdis(xapi, {sr}, SNAPSHOT_ID_KEY, snapshot_id, snapshot=True)
            if found:
                ref, record = found[0]
            else:
                if vdi is None:
                    raise DriverError(f"volume {volume_id} is not in SR {pool.name}")
                pending = self._pending_snapshots(xapi, sr, snapshot_id, of=vdi)
                if pending:
                    ref = pending[0]
                else:
                    self._mark_snapshot(xapi, vdi, snapshot_id)
                    ref = str(self._task(xapi, action, "VDI.snapshot", vdi, {}))
                tags = {SNAPSHOT_ID_KEY: snapshot_id, SNAPSHOT_VOLUME_KEY: volume_id}
                self._retag(xapi, ref, tags)
                xapi.call("VDI.set_name_label", ref, VOLUME_SNAPSHOT_PREFIX + snapshot_id)
                xapi.call(
                    "VDI.set_name_description",
                    ref,
                    f"Stratus snapshot {snapshot_id} of volume {volume_id}",
                )
                record = xapi.call("VDI.get_record", ref)
            if vdi is not None:
                self._unmark_snapshot(xapi, vdi, snapshot_id)
            return VolumeSnapshotInfo(
                snapshot_id,
                record["other_config"].get(SNAPSHOT_VOLUME_KEY, volume_id),
                f"{pool.name}/{record['uuid']}",
                int(record["virtual_size"]),
            )

        return self._call(host, action, work)

    @staticmethod
    def _mark_snapshot(xapi: _PoolSession, vdi: str, snapshot_id: str) -> None:
        """Mark the disk as being snapshotted for `snapshot_id` (the key's own map calls, so no
        other key of the disk is written over)."""
        if xapi.call("VDI.get_other_config", vdi).get(SNAPSHOT_PENDING_KEY) == snapshot_id:
            return
        xapi.call("VDI.remove_from_other_config", vdi, SNAPSHOT_PENDING_KEY)
        xapi.call("VDI.add_to_other_config", vdi, SNAPSHOT_PENDING_KEY, snapshot_id)

    @staticmethod
    def _unmark_snapshot(xapi: _PoolSession, vdi: str, snapshot_id: str) -> None:
        """Take the disk's mark off if it is this snapshot's (a later one may have its own)."""
        if xapi.call("VDI.get_other_config", vdi).get(SNAPSHOT_PENDING_KEY) == snapshot_id:
            xapi.call("VDI.remove_from_other_config", vdi, SNAPSHOT_PENDING_KEY)

    @staticmethod
    def _pending_snapshots(
        xapi: _PoolSession, sr: str, snapshot_id: str, *, of: str | None = None
    ) -> list[str]:
        """Snapshots XAPI took for `snapshot_id` (of the disk `of`) that were never retagged.

        A VM snapshot taken while the mark was on the disk wears it too; its disks are plugged
        into the snapshot VM, which a VDI.snapshot never is, so they are left alone.
        """
        return [
            str(ref)
            for ref, record in xapi.call("VDI.get_all_records").items()
            if record["SR"] == sr
            and record["is_a_snapshot"]
            and record["other_config"].get(SNAPSHOT_PENDING_KEY) == snapshot_id
            and SNAPSHOT_ID_KEY not in record["other_config"]
            and not record["VBDs"]
            and (of is None or record["snapshot_of"] == of)
        ]

    def backup_volume_snapshot(
        self,
        host: HostRef,
        pool: StoragePoolRef,
        volume_id: str,
        snapshot_id: str,
        secondary: SecondaryStorageRef,
    ) -> VolumeSnapshotInfo:
        action = f"back up snapshot {snapshot_id} of volume {volume_id} to {secondary.name}"

        def work(xapi: _PoolSession) -> VolumeSnapshotInfo:
            backup = self._backup(xapi, secondary, snapshot_id)
            if backup is None:
                sr = self._sr(xapi, pool)
                found = [
                    ref
                    for ref, record in self._vdis(
                        xapi, {sr}, SNAPSHOT_ID_KEY, snapshot_id, snapshot=True
                    )
                    if record["other_config"].get(SNAPSHOT_VOLUME_KEY) == volume_id
                ]
                if not found:
                    raise DriverError(
                        f"snapshot {snapshot_id} of volume {volume_id} is not on primary "
                        f"storage {pool.name}; nothing to back up"
                    )
                target = self._secondary_sr(xapi, action, host, secondary)
                ref = self._copy(
                    xapi,
                    action,
                    found[0],
                    target,
                    copy_for("backup", snapshot_id),
                    BACKUP_PREFIX + snapshot_id,
                    f"Stratus backup of snapshot {snapshot_id} of volume {volume_id}",
                )
                self._retag(
                    xapi, ref, {BACKUP_KEY: snapshot_id, SNAPSHOT_VOLUME_KEY: volume_id}, owned=True
                )
                backup = (ref, xapi.call("VDI.get_record", ref))
            return self._backup_info(xapi, secondary, backup, snapshot_id, volume_id)

        return self._call(host, action, work)

    def delete_volume_snapshot(
        self, host: HostRef, pool: StoragePoolRef, volume_id: str, snapshot_id: str
    ) -> None:
        action = f"delete snapshot {snapshot_id} of volume {volume_id} in SR {pool.name}"

        def work(xapi: _PoolSession) -> None:
            sr = self._sr(xapi, pool)
            doomed = [
                ref
                for ref, _ in self._vdis(xapi, {sr}, SNAPSHOT_ID_KEY, snapshot_id, snapshot=True)
            ]
            # A snapshot whose answer was lost, never tagged, and the disk's mark for it.
            doomed += self._pending_snapshots(xapi, sr, snapshot_id)
            for ref in doomed:
                self._task(xapi, action, "VDI.destroy", ref)
            vdi = self._volume(xapi, volume_id, sr)
            if vdi is not None:
                self._unmark_snapshot(xapi, vdi, snapshot_id)

        self._call(host, action, work)

    def delete_snapshot_backup(
        self, host: HostRef, secondary: SecondaryStorageRef, snapshot_id: str
    ) -> None:
        action = f"delete backup of snapshot {snapshot_id} on {secondary.name}"

        def work(xapi: _PoolSession) -> None:
            srs = self._plugged_store_srs(xapi, action, host, secondary)
            # The backup, a backup copy whose answer was lost, and what an earlier version of
            # this driver could leave there: copies that still wear the tags of the backup or
            # of the primary snapshot (never a backup or a template themselves).
            doomed = self._vdis(xapi, srs, BACKUP_KEY, snapshot_id)
            doomed += self._vdis(xapi, srs, COPY_KEY, copy_for("backup", snapshot_id))
            doomed += self._vdis(xapi, srs, SNAPSHOT_ID_KEY, snapshot_id, snapshot=False)
            for ref, _ in doomed:
                self._task(xapi, action, "VDI.destroy", ref)

        self._call(host, action, work)
