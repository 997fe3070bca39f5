"""The VMs of an ESXi host: made from Stratus volumes, found by their Stratus id.

A VM carries its Stratus id as its vCenter instance UUID (uuid5 of the id when it is not a UUID)
and in `extraConfig` (`stratus.vm_id`), so `find_vm` is one SearchIndex call. VMs are defined
from existing volumes and destroying a VM detaches its disks first: disks outlive VMs, as the
contract wants. A NIC sits on a distributed port group per network and VLAN, made on first use.
"""

from __future__ import annotations

import time
from typing import Any

from pyVmomi import vim, vmodl

from activities.drivers.conventions import stratus_uuid
from activities.drivers.hypervisor import (
    DriverError,
    HostCapacity,
    HostRef,
    NicSpec,
    VirtualMachineInfo,
    VirtualMachineSpec,
)
from activities.drivers.vsphere.connection import VM_ID_KEY, VSphereConnection
from activities.drivers.vsphere.devices import disk_add, scsi_controller


class VSphereVms(VSphereConnection):
    """What the host says about itself and its VMs, and the lifecycle of each."""

    def host_capacity(self, host: HostRef) -> HostCapacity:
        def call() -> HostCapacity:
            system = self._host_system(self._content(host), host)
            hardware = system.summary.hardware
            return HostCapacity(
                cpu_count=hardware.numCpuThreads,
                cpu_speed_mhz=hardware.cpuMhz,
                memory_mib=hardware.memorySize // (1024 * 1024),
                vm_count=len([vm for vm in system.vm if not vm.config.template]),
                extra={"cpu_model": str(hardware.cpuModel), "vendor": str(hardware.vendor)},
            )

        return self._call(f"host capacity of {host.name}", call)  # type: ignore[no-any-return]

    def list_vms(self, host: HostRef) -> list[VirtualMachineInfo]:
        def call() -> list[VirtualMachineInfo]:
            system = self._host_system(self._content(host), host)
            return [self._info(vm, host) for vm in system.vm if not vm.config.template]

        return self._call(f"list VMs on {host.name}", call)  # type: ignore[no-any-return]

    def find_vm(self, host: HostRef, vm_id: str) -> VirtualMachineInfo | None:
        def call() -> VirtualMachineInfo | None:
            vm = self._vm_on(self._content(host), host, vm_id)
            return None if vm is None else self._info(vm, host)

        return self._call(f"find VM {vm_id} on {host.name}", call)  # type: ignore[no-any-return]

    def define_vm(self, host: HostRef, spec: VirtualMachineSpec) -> VirtualMachineInfo:
        action = f"define VM {spec.vm_id} on {host.name}"

        def call() -> VirtualMachineInfo:
            content = self._content(host)
            existing = self._lookup_vm(content, spec.vm_id)
            if existing is not None:
                return self._info(existing, host)
            system = self._host_system(content, host)
            datacenter = self._datacenter(content, host)
            datastore = spec.root_volume.path.split("]")[0].lstrip("[")
            devices: list[Any] = [scsi_controller()]
            volumes = (spec.root_volume, *spec.data_volumes)
            devices += [disk_add(volume, index) for index, volume in enumerate(volumes)]
            devices += [
                self._nic_add(content, datacenter, nic, index)
                for index, nic in enumerate(sorted(spec.nics, key=lambda n: n.device_id))
            ]
            config = vim.vm.ConfigSpec(
                name=spec.name,
                guestId=self._guest_id,
                numCPUs=spec.cpu_count,
                memoryMB=spec.memory_mib,
                instanceUuid=stratus_uuid(spec.vm_id),
                extraConfig=[vim.option.OptionValue(key=VM_ID_KEY, value=spec.vm_id)],
                files=vim.vm.FileInfo(vmPathName=f"[{datastore}]"),
                deviceChange=devices,
                annotation=f"Stratus VM {spec.vm_id}",
            )
            task = datacenter.vmFolder.CreateVM_Task(
                config=config, pool=system.parent.resourcePool, host=system
            )
            return self._info(self._wait(task, action), host)

        return self._call(action, call)  # type: ignore[no-any-return]

    def _nic_add(self, content: Any, datacenter: Any, nic: NicSpec, index: int) -> Any:
        """A vmxnet3 NIC on the distributed port group of its network and VLAN."""
        name = self._port_group(nic)
        portgroup = next(
            (
                pg
                for pg in self._objects(content, vim.dvs.DistributedVirtualPortgroup)
                if pg.name == name
            ),
            None,
        )
        if portgroup is None:
            switches = self._objects(content, vim.DistributedVirtualSwitch)
            if not switches:
                raise DriverError("no distributed switch in vCenter for Stratus port groups")
            vlan = vim.dvs.VmwareDistributedVirtualSwitch.VlanIdSpec(
                vlanId=nic.vlan or 0, inherited=False
            )
            port_config = vim.dvs.VmwareDistributedVirtualSwitch.VmwarePortConfigPolicy(vlan=vlan)
            pg_spec = vim.dvs.DistributedVirtualPortgroup.ConfigSpec(
                name=name, type="earlyBinding", numPorts=8, defaultPortConfig=port_config
            )
            self._wait(switches[0].AddDVPortgroup_Task([pg_spec]), f"add port group {name}")
            portgroup = next(
                pg
                for pg in self._objects(content, vim.dvs.DistributedVirtualPortgroup)
                if pg.name == name
            )
        backing = vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo(
            port=vim.dvs.PortConnection(
                portgroupKey=portgroup.key,
                switchUuid=portgroup.config.distributedVirtualSwitch.uuid,
            )
        )
        card = vim.vm.device.VirtualVmxnet3(
            key=-200 - index, backing=backing, addressType="manual", macAddress=nic.mac_address
        )
        return vim.vm.device.VirtualDeviceSpec(operation="add", device=card)

    def start_vm(self, host: HostRef, vm_id: str) -> VirtualMachineInfo:
        action = f"start VM {vm_id} on {host.name}"

        def call() -> VirtualMachineInfo:
            vm = self._vm(self._content(host), host, vm_id)
            if vm.runtime.powerState != "poweredOn":
                self._wait(vm.PowerOnVM_Task(), action)
            return self._info(vm, host)

        return self._call(action, call)  # type: ignore[no-any-return]

    def stop_vm(self, host: HostRef, vm_id: str, *, forced: bool = False) -> VirtualMachineInfo:
        action = f"stop VM {vm_id} on {host.name}"

        def call() -> VirtualMachineInfo:
            vm = self._vm(self._content(host), host, vm_id)
            if vm.runtime.powerState == "poweredOff":
                return self._info(vm, host)
            if not forced:
                try:
                    vm.ShutdownGuest()
                    deadline = time.monotonic() + self._shutdown_timeout
                    while vm.runtime.powerState != "poweredOff" and time.monotonic() < deadline:
                        time.sleep(0.2)
                except (vim.fault.ToolsUnavailable, vim.fault.InvalidState):
                    pass  # no tools to ask: pull the plug, as CloudStack does
            if vm.runtime.powerState != "poweredOff":
                self._wait(vm.PowerOffVM_Task(), action)
            return self._info(vm, host)

        return self._call(action, call)  # type: ignore[no-any-return]

    def reboot_vm(self, host: HostRef, vm_id: str) -> VirtualMachineInfo:
        action = f"reboot VM {vm_id} on {host.name}"

        def call() -> VirtualMachineInfo:
            vm = self._vm(self._content(host), host, vm_id)
            if vm.runtime.powerState != "poweredOn":
                raise DriverError(f"VM {vm_id} is not running; it cannot be rebooted")
            try:
                vm.RebootGuest()
            except (vim.fault.ToolsUnavailable, vim.fault.InvalidState, vmodl.fault.MethodNotFound):
                # No guest to ask (no tools, or a vCenter without guest operations): reset.
                self._wait(vm.ResetVM_Task(), action)
            return self._info(vm, host)

        return self._call(action, call)  # type: ignore[no-any-return]

    def destroy_vm(self, host: HostRef, vm_id: str) -> None:
        action = f"destroy VM {vm_id} on {host.name}"

        def call() -> None:
            vm = self._vm_on(self._content(host), host, vm_id)
            if vm is None:
                return
            if vm.runtime.powerState != "poweredOff":
                self._wait(vm.PowerOffVM_Task(), action)
            # Destroy_Task deletes attached disks: detach them first, they are Stratus volumes.
            removals = [
                vim.vm.device.VirtualDeviceSpec(operation="remove", device=device)
                for device in vm.config.hardware.device
                if isinstance(device, vim.vm.device.VirtualDisk)
            ]
            if removals:
                self._wait(vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=removals)), action)
            self._wait(vm.Destroy_Task(), action)

        self._call(action, call)
