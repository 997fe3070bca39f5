"""The VMs of a XenServer host: defined as CloudStack's XenServer resource defines them.

Defining a VM clones the base template of the OS (`VM.clone`), drops its `disks` provisioning
spec (the disks are Stratus volumes, plugged as VBDs), `VM.provision`s it as `xe vm-install`
does, then sets memory, vCPUs, affinity, VBDs and VIFs and turns the clone into a VM. The clone
is named `stratus-pending:<vm id>` until the last step, so a define interrupted at any point is
found and finished by the retry (or removed by the saga's undo). A halted VM belongs to its
`affinity` host and is started there (`VM.start_on`).
"""

from __future__ import annotations

import XenAPI

from activities.drivers.hypervisor import (
    DriverError,
    DriverTimeoutError,
    HostCapacity,
    HostRef,
    NicSpec,
    VirtualMachineInfo,
    VirtualMachineSpec,
)
from activities.drivers.xenserver.connection import MIB, Record, _PoolSession
from activities.drivers.xenserver.disks import XenServerDisks
from activities.drivers.xenserver.snapshots import XenServerSnapshots
from activities.drivers.xenserver.tags import PENDING_PREFIX, VM_ID_KEY

#: A graceful stop or reboot that cannot happen (no PV tools, guest not cooperating): pull the plug.
_NO_CLEAN_POWER_OP = {
    "VM_MISSING_PV_DRIVERS",
    "VM_LACKS_FEATURE",
    "VM_LACKS_FEATURE_SHUTDOWN",
    "VM_SHUTDOWN_TIMEOUT",
    "OPERATION_NOT_ALLOWED",
}


class XenServerVms(XenServerDisks, XenServerSnapshots):
    """What the host says about itself and its VMs, and the lifecycle of each."""

    def host_capacity(self, host: HostRef) -> HostCapacity:
        def work(xapi: _PoolSession) -> HostCapacity:
            ref = self._host(xapi, host, live=True)
            record = xapi.call("host.get_record", ref)
            metrics = xapi.call("host_metrics.get_record", record["metrics"])
            cpu = record["cpu_info"]
            guests = [
                vm
                for vm in xapi.call("VM.get_all_records").values()
                if self._is_guest(vm) and vm["resident_on"] == ref
            ]
            return HostCapacity(
                cpu_count=int(cpu["cpu_count"]),
                cpu_speed_mhz=int(float(cpu["speed"])),
                memory_mib=int(metrics["memory_total"]) // MIB,
                vm_count=len(guests),
                extra={
                    "cpu_model": str(cpu.get("modelname", "")),
                    "memory_free_mib": str(int(metrics["memory_free"]) // MIB),
                    "product_version": str(record["software_version"].get("product_version")),
                },
            )

        return self._call(host, f"host capacity of {host.name}", work)

    def list_vms(self, host: HostRef) -> list[VirtualMachineInfo]:
        def work(xapi: _PoolSession) -> list[VirtualMachineInfo]:
            ref = self._host(xapi, host, live=True)
            return [
                self._info(record, host)
                for record in xapi.call("VM.get_all_records").values()
                if self._is_guest(record) and self._home(record) == ref
            ]

        return self._call(host, f"list VMs on {host.name}", work)

    def find_vm(self, host: HostRef, vm_id: str) -> VirtualMachineInfo | None:
        def work(xapi: _PoolSession) -> VirtualMachineInfo | None:
            found = self._vm_on(xapi, host, vm_id)
            return None if found is None else self._info(found[1], host)

        return self._call(host, f"find VM {vm_id} on {host.name}", work)

    def define_vm(self, host: HostRef, spec: VirtualMachineSpec) -> VirtualMachineInfo:
        action = f"define VM {spec.vm_id} on {host.name}"

        def work(xapi: _PoolSession) -> VirtualMachineInfo:
            host_ref = self._host(xapi, host, live=True)
            vm = self._lookup(xapi, spec.vm_id, pending=True)
            if vm is None:
                template = self._template(xapi, spec)
                vm = str(
                    self._task(xapi, action, "VM.clone", template, PENDING_PREFIX + spec.vm_id)
                )
            record = xapi.call("VM.get_record", vm)
            if not record["is_a_template"]:
                if self._home(record) != host_ref:
                    raise DriverError(f"VM {spec.vm_id} is already defined on another host")
                return self._info(record, host)
            self._finish_definition(xapi, action, vm, record, host_ref, spec)
            return self._refresh(xapi, vm, host)

        return self._call(host, action, work)

    def _template(self, xapi: _PoolSession, spec: VirtualMachineSpec) -> str:
        name = (
            self._base_template
            if isinstance(self._base_template, str)
            else self._base_template(spec)
        )
        for ref in xapi.call("VM.get_by_name_label", name):
            if xapi.call("VM.get_is_a_template", ref):
                return str(ref)
        raise DriverError(f"base template {name} is not in the XenServer pool")

    def _finish_definition(
        self,
        xapi: _PoolSession,
        action: str,
        vm: str,
        record: Record,
        host_ref: str,
        spec: VirtualMachineSpec,
    ) -> None:
        """Turn the clone into the VM; every step checks first, so a retry resumes anywhere."""
        if "disks" in record["other_config"]:
            xapi.call("VM.remove_from_other_config", vm, "disks")
            self._task(xapi, action, "VM.provision", vm)
        xapi.call("VM.set_affinity", vm, host_ref)
        memory = str(spec.memory_mib * MIB)
        static_min = str(min(int(record["memory_static_min"]), spec.memory_mib * MIB))
        xapi.call("VM.set_memory_limits", vm, static_min, memory, memory, memory)
        cpus = str(spec.cpu_count)
        if spec.cpu_count > int(record["VCPUs_max"]):
            xapi.call("VM.set_VCPUs_max", vm, cpus)
            xapi.call("VM.set_VCPUs_at_startup", vm, cpus)
        else:
            xapi.call("VM.set_VCPUs_at_startup", vm, cpus)
            xapi.call("VM.set_VCPUs_max", vm, cpus)
        plugged = {xapi.call("VBD.get_userdevice", vbd) for vbd in xapi.call("VM.get_VBDs", vm)}
        for device, volume in enumerate((spec.root_volume, *spec.data_volumes)):
            if str(device) not in plugged:
                vdi = self._volume(xapi, volume.volume_id)
                if vdi is None:
                    raise DriverError(f"volume {volume.volume_id} is not in the XenServer pool")
                self._create_vbd(xapi, vm, vdi, device)
        present = {xapi.call("VIF.get_device", vif) for vif in xapi.call("VM.get_VIFs", vm)}
        for nic in spec.nics:
            if str(nic.device_id) not in present:
                self._create_vif(xapi, vm, nic)
        if VM_ID_KEY not in record["other_config"]:
            xapi.call("VM.add_to_other_config", vm, VM_ID_KEY, spec.vm_id)
        xapi.call("VM.set_name_label", vm, spec.name)
        xapi.call("VM.set_name_description", vm, f"Stratus VM {spec.vm_id}")
        xapi.call("VM.set_is_a_template", vm, False)

    def _create_vif(self, xapi: _PoolSession, vm: str, nic: NicSpec) -> None:
        name = self._network_name(nic)
        networks = xapi.call("network.get_by_name_label", name)
        if not networks:
            raise DriverError(f"network {name} is not in the XenServer pool")
        xapi.call(
            "VIF.create",
            {
                "device": str(nic.device_id),
                "network": networks[0],
                "VM": vm,
                "MAC": nic.mac_address,
                "MTU": "1500",
                "other_config": {"stratus_network_id": nic.network_id},
                "qos_algorithm_type": "",
                "qos_algorithm_params": {},
            },
        )

    def start_vm(self, host: HostRef, vm_id: str) -> VirtualMachineInfo:
        action = f"start VM {vm_id} on {host.name}"

        def work(xapi: _PoolSession) -> VirtualMachineInfo:
            vm, record = self._vm(xapi, host, vm_id)
            state = record["power_state"]
            if state == "Halted":
                self._task(xapi, action, "VM.start_on", vm, self._host(xapi, host), False, False)
            elif state == "Suspended":
                self._task(xapi, action, "VM.resume_on", vm, self._host(xapi, host), False, False)
            elif state == "Paused":
                self._task(xapi, action, "VM.unpause", vm)
            return self._refresh(xapi, vm, host)

        return self._call(host, action, work)

    def stop_vm(self, host: HostRef, vm_id: str, *, forced: bool = False) -> VirtualMachineInfo:
        action = f"stop VM {vm_id} on {host.name}"

        def work(xapi: _PoolSession) -> VirtualMachineInfo:
            vm, record = self._vm(xapi, host, vm_id)
            if record["power_state"] in ("Halted", "Suspended"):
                return self._info(record, host)  # off already (a suspended image is kept)
            if not forced and record["power_state"] == "Running":
                self._gracefully(xapi, action, "VM.clean_shutdown", vm)
            if xapi.call("VM.get_power_state", vm) != "Halted":
                self._task(xapi, action, "VM.hard_shutdown", vm)
            return self._refresh(xapi, vm, host)

        return self._call(host, action, work)

    def _gracefully(self, xapi: _PoolSession, action: str, method: str, vm: str) -> bool:
        """Ask the guest (clean shutdown or reboot) for up to `shutdown_timeout`; False if not."""
        task = xapi.call(f"Async.{method}", vm)
        try:
            self._await(xapi, action, task, self._shutdown_timeout)
        except DriverTimeoutError:
            return False  # the guest ignored us; the caller pulls the plug (XAPI cancels ours)
        except XenAPI.Failure as failure:
            if str(failure.details[0]) not in _NO_CLEAN_POWER_OP:
                raise
            return False
        return True

    def reboot_vm(self, host: HostRef, vm_id: str) -> VirtualMachineInfo:
        action = f"reboot VM {vm_id} on {host.name}"

        def work(xapi: _PoolSession) -> VirtualMachineInfo:
            vm, record = self._vm(xapi, host, vm_id)
            if record["power_state"] != "Running":
                raise DriverError(f"VM {vm_id} is not running; it cannot be rebooted")
            if not self._gracefully(xapi, action, "VM.clean_reboot", vm):
                self._task(xapi, action, "VM.hard_reboot", vm)
            return self._refresh(xapi, vm, host)

        return self._call(host, action, work)

    def destroy_vm(self, host: HostRef, vm_id: str) -> None:
        action = f"destroy VM {vm_id} on {host.name}"

        def work(xapi: _PoolSession) -> None:
            found = self._vm_on(xapi, host, vm_id)
            vm = found[0] if found else self._lookup(xapi, vm_id, pending=True)
            if vm is None:
                return
            record = xapi.call("VM.get_record", vm)
            if found is None and not record["is_a_template"]:
                return  # a complete VM on another host is not this host's to destroy
            if record["power_state"] != "Halted":
                self._task(xapi, action, "VM.hard_shutdown", vm)
            for snapshot in record["snapshots"]:
                self._destroy_snapshot(xapi, action, snapshot)
            # VM.destroy removes the VBDs and VIFs and keeps the VDIs: they are Stratus volumes.
            self._task(xapi, action, "VM.destroy", vm)

        self._call(host, action, work)
