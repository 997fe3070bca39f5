"""Moving a KVM guest between hosts: libvirt migration from one daemon to another.

A running domain migrates live (its memory goes over `migration_uri`), a stopped one offline;
either way it becomes persistent on the target and undefined on the source, so a retry after
success finds it on the target and answers from there. Shared storage that libvirt cannot
recognise as such (a plain directory, an odd file system) needs `unsafe_migration`.
"""

from __future__ import annotations

import libvirt

from activities.drivers.hypervisor import (
    DriverError,
    HostRef,
    RefusesStorageMigration,
    VirtualMachineInfo,
)
from activities.drivers.libvirt_kvm.connection import LibvirtConnection


class LibvirtMigration(RefusesStorageMigration, LibvirtConnection):
    """Live and offline migration of a domain to another host."""

    storage_migration_refusal = (
        "migration with non-shared disks (VIR_MIGRATE_NON_SHARED_DISK with a per-disk target "
        "pool) is not implemented for KVM yet"
    )

    def migrate_vm(
        self, source_host: HostRef, target_host: HostRef, vm_id: str
    ) -> VirtualMachineInfo:
        def call() -> VirtualMachineInfo:
            source = self._connection(source_host)
            target = self._connection(target_host)
            domain = self._lookup_domain(source, vm_id)
            if domain is None:
                arrived = self._lookup_domain(target, vm_id)
                if arrived is not None:
                    return self._info(arrived, target_host)  # a retry after success
                raise DriverError(f"VM {vm_id} is on neither {source_host.name} nor target")
            flags = libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
            if domain.isActive():
                flags |= libvirt.VIR_MIGRATE_LIVE
            else:
                flags |= libvirt.VIR_MIGRATE_OFFLINE
            if self._unsafe_migration:
                flags |= libvirt.VIR_MIGRATE_UNSAFE
            params: dict[str, str] = {}
            if self._migration_uri and domain.isActive():
                params[libvirt.VIR_MIGRATE_PARAM_URI] = self._migration_uri.format(
                    address=target_host.address, name=target_host.name
                )
            migrated = domain.migrate3(target, params, flags)
            return self._info(migrated, target_host)

        return self._run(f"migrate VM {vm_id} from {source_host.name} to {target_host.name}", call)
