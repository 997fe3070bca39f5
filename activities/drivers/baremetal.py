"""Bare-metal machines over IPMI with pyghmi: a host *is* the machine, and one instance is it.

Deploying an instance on a machine is what CloudStack's bare-metal plugin does: claim the
machine for the Stratus VM (`define_vm`), then at the first start set the next boot to the
network (PXE, `set_bootdev("network")`), power the machine on (or cycle it if it was on) and
wait until its installer calls back (`ProvisioningCallbacks`) or `provision_timeout` passes.
Later starts and stops are plain power actions: a graceful stop presses the ACPI button (soft
off) and pulls the plug (hard off) if the OS is still up after `shutdown_timeout`.

Which VM a machine was provisioned for is kept by the driver instance. Volumes, snapshots and
migration make no sense for a machine: they raise UnsupportedOperationError (432), and a second
instance on a claimed machine does too.

The BMC of a host is `HostRef.address` (`host[:port]`, port 623 by default); its login comes
from the worker's configuration (`BareMetalMachine`, by host id), never from a ref.

IPMI itself (sessions, cipher suite 3 against BMCs that mis-negotiate SHA-256, error
translation) is `activities/drivers/ipmi.py`'s `IpmiClient`, shared with out-of-band
management.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from activities.drivers.hypervisor import (
    DriverError,
    DriverTimeoutError,
    HostCapacity,
    HostRef,
    PowerState,
    RefusesStorageMigration,
    RefusesVolumeSnapshots,
    ResourceUnavailableError,
    SnapshotInfo,
    StoragePoolRef,
    UnsupportedOperationError,
    VirtualMachineInfo,
    VirtualMachineSpec,
    VolumeAttachment,
    VolumeInfo,
    VolumeSpec,
)
from activities.drivers.ipmi import BmcLogin, IpmiClient

T = TypeVar("T")


class ProvisioningCallbacks:
    """Where a machine's installer reports that the image is on disk and booted.

    The API's provisioning-callback endpoint calls `notify(vm_id)`; the driver `wait`s for it.
    A notification that arrives before anyone waits is kept, so the order does not matter.
    """

    def __init__(self) -> None:
        self._done: set[str] = set()
        self._changed = threading.Condition()

    def notify(self, vm_id: str) -> None:
        with self._changed:
            self._done.add(vm_id)
            self._changed.notify_all()

    def wait(self, vm_id: str, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: vm_id in self._done, timeout)

    def forget(self, vm_id: str) -> None:
        """The instance is gone: a later instance of the same id must provision again."""
        with self._changed:
            self._done.discard(vm_id)


@dataclass(frozen=True)
class BareMetalMachine:
    """A machine's BMC login and its size (IPMI does not tell how many CPUs a machine has)."""

    username: str
    password: str = field(repr=False)
    cpu_count: int = 1
    cpu_speed_mhz: int = 1000
    memory_mib: int = 1024


@dataclass
class _Instance:
    vm_id: str
    name: str
    root_volume_id: str
    provisioned: bool = False


class BareMetalDriver(RefusesStorageMigration, RefusesVolumeSnapshots):
    """A `HypervisorDriver` whose hosts are physical machines driven through their BMCs."""

    hypervisor = "BareMetal"
    volume_snapshot_refusal = (
        "a bare-metal machine has no volume snapshots: its disks are physical, with no storage "
        "API to copy them"
    )
    storage_migration_refusal = "a bare-metal machine's disks are physical and cannot move"

    def __init__(
        self,
        machines: Mapping[str, BareMetalMachine],
        callbacks: ProvisioningCallbacks,
        *,
        cipher_suite: int = 3,
        provision_timeout: float = 1800.0,
        shutdown_timeout: float = 120.0,
        power_timeout: float = 60.0,
        poll_interval: float = 1.0,
    ) -> None:
        """`machines` maps a host id to its BMC login and size.

        `cipher_suite` is 3 (propose SHA-1 only) or 17 (pyghmi's default: SHA-256, then SHA-1
        if the BMC refuses). `provision_timeout` is how long a first start waits for the
        installer's callback, `shutdown_timeout` how long the OS gets after the soft-off
        before the hard off, `power_timeout` how long a power change may take to show.
        """
        self._machines = machines
        self._callbacks = callbacks
        self._client = IpmiClient(cipher_suite=cipher_suite)
        self._provision_timeout = provision_timeout
        self._shutdown_timeout = shutdown_timeout
        self._power_timeout = power_timeout
        self._poll_interval = poll_interval
        self._instances: dict[str, _Instance] = {}
        self._lock = threading.Lock()

    # -- plumbing --------------------------------------------------------------------------
    def _ipmi(self, host: HostRef, action: str, call: Callable[[Any], T]) -> T:
        """One IPMI exchange with the host's BMC (`HostRef.address`), its failures translated."""
        machine = self._machines.get(host.host_id)
        if machine is None:
            raise ResourceUnavailableError(f"no BMC login configured for host {host.name}")
        login = BmcLogin(machine.username, machine.password)
        return self._client.exchange(host.name, host.address, login, action, call)

    def _power(self, host: HostRef) -> PowerState:
        state = self._ipmi(host, f"power state of {host.name}", lambda c: c.get_power())
        return PowerState.POWERED_ON if state["powerstate"] == "on" else PowerState.POWERED_OFF

    def _set_power(self, host: HostRef, state: str) -> None:
        self._ipmi(host, f"power {state} {host.name}", lambda c: c.set_power(state, wait=False))

    def _await_power(self, host: HostRef, wanted: PowerState, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._power(host) != wanted:
            if time.monotonic() > deadline:
                return False
            time.sleep(self._poll_interval)
        return True

    def _instance(self, host: HostRef, vm_id: str) -> _Instance | None:
        with self._lock:
            instance = self._instances.get(host.host_id)
        return instance if instance is not None and instance.vm_id == vm_id else None

    def _claimed(self, host: HostRef, vm_id: str) -> _Instance:
        instance = self._instance(host, vm_id)
        if instance is None:
            raise DriverError(f"VM {vm_id} is not deployed on machine {host.name}")
        return instance

    def _info(self, host: HostRef, instance: _Instance) -> VirtualMachineInfo:
        return VirtualMachineInfo(instance.vm_id, instance.name, self._power(host), host.host_id)

    # -- host ------------------------------------------------------------------------------
    def host_capacity(self, host: HostRef) -> HostCapacity:
        power = self._power(host)
        machine = self._machines[host.host_id]
        with self._lock:
            instance = self._instances.get(host.host_id)
        return HostCapacity(
            cpu_count=machine.cpu_count,
            cpu_speed_mhz=machine.cpu_speed_mhz,
            memory_mib=machine.memory_mib,
            vm_count=0 if instance is None else 1,
            extra={"power": str(power)},
        )

    def list_vms(self, host: HostRef) -> list[VirtualMachineInfo]:
        power = self._power(host)
        with self._lock:
            instance = self._instances.get(host.host_id)
        if instance is None:
            return []
        return [VirtualMachineInfo(instance.vm_id, instance.name, power, host.host_id)]

    def find_vm(self, host: HostRef, vm_id: str) -> VirtualMachineInfo | None:
        instance = self._instance(host, vm_id)
        return None if instance is None else self._info(host, instance)

    # -- VM lifecycle ----------------------------------------------------------------------
    def define_vm(self, host: HostRef, spec: VirtualMachineSpec) -> VirtualMachineInfo:
        power = self._power(host)  # the BMC answers: the machine is there to be claimed
        with self._lock:
            instance = self._instances.get(host.host_id)
            if instance is None:
                instance = _Instance(spec.vm_id, spec.name, spec.root_volume.volume_id)
                self._instances[host.host_id] = instance
            elif instance.vm_id != spec.vm_id:
                raise UnsupportedOperationError(
                    f"machine {host.name} is the instance {instance.vm_id}: a bare-metal host "
                    "runs one instance"
                )
        return VirtualMachineInfo(instance.vm_id, instance.name, power, host.host_id)

    def start_vm(self, host: HostRef, vm_id: str) -> VirtualMachineInfo:
        instance = self._claimed(host, vm_id)
        if not instance.provisioned and self._callbacks.wait(vm_id, 0):
            instance.provisioned = True  # the installer called back after an earlier timeout
        if instance.provisioned:
            if self._power(host) != PowerState.POWERED_ON:
                self._set_power(host, "on")
        else:
            self._provision(host, instance)
        if not self._await_power(host, PowerState.POWERED_ON, self._power_timeout):
            raise DriverTimeoutError(f"machine {host.name} did not power on in time")
        return self._info(host, instance)

    def _provision(self, host: HostRef, instance: _Instance) -> None:
        """PXE-boot the machine into its installer and wait for the installer's callback."""
        action = f"provision {instance.vm_id} on machine {host.name}"
        self._ipmi(host, action, lambda c: c.set_bootdev("network"))
        was_on = self._power(host) == PowerState.POWERED_ON
        self._set_power(host, "reset" if was_on else "on")
        if not self._callbacks.wait(instance.vm_id, self._provision_timeout):
            raise DriverTimeoutError(
                f"{action}: no callback from the installer within "
                f"{self._provision_timeout:g} s; the outcome is unknown"
            )
        instance.provisioned = True

    def stop_vm(self, host: HostRef, vm_id: str, *, forced: bool = False) -> VirtualMachineInfo:
        instance = self._claimed(host, vm_id)
        if self._power(host) == PowerState.POWERED_ON:
            stopped = False
            if not forced:
                self._set_power(host, "shutdown")
                stopped = self._await_power(host, PowerState.POWERED_OFF, self._shutdown_timeout)
            if not stopped:
                self._set_power(host, "off")
                if not self._await_power(host, PowerState.POWERED_OFF, self._power_timeout):
                    raise DriverTimeoutError(f"machine {host.name} did not power off in time")
        return self._info(host, instance)

    def reboot_vm(self, host: HostRef, vm_id: str) -> VirtualMachineInfo:
        instance = self._claimed(host, vm_id)
        if self._power(host) != PowerState.POWERED_ON:
            raise DriverError(f"VM {vm_id} is not running; it cannot be rebooted")
        self._set_power(host, "reset")
        return self._info(host, instance)

    def destroy_vm(self, host: HostRef, vm_id: str) -> None:
        instance = self._instance(host, vm_id)
        if instance is None:
            return
        if self._power(host) == PowerState.POWERED_ON:
            self._set_power(host, "off")
            if not self._await_power(host, PowerState.POWERED_OFF, self._power_timeout):
                raise DriverTimeoutError(f"machine {host.name} did not power off in time")
        with self._lock:
            if self._instances.get(host.host_id) is instance:
                del self._instances[host.host_id]
        self._callbacks.forget(vm_id)

    # -- what a machine cannot do ----------------------------------------------------------
    @staticmethod
    def _unsupported(what: str) -> UnsupportedOperationError:
        return UnsupportedOperationError(f"a bare-metal machine has no {what}")

    def create_volume(self, host: HostRef, pool: StoragePoolRef, spec: VolumeSpec) -> VolumeInfo:
        raise self._unsupported("volumes: its disks are its own")

    def delete_volume(self, host: HostRef, pool: StoragePoolRef, volume_id: str) -> None:
        raise self._unsupported("volumes: its disks are its own")

    def resize_volume(
        self, host: HostRef, pool: StoragePoolRef, volume_id: str, size_bytes: int
    ) -> VolumeInfo:
        raise self._unsupported("volume resize: its disks are its own")

    def attach_volume(
        self, host: HostRef, vm_id: str, volume: VolumeInfo, *, device_id: int
    ) -> VolumeAttachment:
        raise self._unsupported("volume hotplug")

    def detach_volume(self, host: HostRef, vm_id: str, volume_id: str) -> None:
        raise self._unsupported("volume hotplug")

    def list_volume_attachments(self, host: HostRef, vm_id: str) -> list[VolumeAttachment]:
        """Only the root disk the machine was provisioned onto."""
        instance = self._claimed(host, vm_id)
        return [VolumeAttachment(vm_id, instance.root_volume_id, 0)]

    def create_snapshot(
        self, host: HostRef, vm_id: str, snapshot_id: str, *, memory: bool
    ) -> SnapshotInfo:
        raise self._unsupported("snapshots")

    def list_snapshots(self, host: HostRef, vm_id: str) -> list[SnapshotInfo]:
        self._claimed(host, vm_id)
        return []

    def revert_snapshot(self, host: HostRef, vm_id: str, snapshot_id: str) -> VirtualMachineInfo:
        raise self._unsupported("snapshots")

    def delete_snapshot(self, host: HostRef, vm_id: str, snapshot_id: str) -> None:
        raise self._unsupported("snapshots")

    def copy_volume(
        self,
        host: HostRef,
        source_pool: StoragePoolRef,
        target_pool: StoragePoolRef,
        volume_id: str,
    ) -> VolumeInfo:
        raise self._unsupported("volume on primary storage to copy: its disks are its own")

    def migrate_vm(
        self, source_host: HostRef, target_host: HostRef, vm_id: str
    ) -> VirtualMachineInfo:
        raise self._unsupported("live migration: the instance is the machine")

    def close(self) -> None:
        """Log out of the BMCs (worker shutdown, tests); pyghmi would keep the sessions alive."""
        self._client.close()
