"""Volumes on vSphere: vmdk files in a folder of the pool's datastore, plugged into VMs.

A root volume from a template is a copy of the template VM's disk (how CloudStack's VMware
plugin seeds root disks), or of the image a template made from a snapshot keeps on the
secondary datastore. The size a volume call answers is the disk's own, read from its descriptor,
so a retry answers what the first call made.
"""

from __future__ import annotations

from typing import Any

from pyVmomi import vim

from activities.drivers.conventions import RefusesVolumeCopies
from activities.drivers.hypervisor import (
    DriverError,
    HostRef,
    StoragePoolRef,
    TemplateRef,
    VolumeAttachment,
    VolumeInfo,
    VolumeSpec,
)
from activities.drivers.vsphere.devices import disk_add
from activities.drivers.vsphere.disks import VSphereDiskFiles, scratch_path


class VSphereVolumes(RefusesVolumeCopies, VSphereDiskFiles):
    """Creating, growing and deleting volumes, and plugging them into VMs."""

    volume_copy_refusal = (
        "copying a disk between datastores is not implemented for vSphere yet "
        "(it needs a disk relocation through the datastore browser)"
    )

    def _template_disk(self, content: Any, template_name: str) -> str:
        for vm in self._objects(content, vim.VirtualMachine):
            if vm.name == template_name:
                for device in self._disks(vm):
                    return str(device.backing.fileName)
        raise DriverError(f"template VM {template_name} (with a disk) not found in vCenter")

    def _template_source(self, content: Any, template: TemplateRef) -> str:
        """The disk a template's volumes are copied from: a template made from a snapshot names
        its disk on the secondary datastore (its url is that datastore path); any other is a
        template VM in vCenter, named by the template."""
        if template.url.startswith("["):
            return template.url
        return self._template_disk(content, template.name)

    def create_volume(self, host: HostRef, pool: StoragePoolRef, spec: VolumeSpec) -> VolumeInfo:
        """A thin disk, or a copy of the template's disk grown to the asked size.

        The size answered is the disk's own (its descriptor's), so a retry answers what the
        first call made, whatever size it asks for.
        """
        action = f"create volume {spec.volume_id} on datastore {pool.name}"

        def call() -> VolumeInfo:
            content = self._content(host)
            datacenter = self._datacenter(content, host)
            path = self._volume_path(pool, spec.volume_id)
            size = spec.size_bytes
            if spec.template is not None:
                size = max(size, spec.template.size_bytes)
            if not self._disk_exists(content, datacenter, path):
                if spec.template is not None:
                    source = self._template_source(content, spec.template)
                    self._copy_disk(
                        host, content, datacenter, source, path, action, size_bytes=size
                    )
                else:
                    self._make_folder(content, datacenter, path)
                    disk = vim.VirtualDiskManager.FileBackedVirtualDiskSpec(
                        diskType="thin", adapterType="lsiLogic", capacityKb=size // 1024
                    )
                    task = content.virtualDiskManager.CreateVirtualDisk_Task(
                        name=path, datacenter=datacenter, spec=disk
                    )
                    self._wait(task, action)
            size = self._disk_size(host, datacenter, path)
            return VolumeInfo(spec.volume_id, path, size, pool.pool_id)

        return self._call(action, call)  # type: ignore[no-any-return]

    def delete_volume(self, host: HostRef, pool: StoragePoolRef, volume_id: str) -> None:
        """Delete the disk and the scratch copy an interrupted copy onto its path left (a volume
        from a template or a snapshot, or a revert, copies to `<volume>-copying.vmdk` first):
        this is the saga's undo of those, and nothing else would ever remove that file."""
        action = f"delete volume {volume_id} on datastore {pool.name}"

        def call() -> None:
            content = self._content(host)
            datacenter = self._datacenter(content, host)
            path = self._volume_path(pool, volume_id)
            self._delete_disk(content, datacenter, path, action)
            self._delete_disk(content, datacenter, scratch_path(path), action)

        self._call(action, call)

    def resize_volume(
        self, host: HostRef, pool: StoragePoolRef, volume_id: str, size_bytes: int
    ) -> VolumeInfo:
        action = f"resize volume {volume_id} to {size_bytes} bytes"

        def call() -> VolumeInfo:
            content = self._content(host)
            datacenter = self._datacenter(content, host)
            path = self._volume_path(pool, volume_id)
            if not self._disk_exists(content, datacenter, path):
                raise DriverError(f"volume {volume_id} is not on datastore {pool.name}")
            task = content.virtualDiskManager.ExtendVirtualDisk_Task(
                name=path,
                datacenter=datacenter,
                newCapacityKb=size_bytes // 1024,
                eagerZero=False,
            )
            self._wait(task, action)
            return VolumeInfo(volume_id, path, size_bytes, pool.pool_id)

        return self._call(action, call)  # type: ignore[no-any-return]

    # -- attachment ------------------------------------------------------------------------
    def list_volume_attachments(self, host: HostRef, vm_id: str) -> list[VolumeAttachment]:
        def call() -> list[VolumeAttachment]:
            vm = self._vm(self._content(host), host, vm_id)
            return [
                VolumeAttachment(vm_id, self._volume_id(disk), int(disk.unitNumber))
                for disk in self._disks(vm)
            ]

        return self._call(f"list volumes of VM {vm_id}", call)  # type: ignore[no-any-return]

    def attach_volume(
        self, host: HostRef, vm_id: str, volume: VolumeInfo, *, device_id: int
    ) -> VolumeAttachment:
        action = f"attach volume {volume.volume_id} to VM {vm_id}"

        def call() -> VolumeAttachment:
            vm = self._vm(self._content(host), host, vm_id)
            for disk in self._disks(vm):
                if self._volume_id(disk) == volume.volume_id:
                    return VolumeAttachment(vm_id, volume.volume_id, int(disk.unitNumber))
                if disk.unitNumber == device_id:
                    raise DriverError(f"device {device_id} of VM {vm_id} is in use")
            controller = next(
                d
                for d in vm.config.hardware.device
                if isinstance(d, vim.vm.device.VirtualSCSIController)
            )
            change = disk_add(volume, device_id, controller_key=controller.key)
            self._wait(vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[change])), action)
            return VolumeAttachment(vm_id, volume.volume_id, device_id)

        return self._call(action, call)  # type: ignore[no-any-return]

    def detach_volume(self, host: HostRef, vm_id: str, volume_id: str) -> None:
        action = f"detach volume {volume_id} from VM {vm_id}"

        def call() -> None:
            vm = self._vm(self._content(host), host, vm_id)
            for disk in self._disks(vm):
                if self._volume_id(disk) == volume_id:
                    change = vim.vm.device.VirtualDeviceSpec(operation="remove", device=disk)
                    self._wait(vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[change])), action)

        self._call(action, call)
