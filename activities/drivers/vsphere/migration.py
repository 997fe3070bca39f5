"""Moving a VM between ESXi hosts: RelocateVM_Task, host to host on shared datastores.

A retry after success finds the VM on the target and answers from there.
"""

from __future__ import annotations

from pyVmomi import vim

from activities.drivers.hypervisor import HostRef, RefusesStorageMigration, VirtualMachineInfo
from activities.drivers.vsphere.connection import VSphereConnection


class VSphereMigration(RefusesStorageMigration, VSphereConnection):
    """Relocating a VM to another host of the same vCenter."""

    storage_migration_refusal = (
        "relocating a VM's disks to another datastore (RelocateVM_Task with disk locators) is "
        "not implemented for vSphere yet"
    )

    def migrate_vm(
        self, source_host: HostRef, target_host: HostRef, vm_id: str
    ) -> VirtualMachineInfo:
        action = f"migrate VM {vm_id} from {source_host.name} to {target_host.name}"

        def call() -> VirtualMachineInfo:
            content = self._content(source_host)
            arrived = self._vm_on(content, target_host, vm_id)
            if arrived is not None:
                return self._info(arrived, target_host)
            vm = self._vm(content, source_host, vm_id)
            target = self._host_system(content, target_host)
            spec = vim.vm.RelocateSpec(host=target, pool=target.parent.resourcePool)
            self._wait(vm.RelocateVM_Task(spec=spec), action)
            return self._info(vm, target_host)

        return self._call(action, call)  # type: ignore[no-any-return]
