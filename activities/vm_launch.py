"""What a hypervisor needs to define and start a VM: the one place its definition is built,
for a deployment, a start, and the undo of a stop (defining it again)."""

from __future__ import annotations

from uuid import UUID

from activities.deployment_models import VmLaunch
from activities.drivers.hypervisor import NicSpec, VirtualMachineSpec, VolumeInfo
from activities.refs import host_ref
from domain.cloud import Cloud
from domain.guest_network import GuestNetwork
from domain.virtual_machine import VirtualMachine
from domain.volume import Volume
from domain.volume_attachments import VolumeAttachments, attachments_id_for


def vm_launch(cloud: Cloud, vm_id: UUID, host_id: UUID) -> VmLaunch:
    """The VM as the records say it is: its size, its root disk, its NIC and the data disks
    attached to it (a stopped VM is defined on no hypervisor, so it comes back with them)."""
    vm = cloud.load(VirtualMachine, vm_id)
    root = cloud.load(Volume, vm.root_volume_id)
    nics: tuple[NicSpec, ...] = ()
    if vm.ip_address and vm.mac_address:
        network = cloud.load(GuestNetwork, vm.network_id)
        nics = (
            NicSpec(
                mac_address=vm.mac_address,
                ip_address=vm.ip_address,
                network_id=str(network.id),
                vlan=network.vlan,
            ),
        )
    return VmLaunch(
        host=host_ref(cloud, host_id),
        spec=VirtualMachineSpec(
            vm_id=str(vm.id),
            name=vm.name,
            cpu_count=vm.cpu_count,
            cpu_speed_mhz=vm.cpu_speed_mhz,
            memory_mib=vm.memory_mib,
            root_volume=_disk(root),
            nics=nics,
            data_volumes=_data_disks(cloud, vm),
        ),
    )


def _disk(volume: Volume) -> VolumeInfo:
    return VolumeInfo(
        volume_id=str(volume.id),
        path=volume.path or "",
        size_bytes=volume.size_bytes,
        pool_id=str(volume.pool_id or ""),
    )


def _data_disks(cloud: Cloud, vm: VirtualMachine) -> tuple[VolumeInfo, ...]:
    """The data disks attached to the VM, in device order; one never made on storage has
    nothing to plug in."""
    attachments = cloud.find(VolumeAttachments, attachments_id_for(vm.id))
    if attachments is None:
        return ()
    disks = (cloud.load(Volume, volume_id) for volume_id in attachments.volume_ids)
    return tuple(_disk(disk) for disk in disks if disk.path)
