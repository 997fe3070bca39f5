"""A KVM host's VMs: libvirt domains named by the Stratus id, and their power.

A domain's UUID is the Stratus vm id (or a uuid5 of it when the id is not a UUID) and its
metadata carries the id itself, so `find_vm` is one lookup and defining twice finds the first
domain. Stopping asks the guest first and pulls the plug after `shutdown_timeout`, as
CloudStack's agent does; destroying keeps the disks, which are Stratus volumes.
"""

from __future__ import annotations

import time

import libvirt

from activities.drivers.conventions import stratus_uuid
from activities.drivers.hypervisor import (
    DriverError,
    HostCapacity,
    HostRef,
    NicSpec,
    UnsupportedOperationError,
    VirtualMachineInfo,
    VirtualMachineSpec,
)
from activities.drivers.libvirt_kvm.connection import (
    METADATA_NS,
    LibvirtConnection,
    translate_libvirt_error,
)
from activities.drivers.libvirt_kvm.domain_xml import disk_xml, escape


class LibvirtVms(LibvirtConnection):
    """What the host says about itself and its domains, and the lifecycle of each."""

    def host_capacity(self, host: HostRef) -> HostCapacity:
        def call() -> HostCapacity:
            conn = self._connection(host)
            model, memory_mib, cpus, mhz, *_ = conn.getInfo()
            return HostCapacity(
                cpu_count=cpus,
                cpu_speed_mhz=mhz,
                memory_mib=memory_mib,
                vm_count=conn.numOfDomains(),
                extra={"cpu_model": str(model), "libvirt_version": str(conn.getLibVersion())},
            )

        return self._run(f"host capacity of {host.name}", call)

    def list_vms(self, host: HostRef) -> list[VirtualMachineInfo]:
        def call() -> list[VirtualMachineInfo]:
            conn = self._connection(host)
            return [self._info(domain, host) for domain in conn.listAllDomains()]

        return self._run(f"list VMs on {host.name}", call)

    def find_vm(self, host: HostRef, vm_id: str) -> VirtualMachineInfo | None:
        def call() -> VirtualMachineInfo | None:
            domain = self._lookup_domain(self._connection(host), vm_id)
            return None if domain is None else self._info(domain, host)

        return self._run(f"find VM {vm_id} on {host.name}", call)

    def define_vm(self, host: HostRef, spec: VirtualMachineSpec) -> VirtualMachineInfo:
        def call() -> VirtualMachineInfo:
            conn = self._connection(host)
            existing = self._lookup_domain(conn, spec.vm_id)
            if existing is not None:
                return self._info(existing, host)
            domain = conn.defineXML(self._domain_xml(spec))
            return self._info(domain, host)

        return self._run(f"define VM {spec.vm_id} on {host.name}", call)

    def _domain_xml(self, spec: VirtualMachineSpec) -> str:
        disks = [disk_xml(spec.root_volume, 0)] + [
            disk_xml(volume, index) for index, volume in enumerate(spec.data_volumes, start=1)
        ]
        nics = [self._nic_xml(nic) for nic in sorted(spec.nics, key=lambda n: n.device_id)]
        return f"""<domain type='{self._domain_type}'>
  <name>{escape(spec.name)}</name>
  <uuid>{stratus_uuid(spec.vm_id)}</uuid>
  <title>{escape(spec.name)}</title>
  <metadata><stratus:vm xmlns:stratus='{METADATA_NS}' id='{escape(spec.vm_id)}'/></metadata>
  <memory unit='MiB'>{spec.memory_mib}</memory>
  <vcpu>{spec.cpu_count}</vcpu>
  <cputune><shares>{max(2, spec.cpu_count * spec.cpu_speed_mhz)}</shares></cputune>
  <os><type arch='x86_64'>hvm</type><boot dev='hd'/></os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot><on_crash>destroy</on_crash>
  <devices>
    <controller type='scsi' index='0' model='virtio-scsi'/>
    {"".join(disks)}
    {"".join(nics)}
    <console type='pty'/>
  </devices>
</domain>"""

    def _nic_xml(self, nic: NicSpec) -> str:
        vlan = f"<vlan><tag id='{nic.vlan}'/></vlan>" if nic.vlan is not None else ""
        return (
            f"<interface type='network'><mac address='{escape(nic.mac_address)}'/>"
            f"<source network='{escape(self._network_source(nic))}'/>{vlan}"
            f"<model type='virtio'/></interface>"
        )

    def start_vm(self, host: HostRef, vm_id: str) -> VirtualMachineInfo:
        def call() -> VirtualMachineInfo:
            domain = self._domain(self._connection(host), host, vm_id)
            if not domain.isActive():
                domain.create()
            return self._info(domain, host)

        return self._run(f"start VM {vm_id} on {host.name}", call)

    def stop_vm(self, host: HostRef, vm_id: str, *, forced: bool = False) -> VirtualMachineInfo:
        def call() -> VirtualMachineInfo:
            domain = self._domain(self._connection(host), host, vm_id)
            if domain.isActive() and not forced:
                domain.shutdown()
                deadline = time.monotonic() + self._shutdown_timeout
                while domain.isActive() and time.monotonic() < deadline:
                    time.sleep(0.2)
            if domain.isActive():
                try:
                    domain.destroy()
                except libvirt.libvirtError as error:
                    # It may have gone down by itself between the check and the destroy.
                    if domain.isActive():
                        raise error
            return self._info(domain, host)

        return self._run(f"stop VM {vm_id} on {host.name}", call)

    def reboot_vm(self, host: HostRef, vm_id: str) -> VirtualMachineInfo:
        def call() -> VirtualMachineInfo:
            domain = self._domain(self._connection(host), host, vm_id)
            if not domain.isActive():
                raise DriverError(f"VM {vm_id} is not running; it cannot be rebooted")
            domain.reboot(0)
            return self._info(domain, host)

        return self._run(f"reboot VM {vm_id} on {host.name}", call)

    def destroy_vm(self, host: HostRef, vm_id: str) -> None:
        def call() -> None:
            domain = self._lookup_domain(self._connection(host), vm_id)
            if domain is None:
                return
            if domain.isActive():
                domain.destroy()
            _undefine(domain)

        self._run(f"destroy VM {vm_id} on {host.name}", call)


def _undefine(domain: libvirt.virDomain) -> None:
    """Undefine with its snapshot metadata and managed save, falling back where unsupported."""
    try:
        domain.undefineFlags(
            libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
            | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
            | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
        )
    except libvirt.libvirtError as error:
        if not isinstance(translate_libvirt_error(error, ""), UnsupportedOperationError):
            raise
        domain.undefineFlags(
            libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
            | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
        )
