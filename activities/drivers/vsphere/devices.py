"""The virtual hardware a Stratus VM's disks hang off in vSphere: one paravirtual SCSI bus.

A disk's device id is its unit number on that bus, except that unit 7 is the controller's own,
so device 7 and up sit one unit higher. Plugging a disk names an existing vmdk and creates no
file: the volume already exists and outlives the VM.
"""

from __future__ import annotations

from typing import Any

from pyVmomi import vim

from activities.drivers.hypervisor import VolumeInfo

SCSI_CONTROLLER_KEY = 1000


def scsi_controller() -> Any:
    controller = vim.vm.device.ParaVirtualSCSIController(
        key=SCSI_CONTROLLER_KEY, busNumber=0, sharedBus="noSharing"
    )
    return vim.vm.device.VirtualDeviceSpec(operation="add", device=controller)


def disk_add(
    volume: VolumeInfo, device_id: int, *, controller_key: int = SCSI_CONTROLLER_KEY
) -> Any:
    """Plug an existing vmdk (no file operation: the volume already exists and is kept)."""
    backing = vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
        fileName=volume.path, diskMode="persistent", thinProvisioned=True
    )
    disk = vim.vm.device.VirtualDisk(
        key=-100 - device_id,
        controllerKey=controller_key,
        unitNumber=device_id if device_id < 7 else device_id + 1,  # unit 7 is the controller
        capacityInKB=volume.size_bytes // 1024,
        backing=backing,
    )
    return vim.vm.device.VirtualDeviceSpec(operation="add", device=disk)
