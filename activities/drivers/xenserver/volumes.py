"""Volumes in a XenServer pool: VDIs tagged with their Stratus id, plugged into VMs as VBDs.

A volume from a template is a copy of the template's system disk, or of the image a template
made from a snapshot keeps on the secondary storage SR. A data disk is plugged live into a
running VM, and unplugged before its VBD goes.
"""

from __future__ import annotations

from activities.drivers.conventions import RefusesVolumeCopies, shrink_refused
from activities.drivers.hypervisor import (
    DriverError,
    HostRef,
    StoragePoolRef,
    TemplateRef,
    VolumeAttachment,
    VolumeInfo,
    VolumeSpec,
)
from activities.drivers.xenserver.connection import NULL_REF, Record, _PoolSession
from activities.drivers.xenserver.secondary_storage import XenServerSecondaryStorage
from activities.drivers.xenserver.tags import (
    COPY_KEY,
    OWNER_KEY,
    TEMPLATE_KEY,
    VOLUME_ID_KEY,
    copy_for,
)


class XenServerVolumes(RefusesVolumeCopies, XenServerSecondaryStorage):
    """Creating, growing and deleting volumes, and plugging them into VMs."""

    volume_copy_refusal = (
        "copying a disk between storage repositories is not implemented for XenServer yet "
        "(it needs VDI.copy through the pool master)"
    )

    @staticmethod
    def _template_image(xapi: _PoolSession, template: TemplateRef) -> tuple[str, Record] | None:
        """The template image made from a snapshot (a VDI on a secondary storage SR, found by
        its template id), if the template is one."""
        for ref, record in xapi.call("VDI.get_all_records").items():
            config = record["other_config"]
            if (
                config.get(TEMPLATE_KEY) == template.template_id
                and config.get(OWNER_KEY) == record["uuid"]
            ):
                return str(ref), record
        return None

    @staticmethod
    def _template_disk(xapi: _PoolSession, template: TemplateRef) -> str:
        """The system disk of the XAPI template VM named as the template."""
        name = template.name
        for ref in xapi.call("VM.get_by_name_label", name):
            if not xapi.call("VM.get_is_a_template", ref):
                continue
            for vbd in xapi.call("VM.get_VBDs", ref):
                record = xapi.call("VBD.get_record", vbd)
                if record["type"] == "Disk" and record["userdevice"] == "0":
                    return str(record["VDI"])
        raise DriverError(f"template {name} (with a disk) is not in the XenServer pool")

    def create_volume(self, host: HostRef, pool: StoragePoolRef, spec: VolumeSpec) -> VolumeInfo:
        action = f"create volume {spec.volume_id} in SR {pool.name}"

        def work(xapi: _PoolSession) -> VolumeInfo:
            sr = self._sr(xapi, pool)
            vdi = self._volume(xapi, spec.volume_id, sr)
            if vdi is not None:
                return self._volume_info(xapi, vdi, spec.volume_id, pool)
            if spec.template is None:
                vdi = self._new_vdi(
                    xapi,
                    sr,
                    spec.name,
                    f"Stratus volume {spec.volume_id}",
                    spec.size_bytes,
                    {VOLUME_ID_KEY: spec.volume_id},
                )
            else:
                image = self._template_image(xapi, spec.template)
                if image is None:
                    source = self._template_disk(xapi, spec.template)
                else:
                    # On a secondary storage SR, which may have been unplugged since.
                    source = image[0]
                    self._plug_store_sr(xapi, action, host, image[1]["SR"])
                vdi = self._copy(
                    xapi,
                    action,
                    source,
                    sr,
                    copy_for("volume", spec.volume_id),
                    spec.name,
                    f"Stratus volume {spec.volume_id}",
                    spec.size_bytes,
                )
                self._retag(xapi, vdi, {VOLUME_ID_KEY: spec.volume_id})
            return self._volume_info(xapi, vdi, spec.volume_id, pool)

        return self._call(host, action, work)

    def delete_volume(self, host: HostRef, pool: StoragePoolRef, volume_id: str) -> None:
        action = f"delete volume {volume_id} in SR {pool.name}"

        def work(xapi: _PoolSession) -> None:
            sr = self._sr(xapi, pool)
            vdi = self._volume(xapi, volume_id, sr)
            if vdi is not None:
                self._task(xapi, action, "VDI.destroy", vdi)
            # What a create or a revert whose answer was lost left half-made.
            for kind in ("volume", "revert"):
                for ref, _ in self._vdis(
                    xapi, {sr}, COPY_KEY, copy_for(kind, volume_id), snapshot=False
                ):
                    self._task(xapi, action, "VDI.destroy", ref)

        self._call(host, action, work)

    def resize_volume(
        self, host: HostRef, pool: StoragePoolRef, volume_id: str, size_bytes: int
    ) -> VolumeInfo:
        action = f"resize volume {volume_id} to {size_bytes} bytes"

        def work(xapi: _PoolSession) -> VolumeInfo:
            vdi = self._volume(xapi, volume_id, self._sr(xapi, pool))
            if vdi is None:
                raise DriverError(f"volume {volume_id} is not in SR {pool.name}")
            current = int(xapi.call("VDI.get_virtual_size", vdi))
            if size_bytes < current:
                raise shrink_refused(volume_id, current, size_bytes)
            if size_bytes > current:
                self._task(xapi, action, "VDI.resize", vdi, str(size_bytes))
            return self._volume_info(xapi, vdi, volume_id, pool)

        return self._call(host, action, work)

    # -- attachment ------------------------------------------------------------------------
    def _disks(self, xapi: _PoolSession, vm: str) -> list[tuple[str, Record, str]]:
        """(VBD ref, VBD record, Stratus volume id) of each Stratus disk plugged into the VM."""
        disks = []
        for vbd in xapi.call("VM.get_VBDs", vm):
            record = xapi.call("VBD.get_record", vbd)
            if record["type"] != "Disk" or record["VDI"] == NULL_REF:
                continue
            volume_id = xapi.call("VDI.get_other_config", record["VDI"]).get(VOLUME_ID_KEY)
            if volume_id:
                disks.append((str(vbd), record, str(volume_id)))
        return disks

    def list_volume_attachments(self, host: HostRef, vm_id: str) -> list[VolumeAttachment]:
        def work(xapi: _PoolSession) -> list[VolumeAttachment]:
            vm, _ = self._vm(xapi, host, vm_id)
            return [
                VolumeAttachment(vm_id, volume_id, int(record["userdevice"]))
                for _, record, volume_id in self._disks(xapi, vm)
            ]

        return self._call(host, f"list volumes of VM {vm_id}", work)

    def attach_volume(
        self, host: HostRef, vm_id: str, volume: VolumeInfo, *, device_id: int
    ) -> VolumeAttachment:
        action = f"attach volume {volume.volume_id} to VM {vm_id}"

        def work(xapi: _PoolSession) -> VolumeAttachment:
            vm, record = self._vm(xapi, host, vm_id)
            vbd = None
            for ref, vbd_record, volume_id in self._disks(xapi, vm):
                if volume_id == volume.volume_id:
                    vbd, device_id_found = ref, int(vbd_record["userdevice"])
                    break
                if vbd_record["userdevice"] == str(device_id):
                    raise DriverError(f"device {device_id} of VM {vm_id} is in use")
            else:
                vdi = self._volume(xapi, volume.volume_id)
                if vdi is None:
                    raise DriverError(f"volume {volume.volume_id} is not in the XenServer pool")
                vbd, device_id_found = self._create_vbd(xapi, vm, vdi, device_id), device_id
            running = record["power_state"] == "Running"
            if running and not xapi.call("VBD.get_currently_attached", vbd):
                self._task(xapi, action, "VBD.plug", vbd)
            return VolumeAttachment(vm_id, volume.volume_id, device_id_found)

        return self._call(host, action, work)

    def detach_volume(self, host: HostRef, vm_id: str, volume_id: str) -> None:
        action = f"detach volume {volume_id} from VM {vm_id}"

        def work(xapi: _PoolSession) -> None:
            vm, _ = self._vm(xapi, host, vm_id)
            for vbd, record, found_id in self._disks(xapi, vm):
                if found_id != volume_id:
                    continue
                if record["currently_attached"]:
                    self._task(xapi, action, "VBD.unplug", vbd)
                xapi.call("VBD.destroy", vbd)

        self._call(host, action, work)
