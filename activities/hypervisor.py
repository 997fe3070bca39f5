"""Hypervisor activities: the side effects, and nothing else.

They run on the task queue of the cluster's hypervisor worker (the agent model), which holds
the drivers and their credentials; they append no events. Each is idempotent by Stratus id, and
a call whose outcome is unknown asks the backend for the truth before anyone retries.
"""

from __future__ import annotations

from temporalio import activity

from activities.deployment_models import (
    LaunchedVm,
    VmLaunch,
    VmRemoval,
    VolumeOrder,
    VolumeRemoval,
)
from activities.drivers.hypervisor import (
    DriverTimeoutError,
    HypervisorDriver,
    PowerState,
    VirtualMachineInfo,
    VolumeInfo,
)
from activities.errors import reports_cloud_errors
from activities.heartbeat import heartbeating
from domain.errors import UnsupportedAction


class DriverRegistry:
    """The drivers a worker holds, by hypervisor type. Built by the composition root."""

    def __init__(self, drivers: dict[str, HypervisorDriver]) -> None:
        self._drivers = dict(drivers)

    def for_hypervisor(self, hypervisor: str) -> HypervisorDriver:
        try:
            return self._drivers[hypervisor]
        except KeyError:
            raise UnsupportedAction(
                f"this worker has no driver for hypervisor {hypervisor}"
            ) from None


class HypervisorActivities:
    def __init__(self, drivers: DriverRegistry) -> None:
        self.drivers = drivers

    @activity.defn(name="hypervisor.create_volume")
    @reports_cloud_errors
    def create_volume(self, order: VolumeOrder) -> VolumeInfo:
        driver = self.drivers.for_hypervisor(order.host.hypervisor)
        with heartbeating(f"creating volume {order.spec.volume_id}"):
            return driver.create_volume(order.host, order.pool, order.spec)

    @activity.defn(name="hypervisor.delete_volume")
    @reports_cloud_errors
    def delete_volume(self, removal: VolumeRemoval) -> None:
        driver = self.drivers.for_hypervisor(removal.host.hypervisor)
        with heartbeating(f"deleting volume {removal.volume_id}"):
            driver.delete_volume(removal.host, removal.pool, removal.volume_id)

    @activity.defn(name="hypervisor.launch_vm")
    @reports_cloud_errors
    def launch_vm(self, launch: VmLaunch) -> LaunchedVm:
        """Define and power on; after a timeout, a VM found running counts as launched."""
        driver = self.drivers.for_hypervisor(launch.host.hypervisor)
        try:
            with heartbeating(f"launching VM {launch.spec.vm_id}"):
                driver.define_vm(launch.host, launch.spec)
                return launched(driver.start_vm(launch.host, launch.spec.vm_id))
        except DriverTimeoutError:
            found = driver.find_vm(launch.host, launch.spec.vm_id)
            if found is not None and found.power_state is PowerState.POWERED_ON:
                return launched(found)
            raise

    @activity.defn(name="hypervisor.destroy_vm")
    @reports_cloud_errors
    def destroy_vm(self, removal: VmRemoval) -> None:
        driver = self.drivers.for_hypervisor(removal.host.hypervisor)
        with heartbeating(f"destroying VM {removal.vm_id}"):
            driver.destroy_vm(removal.host, removal.vm_id)


def launched(info: VirtualMachineInfo) -> LaunchedVm:
    return LaunchedVm(vm_id=info.vm_id, power_state=info.power_state.value, host_id=info.host_id)
