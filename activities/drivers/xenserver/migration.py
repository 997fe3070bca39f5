"""Moving a running VM between hosts of one XenServer pool: `VM.pool_migrate`, live.

Hosts in two clusters are two pools, which `pool_migrate` cannot bridge: refused (432). After
the move the VM's affinity follows it, so it would start there again once halted; a retry
after success finds it on the target and answers from there.
"""

from __future__ import annotations

from activities.drivers.hypervisor import (
    DriverError,
    HostRef,
    RefusesStorageMigration,
    UnsupportedOperationError,
    VirtualMachineInfo,
)
from activities.drivers.xenserver.connection import XenServerConnection, _PoolSession


class XenServerMigration(RefusesStorageMigration, XenServerConnection):
    """Live migration of a running VM within its pool."""

    storage_migration_refusal = (
        "storage live migration (XAPI VM.migrate_send with a VDI map) is not implemented for "
        "XenServer yet"
    )

    def migrate_vm(
        self, source_host: HostRef, target_host: HostRef, vm_id: str
    ) -> VirtualMachineInfo:
        action = f"migrate VM {vm_id} from {source_host.name} to {target_host.name}"
        if source_host.cluster_id != target_host.cluster_id:
            raise UnsupportedOperationError(
                f"{action}: pool_migrate moves VMs within one pool; the hosts are in "
                f"clusters {source_host.cluster_id} and {target_host.cluster_id}"
            )

        def work(xapi: _PoolSession) -> VirtualMachineInfo:
            target = self._host(xapi, target_host, live=True)
            vm = self._lookup(xapi, vm_id)
            if vm is None:
                raise DriverError(f"VM {vm_id} is not defined in the pool of {source_host.name}")
            record = xapi.call("VM.get_record", vm)
            if self._home(record) == target:
                return self._info(record, target_host)  # a retry: it already moved
            if self._home(record) != self._host(xapi, source_host):
                raise DriverError(f"VM {vm_id} is not on host {source_host.name}")
            if record["power_state"] != "Running":
                raise DriverError(f"VM {vm_id} is not running; live migration needs it running")
            self._task(xapi, action, "VM.pool_migrate", vm, target, {"live": "true"})
            xapi.call("VM.set_affinity", vm, target)
            return self._refresh(xapi, vm, target_host)

        return self._call(source_host, action, work)
