"""Disks (VDIs) in a XenServer pool: finding them by their Stratus tags, and copying them.

XAPI's VDI.copy into an SR (and VDI.snapshot) carry the source's `other_config` over: a copy of
a backup wears the backup's tags. Tags that a copy must not inherit (backups, templates)
therefore name the uuid of the VDI they were given to, and are believed only there (`owned`).
A copy goes into a target made and tagged pending first (`_copy`), so a copy whose answer was
lost is found by the retry; once made, a disk is tagged done in one `set_other_config`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from activities.drivers.hypervisor import DriverError, StoragePoolRef, VolumeInfo
from activities.drivers.xenserver.connection import (
    NULL_REF,
    Record,
    XenServerConnection,
    _PoolSession,
)
from activities.drivers.xenserver.tags import COPY_KEY, OWNER_KEY, TAG_PREFIX, VOLUME_ID_KEY


class XenServerDisks(XenServerConnection):
    """VDIs by their tags, made, copied, retagged and plugged into VMs."""

    def _sr(self, xapi: _PoolSession, pool: StoragePoolRef) -> str:
        refs = xapi.call("SR.get_by_name_label", pool.name)
        if not refs:
            raise DriverError(f"storage repository {pool.name} is not in the XenServer pool")
        return str(refs[0])

    @staticmethod
    def _volume(xapi: _PoolSession, volume_id: str, sr: str | None = None) -> str | None:
        for ref, record in xapi.call("VDI.get_all_records").items():
            if (
                record["other_config"].get(VOLUME_ID_KEY) == volume_id
                and not record["is_a_snapshot"]
                and (sr is None or record["SR"] == sr)
            ):
                return str(ref)
        return None

    @staticmethod
    def _volume_info(
        xapi: _PoolSession, vdi: str, volume_id: str, pool: StoragePoolRef
    ) -> VolumeInfo:
        size = int(xapi.call("VDI.get_virtual_size", vdi))
        return VolumeInfo(volume_id, f"{pool.name}/{volume_id}", size, pool.pool_id)

    @staticmethod
    def _vdis(
        xapi: _PoolSession,
        srs: Collection[str],
        key: str,
        value: str,
        *,
        snapshot: bool | None = None,
        owned: bool = False,
    ) -> list[tuple[str, Record]]:
        """The VDIs in `srs` tagged `key`=`value` (snapshots only, or none, if `snapshot`)."""
        found = []
        for ref, record in xapi.call("VDI.get_all_records").items():
            config = record["other_config"]
            if record["SR"] not in srs or config.get(key) != value:
                continue
            if snapshot is not None and bool(record["is_a_snapshot"]) != snapshot:
                continue
            if owned and config.get(OWNER_KEY) != record["uuid"]:
                continue
            found.append((str(ref), record))
        return found

    @staticmethod
    def _retag(
        xapi: _PoolSession, vdi: str, tags: Mapping[str, str], *, owned: bool = False
    ) -> None:
        """Replace the VDI's Stratus tags by `tags` in one call (other keys are kept), so no
        crash leaves it half tagged; with `owned`, the tags name this VDI's uuid."""
        config = {
            key: value
            for key, value in xapi.call("VDI.get_other_config", vdi).items()
            if not key.startswith(TAG_PREFIX)
        }
        config.update(tags)
        if owned:
            config[OWNER_KEY] = str(xapi.call("VDI.get_uuid", vdi))
        xapi.call("VDI.set_other_config", vdi, config)

    @staticmethod
    def _new_vdi(
        xapi: _PoolSession,
        sr: str,
        name: str,
        description: str,
        size: int,
        tags: Mapping[str, str],
    ) -> str:
        """An empty user disk of `size` bytes in `sr`, wearing `tags` from its first moment."""
        return str(
            xapi.call(
                "VDI.create",
                {
                    "name_label": name,
                    "name_description": description,
                    "SR": sr,
                    "virtual_size": str(size),
                    "type": "user",
                    "sharable": False,
                    "read_only": False,
                    "other_config": dict(tags),
                    "xenstore_data": {},
                    "sm_config": {},
                    "tags": [],
                },
            )
        )

    def _copy(
        self,
        xapi: _PoolSession,
        action: str,
        source: str,
        sr: str,
        copy_for: str,
        name: str,
        description: str,
        size: int = 0,
    ) -> str:
        """A full copy of `source` in `sr`, at least `size` bytes big; the caller tags it done.

        XAPI's VDI.copy into an SR makes its target first and hands it back only at the end, so
        an answer lost meanwhile would leave a full-size copy nobody knows. The target is
        therefore made here (VDI.create), tagged `copy_for`, and copied into (`into_vdi`): the
        retry finds it and copies into it again, a delete undoing the job finds it too. A
        pending copy of the wrong size (the retry restores another snapshot) is replaced.
        """
        size = max(size, int(xapi.call("VDI.get_virtual_size", source)))
        target = None
        for ref, record in self._vdis(xapi, {sr}, COPY_KEY, copy_for, snapshot=False):
            if target is None and int(record["virtual_size"]) == size:
                target = ref
            else:
                self._task(xapi, action, "VDI.destroy", ref)
        if target is None:
            target = self._new_vdi(xapi, sr, name, description, size, {COPY_KEY: copy_for})
        self._task(xapi, action, "VDI.copy", source, sr, NULL_REF, target)
        return target

    @staticmethod
    def _create_vbd(xapi: _PoolSession, vm: str, vdi: str, device: int) -> str:
        return str(
            xapi.call(
                "VBD.create",
                {
                    "VM": vm,
                    "VDI": vdi,
                    "userdevice": str(device),
                    "bootable": device == 0,
                    "mode": "RW",
                    "type": "Disk",
                    "unpluggable": device != 0,
                    "empty": False,
                    "other_config": {},
                    "qos_algorithm_type": "",
                    "qos_algorithm_params": {},
                },
            )
        )
