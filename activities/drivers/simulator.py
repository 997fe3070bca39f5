"""The simulator hypervisor: an in-process backend for development, tests and benchmarks.

Like CloudStack's simulator it keeps VMs per host in memory and can be told to fail or delay a
given operation on a given host. The faults come from a `FaultSource` (the composition root
reads them from the event store), so an admin sets them through the API while this driver runs
in a worker process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from activities.drivers.hypervisor import (
    DriverError,
    HostCapacity,
    HostRef,
    PowerState,
    ResourceUnavailableError,
    StoragePoolRef,
    VirtualMachineInfo,
    VirtualMachineSpec,
    VolumeInfo,
    VolumeSpec,
)

#: Returns the faults in force: dicts with operation, action, host_id, delay_seconds,
#: error_code and message (see domain.simulator_fault).
FaultSource = Callable[[], Iterable[Mapping[str, Any]]]


def no_faults() -> list[Mapping[str, Any]]:
    return []


@dataclass(frozen=True)
class SimulatedVm:
    spec: VirtualMachineSpec
    power_state: PowerState
    host_id: str


class SimulatorDriver:
    hypervisor = "Simulator"

    def __init__(
        self,
        faults: FaultSource = no_faults,
        *,
        cpu_count: int = 16,
        cpu_speed_mhz: int = 2400,
        memory_mib: int = 65536,
    ) -> None:
        self._faults = faults
        self._capacity = HostCapacity(cpu_count, cpu_speed_mhz, memory_mib)
        self._lock = threading.Lock()
        self._vms: dict[str, dict[str, SimulatedVm]] = {}
        self._volumes: dict[str, dict[str, VolumeInfo]] = {}

    # -- fault injection -------------------------------------------------------------------
    def _simulate(self, operation: str, host: HostRef) -> None:
        """Apply the faults configured for this operation on this host, delays first."""
        matching = [
            f
            for f in self._faults()
            if f["operation"] in (operation, "*") and f.get("host_id") in (None, host.host_id)
        ]
        for fault in sorted(matching, key=lambda f: f["action"] != "delay"):
            if fault["action"] == "delay":
                time.sleep(float(fault["delay_seconds"]))
            elif fault["action"] == "fail":
                message = fault.get("message") or (
                    f"simulated failure of {operation} on host {host.name}"
                )
                if int(fault.get("error_code", 534)) == 534:
                    raise ResourceUnavailableError(message)
                raise DriverError(message)

    # -- host ------------------------------------------------------------------------------
    def host_capacity(self, host: HostRef) -> HostCapacity:
        self._simulate("host_capacity", host)
        with self._lock:
            return replace(self._capacity, vm_count=len(self._vms.get(host.host_id, {})))

    def list_vms(self, host: HostRef) -> list[VirtualMachineInfo]:
        self._simulate("list_vms", host)
        with self._lock:
            return [self._info(vm) for vm in self._vms.get(host.host_id, {}).values()]

    def find_vm(self, host: HostRef, vm_id: str) -> VirtualMachineInfo | None:
        self._simulate("find_vm", host)
        with self._lock:
            vm = self._vms.get(host.host_id, {}).get(vm_id)
            return self._info(vm) if vm else None

    # -- volumes ---------------------------------------------------------------------------
    def create_volume(self, host: HostRef, pool: StoragePoolRef, spec: VolumeSpec) -> VolumeInfo:
        self._simulate("create_volume", host)
        with self._lock:
            volumes = self._volumes.setdefault(pool.pool_id, {})
            existing = volumes.get(spec.volume_id)
            if existing is not None:
                return existing
            info = VolumeInfo(
                volume_id=spec.volume_id,
                path=f"{pool.path.rstrip('/')}/{spec.volume_id}",
                size_bytes=spec.size_bytes,
                pool_id=pool.pool_id,
            )
            volumes[spec.volume_id] = info
            return info

    def delete_volume(self, host: HostRef, pool: StoragePoolRef, volume_id: str) -> None:
        self._simulate("delete_volume", host)
        with self._lock:
            self._volumes.get(pool.pool_id, {}).pop(volume_id, None)

    def volumes_on(self, pool_id: str) -> list[VolumeInfo]:
        """What the simulator holds on a pool: how tests check that nothing leaked."""
        with self._lock:
            return list(self._volumes.get(pool_id, {}).values())

    # -- virtual machines ------------------------------------------------------------------
    def define_vm(self, host: HostRef, spec: VirtualMachineSpec) -> VirtualMachineInfo:
        self._simulate("define_vm", host)
        with self._lock:
            vms = self._vms.setdefault(host.host_id, {})
            vm = vms.get(spec.vm_id)
            if vm is None:
                vm = SimulatedVm(spec, PowerState.POWERED_OFF, host.host_id)
                vms[spec.vm_id] = vm
            return self._info(vm)

    def start_vm(self, host: HostRef, vm_id: str) -> VirtualMachineInfo:
        self._simulate("start_vm", host)
        return self._set_power(host, vm_id, PowerState.POWERED_ON)

    def stop_vm(self, host: HostRef, vm_id: str, *, forced: bool = False) -> VirtualMachineInfo:
        self._simulate("stop_vm", host)
        return self._set_power(host, vm_id, PowerState.POWERED_OFF)

    def reboot_vm(self, host: HostRef, vm_id: str) -> VirtualMachineInfo:
        self._simulate("reboot_vm", host)
        return self._set_power(host, vm_id, PowerState.POWERED_ON)

    def destroy_vm(self, host: HostRef, vm_id: str) -> None:
        self._simulate("destroy_vm", host)
        with self._lock:
            self._vms.get(host.host_id, {}).pop(vm_id, None)

    def vms_on(self, host_id: str) -> list[VirtualMachineInfo]:
        """Every VM the simulator holds on a host, without fault injection (for tests)."""
        with self._lock:
            return [self._info(vm) for vm in self._vms.get(host_id, {}).values()]

    def _set_power(self, host: HostRef, vm_id: str, state: PowerState) -> VirtualMachineInfo:
        with self._lock:
            vm = self._vms.get(host.host_id, {}).get(vm_id)
            if vm is None:
                raise DriverError(f"VM {vm_id} is not defined on host {host.name}")
            vm = replace(vm, power_state=state)
            self._vms[host.host_id][vm_id] = vm
            return self._info(vm)

    @staticmethod
    def _info(vm: SimulatedVm) -> VirtualMachineInfo:
        return VirtualMachineInfo(vm.spec.vm_id, vm.spec.name, vm.power_state, vm.host_id)
