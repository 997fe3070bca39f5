"""What is made from a snapshot's backup in a XenServer pool: the volume reverted to it, a new
volume, a template.

Each is a `VDI.copy` of the backup into a VDI made and tagged pending first, so a copy whose
answer was lost is found by the retry (or by the delete undoing the job), never left behind.
Templates carry `stratus_template_id`.
"""

from __future__ import annotations

import json

from activities.drivers.hypervisor import (
    DriverError,
    HostRef,
    SecondaryStorageRef,
    StoragePoolRef,
    TemplateRef,
    VolumeInfo,
    VolumeSpec,
)
from activities.drivers.xenserver.connection import Record, _PoolSession
from activities.drivers.xenserver.tags import (
    COPY_KEY,
    REPLACED_KEY,
    REVERT_KEY,
    REVERT_PLUGS_KEY,
    REVERT_SNAPSHOT_KEY,
    TEMPLATE_KEY,
    TEMPLATE_PREFIX,
    VM_ID_KEY,
    VOLUME_ID_KEY,
    copy_for,
)
from activities.drivers.xenserver.volume_snapshots import XenServerVolumeSnapshots


class XenServerRestores(XenServerVolumeSnapshots):
    """Reverting a volume to a backup, and making volumes and templates from one."""

    def revert_volume_to_snapshot(
        self,
        host: HostRef,
        pool: StoragePoolRef,
        volume_id: str,
        secondary: SecondaryStorageRef,
        snapshot_id: str,
    ) -> VolumeInfo:
        """A fresh copy of the backup takes the disk's place, its size included (XAPI cannot
        shrink a VDI that grew since, so VDI.copy into_vdi would keep the grown size).

        The copy is made as every copy is (`_copy`, found again if its answer is lost), then
        tagged as pending for the volume, with the plugs (VM, device) to move onto it; then the
        plugs move, the old disk is marked replaced, the copy takes the volume's tag and the old
        disk is destroyed. Each step is one XAPI call that checks first, so a retry after a
        crash anywhere finishes the swap it finds before doing anything else.
        """
        action = f"revert volume {volume_id} to snapshot {snapshot_id}"

        def work(xapi: _PoolSession) -> VolumeInfo:
            backup, backup_record = self._backup_or_fail(xapi, secondary, snapshot_id)
            sr = self._sr(xapi, pool)
            current = self._volume(xapi, volume_id, sr)
            replaced = [
                ref for ref, _ in self._vdis(xapi, {sr}, REPLACED_KEY, volume_id, snapshot=False)
            ]
            for fresh, record in self._vdis(xapi, {sr}, REVERT_KEY, volume_id, snapshot=False):
                previous = current or (replaced[0] if replaced else None)
                self._swap(xapi, action, volume_id, fresh, record, previous)
                current, replaced = fresh, []
                if record["other_config"].get(REVERT_SNAPSHOT_KEY) == snapshot_id:
                    return self._volume_info(xapi, fresh, volume_id, pool)
            for ref in replaced:
                self._task(xapi, action, "VDI.destroy", ref)
            if current is None:
                raise DriverError(f"volume {volume_id} is not in SR {pool.name}")
            plugs = self._plugs_of_stopped_vms(xapi, volume_id, current)
            self._plug_store_sr(xapi, action, host, backup_record["SR"], secondary)
            fresh = self._copy(
                xapi,
                action,
                backup,
                sr,
                copy_for("revert", volume_id),
                xapi.call("VDI.get_name_label", current),
                f"Stratus volume {volume_id} reverted to snapshot {snapshot_id}",
            )
            self._retag(
                xapi,
                fresh,
                {
                    REVERT_KEY: volume_id,
                    REVERT_SNAPSHOT_KEY: snapshot_id,
                    REVERT_PLUGS_KEY: json.dumps(plugs),
                },
            )
            record = xapi.call("VDI.get_record", fresh)
            self._swap(xapi, action, volume_id, fresh, record, current)
            return self._volume_info(xapi, fresh, volume_id, pool)

        return self._call(host, action, work)

    @staticmethod
    def _plugs_of_stopped_vms(xapi: _PoolSession, volume_id: str, vdi: str) -> list[list[str]]:
        """(VM ref, device) of each VBD of the disk; refused if a VM using it is not halted."""
        plugs = []
        for vbd in xapi.call("VDI.get_VBDs", vdi):
            record = xapi.call("VBD.get_record", vbd)
            state = xapi.call("VM.get_power_state", record["VM"])
            if record["currently_attached"] or state != "Halted":
                vm_id = xapi.call("VM.get_other_config", record["VM"]).get(VM_ID_KEY)
                raise DriverError(
                    f"volume {volume_id} is in use by VM {vm_id or record['VM']} ({state}); "
                    "stop it or detach the volume before reverting"
                )
            plugs.append([str(record["VM"]), str(record["userdevice"])])
        return plugs

    def _swap(
        self,
        xapi: _PoolSession,
        action: str,
        volume_id: str,
        fresh: str,
        record: Record,
        previous: str | None,
    ) -> None:
        """Put the pending copy `fresh` in the place of the disk `previous` (see the revert)."""
        plugs = json.loads(record["other_config"].get(REVERT_PLUGS_KEY, "[]"))
        for vm, device in plugs:
            if vm not in xapi.call("VM.get_all"):
                continue  # the VM went away meanwhile: nothing to plug
            vdi_at_device = None
            for vbd in xapi.call("VM.get_VBDs", vm):
                vbd_record = xapi.call("VBD.get_record", vbd)
                if vbd_record["userdevice"] == device and vbd_record["type"] == "Disk":
                    vdi_at_device = vbd_record["VDI"]
                    if vdi_at_device == previous:
                        xapi.call("VBD.destroy", vbd)
                        vdi_at_device = None
                    break
            if vdi_at_device is None:
                self._create_vbd(xapi, vm, fresh, int(device))
        if previous is not None:
            name = xapi.call("VDI.get_name_label", previous)
            description = xapi.call("VDI.get_name_description", previous)
            self._retag(xapi, previous, {REPLACED_KEY: volume_id})
            xapi.call("VDI.set_name_label", fresh, name)
            xapi.call("VDI.set_name_description", fresh, description)
        self._retag(xapi, fresh, {VOLUME_ID_KEY: volume_id})
        if previous is not None:
            self._task(xapi, action, "VDI.destroy", previous)

    def create_volume_from_snapshot(
        self,
        host: HostRef,
        pool: StoragePoolRef,
        spec: VolumeSpec,
        secondary: SecondaryStorageRef,
        snapshot_id: str,
    ) -> VolumeInfo:
        action = f"create volume {spec.volume_id} from snapshot {snapshot_id} in SR {pool.name}"

        def work(xapi: _PoolSession) -> VolumeInfo:
            sr = self._sr(xapi, pool)
            vdi = self._volume(xapi, spec.volume_id, sr)
            if vdi is None:
                backup, backup_record = self._backup_or_fail(xapi, secondary, snapshot_id)
                self._plug_store_sr(xapi, action, host, backup_record["SR"], secondary)
                vdi = self._copy(
                    xapi,
                    action,
                    backup,
                    sr,
                    copy_for("volume", spec.volume_id),
                    spec.name,
                    f"Stratus volume {spec.volume_id}",
                    spec.size_bytes,
                )
                # Tagged as create_volume tags a volume, in one call.
                self._retag(xapi, vdi, {VOLUME_ID_KEY: spec.volume_id})
            if int(xapi.call("VDI.get_virtual_size", vdi)) < spec.size_bytes:
                self._task(xapi, action, "VDI.resize", vdi, str(spec.size_bytes))
            return self._volume_info(xapi, vdi, spec.volume_id, pool)

        return self._call(host, action, work)

    def create_template_from_snapshot(
        self,
        host: HostRef,
        secondary: SecondaryStorageRef,
        snapshot_id: str,
        template_id: str,
    ) -> TemplateRef:
        action = f"create template {template_id} from snapshot {snapshot_id}"

        def work(xapi: _PoolSession) -> TemplateRef:
            srs = self._store_srs(xapi, secondary)
            found = self._vdis(xapi, srs, TEMPLATE_KEY, template_id, owned=True)
            if found:
                ref, record = found[0]
            else:
                backup, backup_record = self._backup_or_fail(xapi, secondary, snapshot_id)
                target = self._secondary_sr(xapi, action, host, secondary)
                if backup_record["SR"] != target:
                    self._plug_store_sr(xapi, action, host, backup_record["SR"], secondary)
                ref = self._copy(
                    xapi,
                    action,
                    backup,
                    target,
                    copy_for("template", template_id),
                    TEMPLATE_PREFIX + template_id,
                    f"Stratus template {template_id} from snapshot {snapshot_id}",
                )
                self._retag(xapi, ref, {TEMPLATE_KEY: template_id}, owned=True)
                record = xapi.call("VDI.get_record", ref)
            location = self._image_location(xapi, record["SR"], record)
            return TemplateRef(
                template_id=template_id,
                name=f"from-snapshot-{snapshot_id}",
                url=f"{secondary.url.rstrip('/')}/{location}",
                format="VHD",
                size_bytes=int(record["virtual_size"]),
            )

        return self._call(host, action, work)

    def delete_template(
        self, host: HostRef, secondary: SecondaryStorageRef, template_id: str
    ) -> None:
        action = f"delete template {template_id} on {secondary.name}"

        def work(xapi: _PoolSession) -> None:
            srs = self._plugged_store_srs(xapi, action, host, secondary)
            # The template, and a template copy whose answer was lost.
            doomed = self._vdis(xapi, srs, TEMPLATE_KEY, template_id, owned=True)
            doomed += self._vdis(xapi, srs, COPY_KEY, copy_for("template", template_id))
            for ref, _ in doomed:
                self._task(xapi, action, "VDI.destroy", ref)

        self._call(host, action, work)
